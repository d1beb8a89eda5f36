//! Label selectors, parsed once and matched many times.
//!
//! `Selector::parse` (from a `metav1.LabelSelector`) lives beside the validation rules in
//! `config`; this file holds the value type and its matching semantics.

use std::collections::BTreeMap;

/// Operator of a `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry; `values` sorted, deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A validated label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Kubernetes semantics: all matchLabels and all expressions must hold.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A list of selectors matches when any member matches; an empty list is decided by the caller
/// (MetalLB treats it as "all" for node/service selectors).
/// An object's labels, as selectors see them.
pub type Labels = BTreeMap<String, String>;

pub fn any_matches(selectors: &[Selector], labels: &BTreeMap<String, String>) -> bool {
    selectors.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        }
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = labels(&[("zone", "a"), ("gpu", "")]);
        assert!(req("zone", Operator::In, &["a", "b"]).matches(&l));
        assert!(!req("zone", Operator::In, &["b"]).matches(&l));
        assert!(!req("missing", Operator::In, &["a"]).matches(&l));
        assert!(req("zone", Operator::NotIn, &["b"]).matches(&l));
        assert!(req("missing", Operator::NotIn, &["b"]).matches(&l));
        assert!(!req("zone", Operator::NotIn, &["a"]).matches(&l));
        assert!(req("gpu", Operator::Exists, &[]).matches(&l));
        assert!(!req("gpu", Operator::DoesNotExist, &[]).matches(&l));
        assert!(req("missing", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn empty_selector_matches_all_and_labels_must_all_hold() {
        assert!(Selector::everything().matches(&labels(&[])));
        let s = Selector {
            match_labels: labels(&[("a", "1"), ("b", "2")]),
            match_expressions: vec![],
        };
        assert!(s.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!s.matches(&labels(&[("a", "1")])));
        assert!(!any_matches(&[], &labels(&[])));
    }
}
