//! Real BGP routers in network namespaces: BIRD 2, FRR (zebra + bgpd) and GoBGP, each started
//! from a [`RouterConfig`] and read back as parsed [`Route`]s, so a test can check exactly what a
//! router learned (include with `#[path = "support/routers/mod.rs"] mod routers;`).
//!
//! Each daemon runs in the foreground as a child of the test (`ip netns exec <ns> ...`), its
//! output in a log file in the router's temporary directory. [`Router`]'s `Drop` stops the
//! daemons (SIGTERM, then SIGKILL) and removes that directory, so a failing test leaves nothing
//! behind; when the drop happens during a panic it first prints each daemon's configuration and
//! the end of its log to stderr, which the test harness shows with the failure.
//!
//! What is read is what the router learned: every path it holds for a prefix, whichever it
//! selected. [`Route::next_hops`] is the union of the paths' BGP next hops (the NEXT_HOP
//! attribute, or the global address of MP_REACH's), so ECMP from three speakers shows three;
//! the other attributes come from the router's best path.

#![allow(dead_code)]

mod bird;
mod frr;
mod gobgp;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_tests::{KillOnDrop, Netns, veth_between};
use ipnet::IpNet;

#[allow(
    unused_imports,
    reason = "the parsers serve the harness's own tests, not every file that includes it"
)]
pub use self::{
    bird::parse_routes as parse_bird_routes, frr::parse_routes as parse_frr_routes,
    gobgp::parse_routes as parse_gobgp_routes,
};

/// Which implementation plays the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    /// BIRD 2 (`bird`, read with `birdc`).
    Bird,
    /// FRR: `zebra` and `bgpd` (read with `vtysh`); zebra installs the routes (ECMP included)
    /// in the namespace's kernel table.
    Frr,
    /// GoBGP (`gobgpd`, read with the `gobgp` CLI over its gRPC API on the namespace's loopback).
    Gobgp,
}

/// An address family of a routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// A BGP neighbor of the router (the speaker under test, as the router sees it).
///
/// IPv4 unicast is active for an IPv4 neighbor address; IPv6 unicast when `ipv6` is set (over
/// an IPv4 session: MP-BGP) or the neighbor address is IPv6.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// TCP MD5 (RFC 2385) key.
    pub password: Option<String>,
    /// The router's configured hold time in seconds (keepalive a third of it); `None` keeps the
    /// router's default (90 s for BIRD and GoBGP, 180 s for FRR).
    pub hold_time: Option<u16>,
    /// The router waits for the neighbor to connect (the speaker connects).
    pub passive: bool,
    /// eBGP multihop (TTL 255); without it the neighbor must be on a directly connected network.
    pub multihop: bool,
    /// Activates IPv6 unicast for this neighbor.
    pub ipv6: bool,
    /// A BFD session with this neighbor (FRR: bfdd; BIRD: its `bfd` protocol).
    pub bfd: Option<BfdTimers>,
    /// Graceful restart helper for this neighbor (BIRD: `graceful restart on`; FRR is a helper
    /// by default).
    pub graceful_restart: bool,
}

/// One BFD session as a router reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdPeer {
    pub peer: IpAddr,
    pub up: bool,
    /// The interval the router sends at toward the peer, ms (negotiated).
    pub transmit_ms: u32,
    /// FRR: the peer's advertised intervals and multiplier, as received.
    pub remote_receive_ms: Option<u32>,
    pub remote_transmit_ms: Option<u32>,
    pub remote_detect_mult: Option<u32>,
    /// The detection time the router applies to the peer, ms.
    pub detect_ms: Option<u32>,
    /// FRR: a multihop session (RFC 5883).
    pub multihop: Option<bool>,
}

/// A router's BFD settings for one neighbor, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdTimers {
    pub receive_ms: u32,
    pub transmit_ms: u32,
    pub multiplier: u8,
}

