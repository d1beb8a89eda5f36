//! BGP announcement: not implemented. Empty on purpose: nothing here is claimed to work yet.
