//! What every rule reads objects with: one kind in name order, label selectors and the names
//! they select, and duplicate entries in a list.

use std::collections::BTreeSet;

use crate::config::error::{ConfigError, Errors};
use crate::config::selector::{Labels, Selector};
use crate::config::selector_parse::parse_list;

/// The objects of one kind in name order, without nameless objects and later duplicates
/// (both reported).
pub(super) fn by_name<'a, K: kube::Resource<DynamicType = ()>>(
    objects: &'a [K],
    errors: &mut Vec<ConfigError>,
) -> Vec<(&'a str, &'a K)> {
    let kind = K::kind(&());
    let mut sorted: Vec<(&str, &K)> = objects
        .iter()
        .map(|o| (o.meta().name.as_deref().unwrap_or(""), o))
        .collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut kept: Vec<(&str, &K)> = Vec::with_capacity(sorted.len());
    for (name, object) in sorted {
        if name.is_empty() {
            errors.push(ConfigError::new(&kind, "", "metadata.name", "missing name"));
        } else if kept.last().is_some_and(|(last, _)| *last == name) {
            errors.push(ConfigError::new(
                &kind,
                name,
                "metadata.name",
                format!("duplicate definition of {kind} {name:?}"),
            ));
        } else {
            kept.push((name, object));
        }
    }
    kept
}

/// Names of the items matched by any selector; every item when there are no selectors.
pub(super) fn select_names(items: &[(String, Labels)], selectors: &[Selector]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|(_, labels)| selectors.is_empty() || selectors.iter().any(|s| s.matches(labels)))
        .map(|(name, _)| name.clone())
        .collect()
}

pub(super) fn selectors(
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    field: &str,
    errs: &mut Errors<'_>,
) -> Vec<Selector> {
    let (parsed, problems) = parse_list(list, field);
    for (path, message) in problems {
        errs.push(path, message);
    }
    parsed
}

pub(super) fn duplicates(list: &[String], field: &str, what: &str, errs: &mut Errors<'_>) {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            errs.push(
                format!("{field}[{i}]"),
                format!("duplicate definition of {what} {item:?}"),
            );
        }
    }
}
