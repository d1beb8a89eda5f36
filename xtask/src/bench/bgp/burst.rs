//! One burst: Services created at once until every prefix is in the router's FIB via every
//! node, the UPDATEs the router received meanwhile, the speakers' CPU time and resident memory;
//! then one delete of them all until every prefix is withdrawn.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::report::Burst;
use super::routes::{Change, Monitor, frr_json, wait_table};
use super::workload::{self, Creator, Workload};
use crate::bench::dataplane::cpu;
use crate::lab::{self, NODES, Speakers};

/// Creates `workloads` (their EndpointSlices first, untimed), waits until each address is
/// routed via exactly `hops`, then deletes every Service of the bench's namespace in one request
/// and waits until each address is gone.
pub fn run(
    speakers: Speakers,
    creator: &Creator,
    workloads: &[Workload],
    hops: &BTreeSet<IpAddr>,
    concurrency: usize,
    monitor: &mut Monitor,
) -> Result<Burst> {
    let prefixes: BTreeSet<String> = workloads.iter().map(|w| w.ip.to_string()).collect();
    creator.slices(workloads, concurrency)?;
    let updates_before = updates_received()?;
    let cpu_before = cpu_ticks(speakers);
    monitor.drain();
    let start = Instant::now();
    let created = creator.services(workloads, concurrency)?;
    let changes = wait_table(monitor, "every burst prefix via every node", |t| {
        prefixes.iter().all(|p| t.get(p) == Some(hops))
    })?;
    let first_hop = when_all(&changes, &prefixes, |h| !h.is_empty()).unwrap_or(start);
    let all_hops = when_all(&changes, &prefixes, |h| h == hops).unwrap_or(start);
    std::thread::sleep(Duration::from_secs(2));
    let cpu_s =
        (cpu_ticks(speakers).saturating_sub(cpu_before)) as f64 / cpu::ticks_per_second() as f64;
    let updates = updates_received()?.saturating_sub(updates_before);
    let rss_mib: Vec<f64> = speaker_pids(speakers).into_iter().map(rss_mib).collect();
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1000.0;
    println!(
        "   burst: {} Services, {} prefixes: created in {:.0} ms; every prefix in the router's FIB after {:.0} ms, via every node after {:.0} ms; {updates} UPDATEs received by the router; speakers' CPU {cpu_s:.2} s; RSS {rss_mib:.1?} MiB",
        workloads.len(),
        prefixes.len(),
        ms(created),
        ms(first_hop),
        ms(all_hops)
    );
    let polled = changes.iter().filter(|c| c.polled).count();

    // One request deletes them all (the probe too, when there is one).
    monitor.drain();
    let start_delete = Instant::now();
    lab::kubectl(&[
        "-n",
        workload::NAMESPACE,
        "delete",
        "services",
        "--all",
        "--wait=false",
    ])?;
    let changes = wait_table(monitor, "every burst prefix withdrawn", |t| {
        prefixes.iter().all(|p| !t.contains_key(p))
    })?;
    let withdrawn = changes.last().map_or(start_delete, |c| c.at);
    let withdrawn_ms = withdrawn
        .saturating_duration_since(start_delete)
        .as_secs_f64()
        * 1000.0;
    println!("   withdraw: every prefix gone {withdrawn_ms:.0} ms after the delete");
    Ok(Burst {
        prefixes: prefixes.len(),
        created_ms: ms(created),
        first_hop_ms: ms(first_hop),
        all_hops_ms: ms(all_hops),
        withdrawn_ms,
        updates,
        polled,
        cpu_s,
        rss_mib,
    })
}

/// The moment every prefix in `prefixes` first satisfied `ok` together, replaying `changes`.
fn when_all(
    changes: &[Change],
    prefixes: &BTreeSet<String>,
    ok: impl Fn(&BTreeSet<IpAddr>) -> bool,
) -> Option<Instant> {
    let mut good: HashSet<&str> = HashSet::new();
    for change in changes {
        if !prefixes.contains(&change.prefix) {
            continue;
        }
        if ok(&change.next_hops) {
            good.insert(&change.prefix);
        } else {
            good.remove(change.prefix.as_str());
        }
        if good.len() == prefixes.len() {
            return Some(change.at);
        }
    }
    None
}

/// UPDATE messages FRR received from all neighbors so far.
fn updates_received() -> Result<u64> {
    let json = frr_json("show bgp neighbors json")?;
    Ok(json.as_object().map_or(0, |peers| {
        peers
            .values()
            .filter_map(|p| p["messageStats"]["updatesRecv"].as_u64())
            .sum()
    }))
}

fn speaker_pids(speakers: Speakers) -> Vec<i32> {
    NODES.iter().filter_map(|n| speakers.pid(n)).collect()
}

fn cpu_ticks(speakers: Speakers) -> u64 {
    speaker_pids(speakers)
        .into_iter()
        .filter_map(|pid| cpu::process_ticks(u32::try_from(pid).ok()?))
        .sum()
}

fn rss_mib(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ms: u64, prefix: &str, hops: &[&str], base: Instant) -> Change {
        Change {
            at: base + Duration::from_millis(ms),
            prefix: prefix.into(),
            next_hops: hops.iter().map(|h| h.parse().unwrap()).collect(),
            polled: false,
        }
    }

    #[test]
    fn when_all_replays_changes_until_every_prefix_holds_together() {
        let base = Instant::now();
        let prefixes: BTreeSet<String> = ["198.51.100.1", "198.51.100.2"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        let changes = [
            change(10, "198.51.100.1", &["203.0.113.11"], base),
            change(20, "198.51.100.9", &["203.0.113.11"], base),
            change(30, "198.51.100.1", &[], base),
            change(40, "198.51.100.2", &["203.0.113.11"], base),
            change(50, "198.51.100.1", &["203.0.113.12"], base),
        ];
        let any = when_all(&changes, &prefixes, |h| !h.is_empty());
        assert_eq!(any, Some(base + Duration::from_millis(50)));
        let two = when_all(&changes, &prefixes, |h| h.len() == 2);
        assert_eq!(two, None);
    }
}
