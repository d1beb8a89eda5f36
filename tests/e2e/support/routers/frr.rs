//! FRR without systemd or watchfrr: `zebra` and `bgpd` in the foreground with their own path
//! space (`-N`, sockets under `/var/run/frr/<name>`), the configuration pushed with
//! `vtysh -N <name> -f frr.conf`, read with `show bgp ipv4|ipv6 unicast json detail`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use herald_tests::{run_ok, unique};
use ipnet::IpNet;
use serde_json::Value;

use super::{
    Family, PathAttrs, Route, Router, RouterConfig, merge_paths, normalize_origin, output,
};

pub(super) fn run_dir(pathspace: &str) -> PathBuf {
    PathBuf::from("/var/run/frr").join(pathspace)
}

/// The configuration: multipath for eBGP and iBGP (with `as-path multipath-relax`, speakers in
/// one AS but with different router IDs all count as ECMP paths), no eBGP policy requirement,
/// no implicit IPv4 unicast (each neighbor's families are activated explicitly), session
/// changes in the log.
pub(super) fn config(cfg: &RouterConfig) -> String {
    let mut c = String::new();
    c.push_str("frr defaults traditional\n");
    // One BFD profile per distinct timer set.
    let mut profiles: Vec<super::BfdTimers> = Vec::new();
    for t in cfg.neighbors.iter().filter_map(|n| n.bfd) {
        if !profiles.contains(&t) {
            profiles.push(t);
        }
    }
    if !profiles.is_empty() {
        c.push_str("bfd\n");
        for t in &profiles {
            let _ = writeln!(
                c,
                " profile {}\n  receive-interval {}\n  transmit-interval {}\n  detect-multiplier {}\n exit",
                bfd_profile_name(t),
                t.receive_ms,
                t.transmit_ms,
                t.multiplier
            );
        }
        c.push_str("exit\n");
    }
    let _ = writeln!(c, "router bgp {}", cfg.asn);
    let _ = writeln!(c, " bgp router-id {}", cfg.router_id);
    c.push_str(
        " no bgp ebgp-requires-policy\n \
         no bgp default ipv4-unicast\n \
         bgp log-neighbor-changes\n \
         bgp bestpath as-path multipath-relax\n",
    );
    for n in &cfg.neighbors {
        let a = n.address;
        let _ = writeln!(c, " neighbor {a} remote-as {}", n.asn);
        if let Some(password) = &n.password {
            let _ = writeln!(c, " neighbor {a} password {password}");
        }
        if n.passive {
            let _ = writeln!(c, " neighbor {a} passive");
        } else {
            let _ = writeln!(c, " neighbor {a} timers connect 1");
        }
        // iBGP sessions are multihop already; FRR refuses ebgp-multihop on them.
        if n.multihop && n.asn != cfg.asn {
            let _ = writeln!(c, " neighbor {a} ebgp-multihop 255");
        }
        if let (Some(hold), Some(keepalive)) = (n.hold_time, n.keepalive()) {
            let _ = writeln!(c, " neighbor {a} timers {keepalive} {hold}");
        }
        if let Some(t) = &n.bfd {
            let _ = writeln!(c, " neighbor {a} bfd profile {}", bfd_profile_name(t));
        }
    }
    for (afi, active) in [
        (
            "ipv4",
            super::Neighbor::ipv4_active as fn(&super::Neighbor) -> bool,
        ),
        ("ipv6", super::Neighbor::ipv6_active),
    ] {
        let _ = writeln!(
            c,
            " address-family {afi} unicast\n  maximum-paths 8\n  maximum-paths ibgp 8"
        );
        for n in cfg.neighbors.iter().filter(|n| active(n)) {
            let _ = writeln!(c, "  neighbor {} activate", n.address);
        }
        c.push_str(" exit-address-family\n");
    }
    c
}

