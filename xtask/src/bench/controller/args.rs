//! The bench's command line, and the load it asks the bench client for.

#[derive(clap::Args)]
pub struct Args {
    /// Services created for the latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Services present for the full-resync measurement.
    #[arg(long, default_value_t = 10_000)]
    pub resync_services: usize,
    /// Services created for MetalLB's run (default: --services). With fewer, the "all IPs"
    /// ratio is computed per Service and says so.
    #[arg(long)]
    pub metallb_services: Option<usize>,
    /// Skip MetalLB v0.15.2's controller (measured by default; `go install`, ~2 min cold).
    #[arg(long)]
    pub no_metallb: bool,
    /// Create requests the bench client keeps in flight (same for both controllers).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Who picks each Service's ClusterIP (same for both controllers; neither reads it).
    #[arg(long, value_enum, default_value_t = ClusterIp::Static)]
    pub cluster_ip: ClusterIp,
    /// Keep etcd's data under target/ (on this VM's virtual disk, shared with everything else
    /// that writes to it) instead of in /dev/shm. By default both controllers' etcd runs in
    /// memory: a production etcd has a dedicated low-latency disk, and the shared disk's fsync
    /// time is the host's, not a controller's; etcd's CPU work is measured either way.
    #[arg(long)]
    pub etcd_on_disk: bool,
    /// Services created at a steady `--steady-rate` before the burst, for the latency a
    /// controller adds when the API server is not saturated (0 skips that phase).
    #[arg(long, default_value_t = 1000)]
    pub steady_services: usize,
    /// Creations per second in the steady phase, open loop: each create is sent on schedule,
    /// whether or not earlier ones have their IP yet (as a stream of deployments would). The
    /// default keeps this 2-vCPU machine near 60% busy: at 100/s the plane, controller and
    /// client kept it 82–98% busy (the API server's cost per create grows as creates spread
    /// out), and p99 there measures queueing on saturated CPUs, not a controller.
    #[arg(long, default_value_t = 50.0)]
    pub steady_rate: f64,
    /// Herald's bursts, each on an empty cluster; its "all N IPs" is their median. A burst
    /// lasts 2.5–5.5 s and is bound by the API server's create throughput, which moved up to
    /// 1.7× between consecutive bursts on one plane here; MetalLB's single burst is a ~52 s
    /// average over sequential per-Service work (51.7–53.6 s in every run of sessions 3–7).
    #[arg(long, default_value_t = 3)]
    pub bursts: usize,
}

/// How the bench's Services get their ClusterIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterIp {
    /// The bench names a distinct address of the Service CIDR per Service. kube-apiserver then
    /// records it without its dynamic allocator, which holds one lock across the synchronous
    /// IPAddress create of every allocation (pkg/registry/core/service/ipallocator,
    /// MetaAllocator.AllocateNextService, v1.37.2) and so admits one Service at a time.
    Static,
    /// kube-apiserver allocates: Service creation is serialized by that lock.
    Dynamic,
}

/// How the bench client generates load.
#[derive(Clone, Copy, Debug)]
pub(super) struct Load {
    pub(super) concurrency: usize,
    pub(super) cluster_ip: ClusterIp,
    /// Open loop at this many creates per second instead of `concurrency` in flight.
    pub(super) rate: Option<f64>,
}

impl Load {
    /// The burst: `--concurrency` creates in flight, as fast as the API server takes them.
    pub(super) fn of(args: &Args) -> Load {
        Load {
            concurrency: args.concurrency,
            cluster_ip: args.cluster_ip,
            rate: None,
        }
    }

    pub(super) fn pace(&self) -> String {
        match self.rate {
            Some(rate) => format!("open loop at {rate} creates/s"),
            None => format!("{} in flight", self.concurrency),
        }
    }

    /// The steady phase: `--steady-rate` creates per second on schedule.
    pub(super) fn steady(args: &Args) -> Load {
        Load {
            rate: Some(args.steady_rate),
            ..Load::of(args)
        }
    }
}

/// The ClusterIP the bench names for Service number `i` (static mode): inside the plane's
/// IPv6 Service CIDR fd00:96::/108, clear of the addresses near its start.
pub(super) fn static_cluster_ip(i: usize) -> String {
    let offset = 0x1_0000 + i;
    format!("fd00:96::{:x}:{:x}", offset >> 16, offset & 0xffff)
}

/// Index of the first steady-phase Service (for its static ClusterIP): after the burst's and
/// the resync's.
pub(super) const STEADY_FIRST: usize = 0xd_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_cluster_ips_are_distinct_and_inside_the_service_cidr() {
        assert_eq!(static_cluster_ip(0), "fd00:96::1:0");
        assert_eq!(static_cluster_ip(10_000), "fd00:96::1:2710");
        let cidr_end: std::net::Ipv6Addr = "fd00:96::f:ffff".parse().unwrap();
        let reserved_end: std::net::Ipv6Addr = "fd00:96::ffff".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in (0..0xe_0000).step_by(997).chain([0xe_0000]) {
            let ip: std::net::Ipv6Addr = static_cluster_ip(i).parse().unwrap();
            assert!(ip <= cidr_end && ip > reserved_end, "{ip}");
            assert!(seen.insert(ip), "{ip} twice");
        }
    }
}
