//! GoBGP: `gobgpd` with a generated TOML file, its gRPC API on the namespace's loopback only,
//! read with `gobgp global rib -a ipv4|ipv6 -j` (every path, best or not).

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde_json::Value;

use super::{Family, PathAttrs, Route, Router, RouterConfig, merge_paths, output};

const API: &str = "127.0.0.1:50051";

pub(super) fn config(cfg: &RouterConfig) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179",
        cfg.asn, cfg.router_id
    );
    if !cfg.listen.is_empty() {
        let list: Vec<String> = cfg.listen.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(c, "  local-address-list = [{}]", list.join(", "));
    }
    for n in &cfg.neighbors {
        let _ = writeln!(
            c,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
            n.address, n.asn
        );
        if let Some(password) = &n.password {
            let _ = writeln!(c, "    auth-password = \"{password}\"");
        }
        c.push_str("  [neighbors.timers.config]\n    connect-retry = 1\n");
        if let (Some(hold), Some(keepalive)) = (n.hold_time, n.keepalive()) {
            let _ = writeln!(
                c,
                "    hold-time = {hold}\n    keepalive-interval = {keepalive}"
            );
        }
        let _ = writeln!(
            c,
            "  [neighbors.transport.config]\n    passive-mode = {}",
            n.passive
        );
        if n.multihop {
            c.push_str(
                "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 255\n",
            );
        }
        if n.graceful_restart {
            // Helper only: GoBGP keeps the speaker's routes while it restarts.
            c.push_str(
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    helper-only = true\n    restart-time = 120\n",
            );
        }
        for (family, active) in [
            ("ipv4-unicast", n.ipv4_active()),
            ("ipv6-unicast", n.ipv6_active()),
        ] {
            if active {
                let _ = writeln!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\""
                );
                if n.graceful_restart {
                    c.push_str(
                        "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
                    );
                }
            }
        }
    }
    c
}

pub(super) fn start(router: &mut Router, cfg: &RouterConfig) -> Result<()> {
    let conf = router.dir().join("gobgpd.toml");
    std::fs::write(&conf, config(cfg)).context("writing gobgpd.toml")?;
    let args = vec![
        "-f".to_string(),
        conf.display().to_string(),
        "-t".into(),
        "toml".into(),
        format!("--api-hosts={API}"),
        "--pprof-disable".into(),
        "--log-plain".into(),
        "--log-level=info".into(),
    ];
    router.spawn("gobgpd", "gobgpd", &args)?;
    // The API answers before the file's neighbors are added: wait for all of them.
    let expected = cfg.neighbors.len();
    router.wait_ready("gobgpd with its neighbors", |r| {
        cli(r, &["neighbor", "-j"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|v| v.as_array().map_or(expected == 0, |a| a.len() == expected))
    })
}

/// `gobgp <args>` in the router's namespace (its API listens on that namespace's loopback).
pub(super) fn cli(router: &Router, args: &[&str]) -> Result<String> {
    let mut cmd = router.ns_command("gobgp");
    cmd.args(["-u", "127.0.0.1", "-p", "50051"]).args(args);
    output(cmd)
}

pub(super) fn routes(router: &Router, family: Family) -> Result<Vec<Route>> {
    let afi = match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    };
    parse_routes(&cli(router, &["global", "rib", "-a", afi, "-j"])?)
}

pub(super) fn established(router: &Router, neighbor: IpAddr) -> Result<bool> {
    let text = cli(router, &["neighbor", &neighbor.to_string(), "-j"])?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {text}"))?;
    // session_state is the API's enum: 6 (ESTABLISHED), or its name in other versions.
    let state = &v["state"]["session_state"];
    Ok(state == 6
        || state
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("established")))
}

/// Parses `gobgp global rib -j`: an object mapping each prefix to its paths, each with `best`
/// and `attrs`, a list of path attributes by type code (1 ORIGIN, 2 AS_PATH, 3 NEXT_HOP,
/// 5 LOCAL_PREF, 8 COMMUNITIES, 14 MP_REACH_NLRI, 32 LARGE_COMMUNITY).
pub fn parse_routes(text: &str) -> Result<Vec<Route>> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).with_context(|| format!("parsing {text}"))?;
    let Some(routes) = v.as_object() else {
        bail!("not an object: {text}");
    };
    let mut paths = Vec::new();
    for (prefix, entries) in routes {
        let prefix: IpNet = prefix.parse().with_context(|| format!("prefix {prefix}"))?;
        for p in entries.as_array().into_iter().flatten() {
            paths.push((prefix, path(p).with_context(|| format!("path {p}"))?));
        }
    }
    Ok(merge_paths(paths))
}

fn path(p: &Value) -> Result<PathAttrs> {
    let mut path = PathAttrs {
        best: p["best"] == true,
        ..PathAttrs::default()
    };
    for attr in p["attrs"].as_array().into_iter().flatten() {
        match attr["type"].as_u64() {
            Some(1) => {
                path.origin = Some(
                    match attr["value"].as_u64() {
                        Some(0) => "igp",
                        Some(1) => "egp",
                        Some(2) => "incomplete",
                        _ => bail!("origin {attr}"),
                    }
                    .to_string(),
                );
            }
            Some(2) => {
                for segment in attr["as_paths"].as_array().into_iter().flatten() {
                    for asn in segment["asns"].as_array().into_iter().flatten() {
                        let asn = asn.as_u64().and_then(|a| u32::try_from(a).ok());
                        path.as_path.push(asn.context("AS number")?);
                    }
                }
            }
            Some(3 | 14) => {
                path.next_hop = attr["nexthop"].as_str().and_then(|s| s.parse().ok());
            }
            Some(5) => {
                let value = attr["value"].as_u64().and_then(|l| u32::try_from(l).ok());
                path.local_pref = Some(value.context("local pref")?);
            }
            Some(8) => {
                for c in attr["communities"].as_array().into_iter().flatten() {
                    let c = c.as_u64().and_then(|c| u32::try_from(c).ok());
                    let c = c.context("community")?;
                    path.communities.push(((c >> 16) as u16, c as u16));
                }
            }
            Some(32) => {
                for c in attr["value"].as_array().into_iter().flatten() {
                    let n = |k: &str| c[k].as_u64().and_then(|n| u32::try_from(n).ok());
                    path.large_communities.push((
                        n("ASN").context("large community")?,
                        n("LocalData1").context("large community")?,
                        n("LocalData2").context("large community")?,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(path)
}
