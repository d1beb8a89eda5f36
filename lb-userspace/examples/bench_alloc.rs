//! Allocator benchmark (run by `cargo xtask bench alloc`): 1k, 10k and 100k Services into an
//! IPv4 /15 and an IPv6 /64 pool. Prints allocations/s, peak heap (counting allocator), maxrss
//! and the growth from 1k to 100k. Each run checks that the last Service got the address the
//! written-order rule predicts, so a fast but wrong allocator cannot pass.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use herald::allocator::{Allocator, Family, IpFamilyPolicy, ServiceFamily, ServiceInfo, Status};
use herald::config::Pool;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn service(i: usize, family: Family) -> ServiceInfo {
    ServiceInfo {
        namespace: "bench".into(),
        name: format!("svc-{i}"),
        labels: BTreeMap::new(),
        is_load_balancer: true,
        lb_class: None,
        has_cluster_ip: true,
        cluster_ip_count: 1,
        family: Ok(ServiceFamily::Single(family)),
        ip_family_policy: IpFamilyPolicy::SingleStack,
        primary_family: family,
        requested_ips: Ok(vec![]),
        pool_annotation: None,
        sharing_key: String::new(),
        has_sharing_annotation: false,
        backend_key: String::new(),
        traffic_policy_local: false,
        ports: vec![herald::allocator::Port {
            protocol: "TCP".into(),
            port: 80,
        }],
        ingress_ips: Ok(vec![]),
        allocated_from_pool: None,
        deprecated_annotations: vec![],
    }
}

struct Run {
    seconds: f64,
    heap_peak: usize,
}

fn run(cidr: &str, family: Family, count: usize) -> Result<Run, String> {
    let net = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
    let pool = Pool {
        name: "bench".into(),
        labels: BTreeMap::new(),
        ranges: vec![vec![net]],
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    };
    let services: Vec<ServiceInfo> = (0..count).map(|i| service(i, family)).collect();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let mut allocator = Allocator::new(&[("bench".to_string(), pool)].into(), None);
    let mut last = None;
    for svc in &services {
        match allocator.reconcile(svc).status {
            Status::Assigned { ips, .. } => last = ips.first().copied(),
            other => return Err(format!("{}: {other:?}", svc.name)),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let heap_peak = PEAK.load(Ordering::Relaxed) - base;
    let expected = match net.network() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + count as u32 - 1).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + count as u128 - 1).into()),
    };
    if last != Some(expected) {
        return Err(format!("last address {last:?}, expected {expected}"));
    }
    drop(allocator);
    Ok(Run { seconds, heap_peak })
}

fn maxrss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) } == 0 {
        usage.ru_maxrss
    } else {
        -1
    }
}

fn main() -> Result<(), String> {
    let sizes = [1_000usize, 10_000, 100_000];
    println!(
        "{:<22} {:>8} {:>10} {:>14} {:>12}",
        "pool", "services", "seconds", "allocations/s", "peak heap"
    );
    for (cidr, family) in [("10.0.0.0/15", Family::V4), ("2001:db8::/64", Family::V6)] {
        let mut runs = Vec::new();
        for &count in &sizes {
            let r = run(cidr, family, count)?;
            println!(
                "{:<22} {:>8} {:>10.4} {:>14.0} {:>9.1} MiB",
                cidr,
                count,
                r.seconds,
                count as f64 / r.seconds,
                r.heap_peak as f64 / (1024.0 * 1024.0)
            );
            runs.push(r);
        }
        let (small, big) = (&runs[0], &runs[runs.len() - 1]);
        let factor = (sizes[sizes.len() - 1] / sizes[0]) as f64;
        println!(
            "{:<22} growth 1k->100k: time x{:.1}, per-allocation cost x{:.2}, heap x{:.1} (services x{factor:.0})",
            cidr,
            big.seconds / small.seconds,
            (big.seconds / small.seconds) / factor,
            big.heap_peak as f64 / small.heap_peak.max(1) as f64,
        );
    }
    println!("maxrss {} KiB", maxrss_kib());
    Ok(())
}