impl Neighbor {
    /// A passive, single-hop neighbor without a password, IPv6 unicast active only for an IPv6
    /// address.
    pub fn new(address: IpAddr, asn: u32) -> Neighbor {
        Neighbor {
            address,
            asn,
            password: None,
            hold_time: None,
            passive: true,
            multihop: false,
            ipv6: address.is_ipv6(),
            bfd: None,
            graceful_restart: false,
        }
    }

    fn ipv4_active(&self) -> bool {
        self.address.is_ipv4()
    }

    fn ipv6_active(&self) -> bool {
        self.ipv6 || self.address.is_ipv6()
    }

    fn keepalive(&self) -> Option<u16> {
        self.hold_time.map(|h| (h / 3).max(1))
    }
}

/// One router: its kind, the namespace it runs in (created by the caller), its own AS and
/// router ID, the addresses it listens on (empty: all) and its neighbors.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub kind: RouterKind,
    pub netns: String,
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub listen: Vec<IpAddr>,
    pub neighbors: Vec<Neighbor>,
}

/// One prefix in a router's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    /// The BGP next hop of every path the router holds for the prefix (ECMP/multipath).
    pub next_hops: BTreeSet<IpAddr>,
    /// AS_PATH of the best path, flattened (AS_SET members in order); empty for iBGP.
    pub as_path: Vec<u32>,
    /// LOCAL_PREF of the best path as the router reports it. BIRD reports its default (100) for
    /// eBGP paths too; FRR and GoBGP report none there.
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997) of the best path, in the order the router lists them.
    pub communities: Vec<(u16, u16)>,
    /// LARGE_COMMUNITIES (RFC 8092) of the best path.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// ORIGIN of the best path: "igp", "egp" or "incomplete".
    pub origin: Option<String>,
}

/// One path as a router lists it, before the paths of a prefix are merged into a [`Route`].
#[derive(Clone, Debug, Default)]
struct PathAttrs {
    best: bool,
    next_hop: Option<IpAddr>,
    as_path: Vec<u32>,
    local_pref: Option<u32>,
    communities: Vec<(u16, u16)>,
    large_communities: Vec<(u32, u32, u32)>,
    origin: Option<String>,
}

/// Merges paths into routes, sorted by prefix: next hops from every path, the rest from the
/// best path (the first one when none is marked best).
fn merge_paths(paths: Vec<(IpNet, PathAttrs)>) -> Vec<Route> {
    let mut by_prefix: BTreeMap<IpNet, Vec<PathAttrs>> = BTreeMap::new();
    for (prefix, path) in paths {
        by_prefix.entry(prefix).or_default().push(path);
    }
    by_prefix
        .into_iter()
        .filter_map(|(prefix, paths)| {
            let next_hops = paths.iter().filter_map(|p| p.next_hop).collect();
            let best = paths
                .iter()
                .find(|p| p.best)
                .or_else(|| paths.first())?
                .clone();
            Some(Route {
                prefix,
                next_hops,
                as_path: best.as_path,
                local_pref: best.local_pref,
                communities: best.communities,
                large_communities: best.large_communities,
                origin: best.origin,
            })
        })
        .collect()
}

/// ORIGIN spelled the same way for every router.
fn normalize_origin(origin: &str) -> String {
    match origin.to_ascii_lowercase().as_str() {
        "i" | "igp" => "igp".to_string(),
        "e" | "egp" => "egp".to_string(),
        "?" | "incomplete" => "incomplete".to_string(),
        other => other.to_string(),
    }
}

