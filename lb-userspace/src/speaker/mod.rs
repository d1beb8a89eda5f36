//! `herald speaker` (issue: speaker for layer 2). Not implemented yet.
