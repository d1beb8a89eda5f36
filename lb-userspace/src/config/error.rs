//! Configuration errors: each names the object's kind and name, the field and the rule broken.

use std::fmt;

/// One broken rule in one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub struct ConfigError {
    /// Kind of the object, e.g. `IPAddressPool`.
    pub kind: String,
    /// `metadata.name` of the object.
    pub name: String,
    /// Path of the offending field, e.g. `spec.addresses[1]`; empty for the whole object.
    pub field: String,
    /// The rule, said for a human.
    pub message: String,
    /// MetalLB calls these transient: a reference (BFD profile, Secret, community alias) that
    /// may appear later; the speaker keeps its previous configuration meanwhile.
    pub transient: bool,
}

impl ConfigError {
    pub fn new(
        kind: &str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.to_string(),
            name: name.to_string(),
            field: field.into(),
            message: message.into(),
            transient: false,
        }
    }

    /// The same error, marked as a missing reference that may still appear.
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\": ", self.kind, self.name)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects errors for one object so rule code stays short.
pub(crate) struct Errors<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    pub list: &'a mut Vec<ConfigError>,
}

impl Errors<'_> {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list
            .push(ConfigError::new(self.kind, self.name, field, message));
    }

    pub fn push_transient(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list
            .push(ConfigError::new(self.kind, self.name, field, message).transient());
    }
}
