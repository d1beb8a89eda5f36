//! BGP announcement (later issue). Empty on purpose: nothing here is claimed to work yet.