pub(super) fn start(router: &mut Router, cfg: &RouterConfig) -> Result<()> {
    // The daemons drop to the frr user: their socket directory must be theirs. /var/run is a
    // tmpfs, so after a reboot even /var/run/frr may be missing.
    let parent = std::path::Path::new("/var/run/frr");
    if !parent.is_dir() {
        std::fs::create_dir_all(parent).context("creating /var/run/frr")?;
        run_ok("chown", ["frr:frr", "/var/run/frr"])?;
    }
    let pathspace = unique("hr");
    let run = run_dir(&pathspace);
    std::fs::create_dir(&run).with_context(|| format!("creating {}", run.display()))?;
    router.frr_pathspace = Some(pathspace.clone());
    run_ok("chown", [std::ffi::OsStr::new("frr:frr"), run.as_os_str()])?;

    let text = config(cfg);
    let conf = router.dir().join("frr.conf");
    std::fs::write(&conf, text).context("writing frr.conf")?;

    // -P 0: no vty TCP port; the unix sockets in the path space are enough for vtysh.
    let common = |name: &str| -> Vec<String> {
        vec![
            "-N".into(),
            pathspace.clone(),
            "-P".into(),
            "0".into(),
            "--log".into(),
            "stdout".into(),
            "-i".into(),
            run.join(format!("{name}.pid")).display().to_string(),
        ]
    };
    router.spawn("zebra", "/usr/lib/frr/zebra", &common("zebra"))?;
    let zserv = run.join("zserv.api");
    router.wait_ready("zebra", |_| zserv.exists())?;
    let mut bgpd = common("bgpd");
    // bgpd's help says -l implies -n (no FIB); in 8.4 routes are still installed.
    for address in &cfg.listen {
        bgpd.push("-l".into());
        bgpd.push(address.to_string());
    }
    router.spawn("bgpd", "/usr/lib/frr/bgpd", &bgpd)?;
    if cfg.neighbors.iter().any(|n| n.bfd.is_some()) {
        router.spawn("bfdd", "/usr/lib/frr/bfdd", &common("bfdd"))?;
        let bfdd_vty = run.join("bfdd.vty");
        router.wait_ready("bfdd", |_| bfdd_vty.exists())?;
    }
    let bgpd_vty = run.join("bgpd.vty");
    router.wait_ready("bgpd", |r| {
        bgpd_vty.exists() && cli(r, "show daemons").is_ok_and(|s| s.contains("bgpd"))
    })?;

    let mut push = std::process::Command::new("vtysh");
    push.args(["-N", &pathspace, "-f"]).arg(&conf);
    let out = output(push).context("vtysh -f frr.conf")?;
    if let Some(err) = out.lines().find(|l| l.trim_start().starts_with('%')) {
        bail!("vtysh -f frr.conf: {err}\n{out}");
    }
    router.wait_ready("bgpd with the configuration", |r| {
        cli(r, "show running-config").is_ok_and(|s| s.contains(&format!("router bgp {}", cfg.asn)))
    })
}

fn bfd_profile_name(t: &super::BfdTimers) -> String {
    format!("t{}-{}-{}", t.receive_ms, t.transmit_ms, t.multiplier)
}

/// `show bfd peers json`.
pub(super) fn bfd_peers(router: &Router) -> Result<Vec<super::BfdPeer>> {
    let text = cli(router, "show bfd peers json")?;
    let peers: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("show bfd peers json: {text}"))?;
    let num = |p: &Value, k: &str| p[k].as_u64().and_then(|v| u32::try_from(v).ok());
    peers
        .iter()
        .map(|p| {
            Ok(super::BfdPeer {
                peer: p["peer"]
                    .as_str()
                    .context("peer")?
                    .parse()
                    .context("peer address")?,
                up: p["status"] == "up",
                transmit_ms: num(p, "transmit-interval").context("transmit-interval")?,
                remote_receive_ms: num(p, "remote-receive-interval"),
                remote_transmit_ms: num(p, "remote-transmit-interval"),
                remote_detect_mult: num(p, "remote-detect-multiplier"),
                detect_ms: num(p, "remote-detect-multiplier")
                    .zip(num(p, "receive-interval"))
                    .zip(num(p, "remote-transmit-interval"))
                    .map(|((m, rx), tx)| m * rx.max(tx)),
                multihop: p["multihop"].as_bool(),
            })
        })
        .collect()
}

/// `vtysh -N <name> -c <command>`. (vtysh warns on stderr that /etc/frr/<name>/vtysh.conf is
/// missing; harmless.)
pub(super) fn cli(router: &Router, command: &str) -> Result<String> {
    cli_lines(router, &[command])
}

