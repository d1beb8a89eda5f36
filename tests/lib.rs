//! Helpers shared by the end-to-end tests in `tests/e2e/` (namespaces, processes).