/// A daemon process of a router, with its log file.
struct Daemon {
    name: &'static str,
    child: KillOnDrop,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args` in `netns` in the foreground, stdout and stderr into
    /// `<dir>/<name>.log`.
    fn spawn(
        netns: &str,
        dir: &Path,
        name: &'static str,
        program: &str,
        args: &[String],
    ) -> Result<Daemon> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {program} in {netns}"))?;
        Ok(Daemon {
            name,
            child: KillOnDrop(child),
            log,
        })
    }

    /// Fails with the end of the log when the daemon has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.0.try_wait()? {
            bail!(
                "{} exited ({status}):\n{}",
                self.name,
                log_tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL (by [`KillOnDrop`]).
    fn stop(mut self, grace: Duration) {
        if matches!(self.child.0.try_wait(), Ok(None)) && self.child.signal(libc::SIGTERM).is_ok() {
            let mut child = self.child;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(child.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The last `lines` lines of a log file.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running router. Dropping it stops its daemons and removes its temporary directory.
pub struct Router {
    kind: RouterKind,
    netns: String,
    /// Configuration, control socket and logs.
    dir: tempfile::TempDir,
    /// In start order; stopped in reverse.
    daemons: Vec<Daemon>,
    /// BIRD: the `protocol bgp` name of each neighbor.
    protocols: Vec<(IpAddr, String)>,
    /// FRR: the `-N` path space (`/var/run/frr/<name>`), removed on drop.
    frr_pathspace: Option<String>,
}

/// How long a daemon may take to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl Router {
    /// Writes the configuration into a temporary directory, starts the daemon(s) in
    /// `cfg.netns` and waits until the control socket answers with the configuration applied.
    pub fn start(cfg: &RouterConfig) -> Result<Router> {
        let dir = tempfile::Builder::new()
            .prefix("herald-router-")
            .tempdir()
            .context("router temporary directory")?;
        let mut router = Router {
            kind: cfg.kind,
            netns: cfg.netns.clone(),
            dir,
            daemons: Vec::new(),
            protocols: Vec::new(),
            frr_pathspace: None,
        };
        let started = match cfg.kind {
            RouterKind::Bird => bird::start(&mut router, cfg),
            RouterKind::Frr => frr::start(&mut router, cfg),
            RouterKind::Gobgp => gobgp::start(&mut router, cfg),
        };
        // On failure the router drops here: its daemons stop, the directory goes.
        started.with_context(|| format!("starting {:?} in {}", cfg.kind, cfg.netns))?;
        Ok(router)
    }

    pub fn kind(&self) -> RouterKind {
        self.kind
    }

    /// The router's table for `family`: every BGP route it holds, sorted by prefix.
    pub fn routes(&self, family: Family) -> Result<Vec<Route>> {
        match self.kind {
            RouterKind::Bird => bird::routes(self, family),
            RouterKind::Frr => frr::routes(self, family),
            RouterKind::Gobgp => gobgp::routes(self, family),
        }
    }

    /// Whether the router's session with `neighbor` is Established, by the router's own status.
    pub fn session_established(&self, neighbor: IpAddr) -> Result<bool> {
        match self.kind {
            RouterKind::Bird => bird::established(self, neighbor),
            RouterKind::Frr => frr::established(self, neighbor),
            RouterKind::Gobgp => gobgp::established(self, neighbor),
        }
    }

    /// Polls [`Router::routes`] until `pred` holds, returning that table; fails after `timeout`
    /// with the last table (or error) and the end of the daemons' logs.
    pub fn wait_routes(
        &self,
        family: Family,
        pred: impl Fn(&[Route]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Route>> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.routes(family);
            if let Ok(routes) = &last
                && pred(routes)
            {
                return Ok(routes.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{:?} in {}: {family:?} table not as expected after {timeout:?}; last: {last:#?}\n{}",
                    self.kind,
                    self.netns,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until the session with `neighbor` is Established; fails after `timeout` with the
    /// end of the daemons' logs.
    pub fn wait_established(&self, neighbor: IpAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.session_established(neighbor);
            if matches!(last, Ok(true)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{:?} in {}: session with {neighbor} not Established after {timeout:?} ({last:?})\n{}",
                    self.kind,
                    self.netns,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the router's own CLI and returns its stdout: `birdc <args>`, `vtysh -c <arg> -c
    /// <arg>…` (one command per argument) or `gobgp <args>` (e.g. `["global", "rib", "add",
    /// ...]` to announce from GoBGP).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        match self.kind {
            RouterKind::Bird => bird::cli(self, args),
            RouterKind::Frr => frr::cli_lines(self, args),
            RouterKind::Gobgp => gobgp::cli(self, args),
        }
    }

    /// The router's BFD sessions as it reports them (FRR's `show bfd peers json`, BIRD's `show
    /// bfd sessions`); GoBGP has no BFD.
    pub fn bfd_peers(&self) -> Result<Vec<BfdPeer>> {
        match self.kind {
            RouterKind::Bird => bird::bfd_peers(self),
            RouterKind::Frr => frr::bfd_peers(self),
            RouterKind::Gobgp => bail!("GoBGP has no BFD"),
        }
    }

    /// Stops the daemons and removes the temporary directory (what dropping does).
    pub fn stop(self) {
        drop(self);
    }

    /// Each configuration file and the end of each daemon's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".conf") || name.ends_with(".toml") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let _ = write!(out, "--- {name}\n{text}\n");
            }
        }
        for daemon in &self.daemons {
            let _ = write!(
                out,
                "--- {} log (last lines)\n{}\n",
                daemon.name,
                log_tail(&daemon.log, 40)
            );
        }
        out
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, name: &'static str, program: &str, args: &[String]) -> Result<()> {
        let daemon = Daemon::spawn(&self.netns, self.dir.path(), name, program, args)?;
        self.daemons.push(daemon);
        Ok(())
    }

    /// Polls `ready` until it returns true, failing early (with the log) when a daemon exits.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut(&Router) -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for daemon in &mut self.daemons {
                daemon.check_alive()?;
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what} not ready after {START_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command run inside the router's namespace.
    fn ns_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]);
        cmd
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== {:?} router in {} (dropped during a panic)\n{}",
                self.kind,
                self.netns,
                self.logs()
            );
        }
        while let Some(daemon) = self.daemons.pop() {
            daemon.stop(Duration::from_secs(3));
        }
        if let Some(pathspace) = &self.frr_pathspace {
            let _ = std::fs::remove_dir_all(frr::run_dir(pathspace));
        }
    }
}

