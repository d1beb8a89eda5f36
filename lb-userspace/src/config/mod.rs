//! Configuration: from a snapshot of `metallb.io` objects (plus Namespaces and Nodes) to a
//! validated [`Config`], or every error found, each naming kind, object, field and rule.

pub mod load;
pub mod model;
pub mod selector;

pub mod address;
pub mod community;
pub mod convert;
pub mod duration;

mod error;
mod mode_rules;
mod rules;
mod selector_parse;
mod snapshot;

pub use error::ConfigError;
pub use model::*;
pub use selector::Selector;
pub use snapshot::{BGP_EXTRAS, BgpMode, Snapshot, bgp_extras_of};

pub use rules::build;
