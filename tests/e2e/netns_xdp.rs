//! Namespace tests (in progress).