/// Runs `cmd`, failing with its stderr when it exits non-zero; stdout as text.
fn output(mut cmd: Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A router namespace and host namespaces on one layer-2 segment: a bridge `br0` in the router
/// namespace holds the router's addresses (203.0.113.1/24, 2001:db8::1/64) and one veth per
/// host (`eth0` in the host, 203.0.113.(i+2)/24 and 2001:db8::(i+2)/64 for host `i`).
/// Dropping it deletes the namespaces (and with them every interface).
pub struct Lan {
    pub router: Netns,
    pub hosts: Vec<Netns>,
}

impl Lan {
    /// Namespaces named `<prefix>r…` and `<prefix>h…` (unique per process and call).
    pub fn new(prefix: &str, hosts: usize) -> Result<Lan> {
        let router = Netns::new(&format!("{prefix}r"))?;
        router.ip(["link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
        router.ip([
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        router.ip(["addr", "add", "203.0.113.1/24", "dev", "br0"])?;
        router.ip(["addr", "add", "2001:db8::1/64", "dev", "br0", "nodad"])?;
        router.ip(["link", "set", "br0", "up"])?;
        let mut lan = Lan {
            router,
            hosts: Vec::new(),
        };
        for i in 0..hosts {
            let host = Netns::new(&format!("{prefix}h"))?;
            let port = format!("h{i}");
            veth_between(&lan.router, &port, &host, "eth0")?;
            lan.router
                .ip(["link", "set", &port, "master", "br0", "up"])?;
            host.ip([
                "addr",
                "add",
                &format!("{}/24", Lan::host_v4(i)),
                "dev",
                "eth0",
            ])?;
            host.ip([
                "addr",
                "add",
                &format!("{}/64", Lan::host_v6(i)),
                "dev",
                "eth0",
                "nodad",
            ])?;
            host.ip(["link", "set", "eth0", "up"])?;
            lan.hosts.push(host);
        }
        Ok(lan)
    }

    pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    pub fn host_v4(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 2 + i as u8)
    }

    pub fn host_v6(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2 + i as u16)
    }
}
