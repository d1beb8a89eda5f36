//! The BFDProfile and Community rules.

use std::collections::BTreeMap;

use super::objects::by_name;
use crate::config::community;
use crate::config::error::{ConfigError, Errors};
use crate::config::model::{BfdProfile, Community};
use crate::config::snapshot::Snapshot;

pub(super) fn bfd_profiles(
    snapshot: &Snapshot,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, BfdProfile> {
    let mut profiles = BTreeMap::new();
    let objects = by_name(&snapshot.bfd_profiles, errors);
    for (name, object) in objects {
        let spec = &object.spec;
        let mut errs = Errors {
            kind: "BFDProfile",
            name,
            list: errors,
        };
        let mut ranged = |field: &str, value: Option<u32>, min: u32, max: u32| {
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                errs.push(
                    format!("spec.{field}"),
                    format!("invalid value {v}, must be in {min}-{max} range"),
                );
            }
            value
        };
        let profile = BfdProfile {
            name: name.to_string(),
            receive_interval: ranged("receiveInterval", spec.receive_interval, 10, 60000),
            transmit_interval: ranged("transmitInterval", spec.transmit_interval, 10, 60000),
            echo_interval: ranged("echoInterval", spec.echo_interval, 10, 60000),
            detect_multiplier: ranged("detectMultiplier", spec.detect_multiplier, 2, 255),
            minimum_ttl: ranged("minimumTtl", spec.minimum_ttl, 1, 254),
            echo_mode: spec.echo_mode.unwrap_or(false),
            passive_mode: spec.passive_mode.unwrap_or(false),
        };
        profiles.insert(name.to_string(), profile);
    }
    profiles
}

pub(super) fn community_aliases(
    snapshot: &Snapshot,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Community> {
    let mut aliases: BTreeMap<String, (Community, String)> = BTreeMap::new();
    let objects = by_name(&snapshot.communities, errors);
    for (name, object) in objects {
        let mut errs = Errors {
            kind: "Community",
            name,
            list: errors,
        };
        for (i, alias) in object.spec.communities.iter().enumerate() {
            let value = match community::parse(&alias.value) {
                Ok(v) => v,
                Err(e) => {
                    errs.push(
                        format!("spec.communities[{i}].value"),
                        e.message().to_string(),
                    );
                    continue;
                }
            };
            if let Some((_, owner)) = aliases.get(&alias.name) {
                let where_ = if owner == name {
                    "in this object".to_string()
                } else {
                    format!("in Community {owner:?}")
                };
                errs.push(
                    format!("spec.communities[{i}].name"),
                    format!(
                        "duplicate definition of community {:?} (already defined {where_})",
                        alias.name
                    ),
                );
                continue;
            }
            aliases.insert(alias.name.clone(), (value, name.to_string()));
        }
    }
    aliases
        .into_iter()
        .map(|(alias, (value, _))| (alias, value))
        .collect()
}
