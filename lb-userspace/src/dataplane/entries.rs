//! Entries of the announced-address maps: writing an announcement into every CPU's copy,
//! removing one, and summing the per-CPU counters. Pure rules are unit-tested here.

use aya::maps::{MapData, MapError, PerCpuHashMap, PerCpuValues};
use lb_common::maps::{ANNOUNCE_FLAGS_NONE, Announcement};

use super::error::map_err;
use super::keys::Mac;
use super::{DataplaneError, Result};

/// Writes `mac` into every CPU's copy of the entry for `key`. An entry that already carries
/// `mac` is left alone (its counters keep counting); a new one starts at zero; a MAC change keeps
/// the counters read just before (increments in that instant are lost: counters, not state).
/// Returns true when the map changed.
pub(super) fn upsert_announcement<K: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, Announcement>,
    key: &K,
    mac: Mac,
    name: &'static str,
) -> Result<bool> {
    let before = match map.get(key, 0) {
        Ok(values) => Some(values),
        Err(MapError::KeyNotFound) => None,
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(map_err(name)(e)),
    };
    let (values, changed) = announcement_values(before.as_ref().map(|v| &v[..]), mac, cpu_count()?);
    if changed {
        let values = PerCpuValues::try_from(values).map_err(|source| DataplaneError::Io {
            op: "per-CPU map values",
            source,
        })?;
        map.insert(key, values, 0).map_err(map_err(name))?;
    }
    Ok(changed)
}

/// The per-CPU values to write for announcing with `mac`, given the current ones (if any), and
/// whether anything changes. Pure, so the rule is unit-tested.
fn announcement_values(
    current: Option<&[Announcement]>,
    mac: Mac,
    cpus: usize,
) -> (Vec<Announcement>, bool) {
    let wanted = |old: Announcement| Announcement {
        mac: mac.0,
        flags: ANNOUNCE_FLAGS_NONE,
        ..old
    };
    match current {
        Some(values) if values.len() == cpus => {
            let changed = values.iter().any(|v| *v != wanted(*v));
            (values.iter().map(|v| wanted(*v)).collect(), changed)
        }
        _ => (vec![wanted(Announcement::default()); cpus], true),
    }
}

fn cpu_count() -> Result<usize> {
    aya::util::nr_cpus()
        .map(|n| n.get() as usize)
        .map_err(|(_, source)| DataplaneError::Io {
            op: "counting CPUs",
            source,
        })
}

/// True when removed, false when absent.
pub(super) fn remove_entry(
    result: std::result::Result<(), MapError>,
    name: &'static str,
) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(map_err(name)(e)),
    }
}

/// One entry for all CPUs: the MAC and flags (equal on every CPU; CPU 0's), counters summed.
pub(super) fn sum_over_cpus(values: &[Announcement]) -> Announcement {
    let first = values.first().copied().unwrap_or_default();
    values.iter().fold(
        Announcement {
            requests: 0,
            replies: 0,
            ..first
        },
        |acc, v| Announcement {
            requests: acc.requests.wrapping_add(v.requests),
            replies: acc.replies.wrapping_add(v.replies),
            ..acc
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_values_table() {
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let other = Mac([2, 0, 0, 0, 0, 2]);
        let entry = |mac: Mac, requests, replies| Announcement {
            mac: mac.0,
            flags: ANNOUNCE_FLAGS_NONE,
            requests,
            replies,
        };
        // New: every CPU gets the MAC and zero counters.
        assert_eq!(
            announcement_values(None, mac, 2),
            (vec![entry(mac, 0, 0); 2], true)
        );
        // Same MAC: nothing to write, counters untouched.
        let current = [entry(mac, 3, 2), entry(mac, 1, 1)];
        assert_eq!(
            announcement_values(Some(&current), mac, 2),
            (current.to_vec(), false)
        );
        // New MAC: written on every CPU, counters kept.
        assert_eq!(
            announcement_values(Some(&[entry(other, 3, 2), entry(other, 1, 1)]), mac, 2),
            (vec![entry(mac, 3, 2), entry(mac, 1, 1)], true)
        );
        // A CPU count that does not match the map's (cannot happen; rewrite rather than guess).
        assert_eq!(
            announcement_values(Some(&[entry(mac, 3, 2)]), mac, 2),
            (vec![entry(mac, 0, 0); 2], true)
        );
    }

    #[test]
    fn sums_counters_over_cpus() {
        let mac = [2, 0, 0, 0, 0, 1];
        let values = [
            Announcement {
                mac,
                flags: 0,
                requests: 3,
                replies: 2,
            },
            Announcement {
                mac,
                flags: 0,
                requests: 4,
                replies: 1,
            },
        ];
        assert_eq!(
            sum_over_cpus(&values),
            Announcement {
                mac,
                flags: 0,
                requests: 7,
                replies: 3
            }
        );
        assert_eq!(sum_over_cpus(&[]), Announcement::default());
    }
}
