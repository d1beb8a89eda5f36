//! `herald controller` (issue: controller on a real API server). Not implemented yet.