/// One `vtysh` run with each of `commands` as its own `-c`, in order (so `configure
/// terminal`, `router bgp …`, `neighbor …` reach the same configuration context).
pub(super) fn cli_lines(router: &Router, commands: &[&str]) -> Result<String> {
    let Some(pathspace) = &router.frr_pathspace else {
        bail!("not an FRR router");
    };
    let mut cmd = std::process::Command::new("vtysh");
    cmd.args(["-N", pathspace]);
    for command in commands {
        cmd.args(["-c", command]);
    }
    let out = output(cmd)?;
    if let Some(err) = out.lines().find(|l| l.starts_with("% ")) {
        bail!("vtysh -c {commands:?}: {err}");
    }
    Ok(out)
}

pub(super) fn routes(router: &Router, family: Family) -> Result<Vec<Route>> {
    let afi = match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    };
    parse_routes(&cli(
        router,
        &format!("show bgp {afi} unicast json detail"),
    )?)
}

pub(super) fn established(router: &Router, neighbor: IpAddr) -> Result<bool> {
    let text = cli(router, &format!("show bgp neighbors {neighbor} json"))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {text}"))?;
    Ok(v[neighbor.to_string()]["bgpState"] == "Established")
}

/// Parses `show bgp <afi> unicast json detail` (FRR 8.4): `routes` maps each prefix to an
/// array whose first element describes the prefix (`advertisedTo`, no path attributes) and
/// whose other elements are its paths (`aspath`, `nexthops`, `bestpath.overall`, `locPrf`,
/// `community.list`, `largeCommunity.list`, `origin`).
pub fn parse_routes(text: &str) -> Result<Vec<Route>> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("parsing {text}"))?;
    let mut paths = Vec::new();
    let Some(routes) = v["routes"].as_object() else {
        return Ok(Vec::new());
    };
    for (prefix, entries) in routes {
        let prefix: IpNet = prefix.parse().with_context(|| format!("prefix {prefix}"))?;
        for p in entries.as_array().into_iter().flatten() {
            if p.get("nexthops").is_none() && p.get("aspath").is_none() {
                continue;
            }
            paths.push((prefix, path(p).with_context(|| format!("path {p}"))?));
        }
    }
    Ok(merge_paths(paths))
}

fn path(p: &Value) -> Result<PathAttrs> {
    let hops = p["nexthops"].as_array().cloned().unwrap_or_default();
    // An IPv6 path lists its global next hop and, when sent, the link-local one.
    let next_hop = hops
        .iter()
        .filter(|h| h["scope"] != "link-local")
        .chain(hops.iter())
        .find_map(|h| h["ip"].as_str()?.parse::<IpAddr>().ok());
    let as_path = p["aspath"]["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["list"].as_array().cloned().unwrap_or_default())
        .map(|asn| asn.as_u64().and_then(|a| u32::try_from(a).ok()))
        .collect::<Option<Vec<u32>>>()
        .context("AS path")?;
    let strings = |v: &Value| -> Vec<String> {
        v["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let communities = strings(&p["community"])
        .iter()
        .map(|s| community(s))
        .collect::<Result<_>>()?;
    let large_communities = strings(&p["largeCommunity"])
        .iter()
        .map(|s| {
            let n: Vec<u32> = s.split(':').map(str::parse).collect::<Result<_, _>>()?;
            match n[..] {
                [a, b, c] => Ok((a, b, c)),
                _ => bail!("large community {s}"),
            }
        })
        .collect::<Result<_>>()?;
    Ok(PathAttrs {
        best: p["bestpath"]["overall"] == true,
        next_hop,
        as_path,
        local_pref: p["locPrf"].as_u64().map(|l| l as u32),
        communities,
        large_communities,
        origin: p["origin"].as_str().map(normalize_origin),
    })
}

/// `64512:300`, or the name FRR shows for a well-known community.
fn community(s: &str) -> Result<(u16, u16)> {
    let well_known = match s {
        "graceful-shutdown" => Some(0),
        "accept-own" => Some(1),
        "llgr-stale" => Some(6),
        "no-llgr" => Some(7),
        "accept-own-nexthop" => Some(8),
        "blackhole" => Some(666),
        "no-export" => Some(65281),
        "no-advertise" => Some(65282),
        "local-AS" => Some(65283),
        "no-peer" => Some(65284),
        _ => None,
    };
    if let Some(low) = well_known {
        return Ok((65535, low));
    }
    let (a, b) = s
        .split_once(':')
        .with_context(|| format!("community {s}"))?;
    Ok((a.parse()?, b.parse()?))
}
