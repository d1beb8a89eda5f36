//! Controller tests against the real API server (in progress).
