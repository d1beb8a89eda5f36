//! BPF_PROG_TEST_RUN tests (in progress).
