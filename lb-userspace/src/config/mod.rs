//! Configuration: from a snapshot of `metallb.io` objects (plus Namespaces and Nodes) to a
//! validated [`Config`], or every error found, each naming kind, object, field and rule.

pub mod model;
pub mod selector;

pub use model::*;
pub use selector::Selector;
