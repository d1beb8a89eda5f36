//! BIRD 2: `bird -f` with a generated `bird.conf`, one `protocol bgp` per neighbor, read with
//! `birdc show route all` (text: BIRD 2.0 has no JSON output).

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;

use super::{
    Family, PathAttrs, Route, Router, RouterConfig, merge_paths, normalize_origin, output,
};

/// The configuration: devices (for direct next hops), connected and kernel routes (to resolve
/// multihop next hops; never shown, the table is read with `source = RTS_BGP`), and one
/// import-all, export-nothing `protocol bgp` per neighbor.
pub(super) fn config(cfg: &RouterConfig) -> (String, Vec<(IpAddr, String)>) {
    let mut c = String::new();
    let _ = writeln!(c, "log stderr all;");
    let _ = writeln!(c, "router id {};", cfg.router_id);
    c.push_str(
        "protocol device { scan time 2; }\n\
         protocol direct { ipv4; ipv6; }\n\
         protocol kernel k4 { learn; ipv4 { import all; export none; }; }\n\
         protocol kernel k6 { learn; ipv6 { import all; export none; }; }\n",
    );
    // BIRD sets BFD timers per interface: the first neighbor's apply to all.
    if let Some(t) = cfg.neighbors.iter().find_map(|n| n.bfd) {
        let _ = writeln!(
            c,
            "protocol bfd {{\n  interface \"*\" {{ min rx interval {} ms; min tx interval {} ms; multiplier {}; }};\n}}",
            t.receive_ms, t.transmit_ms, t.multiplier
        );
    }
    let mut names = Vec::new();
    for (i, n) in cfg.neighbors.iter().enumerate() {
        let name = format!("n{i}");
        let _ = writeln!(c, "protocol bgp {name} {{");
        // A listen address of the neighbor's family is the source address, and with strict
        // bind the listening socket binds to it alone.
        match cfg
            .listen
            .iter()
            .find(|a| a.is_ipv4() == n.address.is_ipv4())
        {
            Some(local) => {
                let _ = writeln!(c, "  local {local} as {};\n  strict bind on;", cfg.asn);
            }
            None => {
                let _ = writeln!(c, "  local as {};", cfg.asn);
            }
        }
        let _ = writeln!(c, "  neighbor {} as {};", n.address, n.asn);
        if let Some(password) = &n.password {
            let _ = writeln!(c, "  password \"{password}\";");
        }
        if n.passive {
            c.push_str("  passive on;\n");
        } else {
            c.push_str("  connect delay time 1;\n  connect retry time 2;\n");
        }
        // `direct` also makes an iBGP neighbor's next hops resolve on the shared network
        // (`gateway direct`) instead of through the IGP table.
        c.push_str(if n.multihop {
            "  multihop;\n"
        } else {
            "  direct;\n"
        });
        if let (Some(hold), Some(keepalive)) = (n.hold_time, n.keepalive()) {
            let _ = writeln!(c, "  hold time {hold};\n  keepalive time {keepalive};");
        }
        if n.graceful_restart {
            c.push_str("  graceful restart on;\n");
        }
        if n.bfd.is_some() {
            // After a session error (BFD down among them) BIRD refuses the neighbor for its
            // error wait time, 60 s at first by default: keep it short for the tests.
            c.push_str("  bfd on;\n  error wait time 1, 5;\n");
        }
        if n.ipv4_active() {
            c.push_str("  ipv4 { import all; export none; };\n");
        }
        if n.ipv6_active() {
            c.push_str("  ipv6 { import all; export none; };\n");
        }
        c.push_str("}\n");
        names.push((n.address, name));
    }
    (c, names)
}

fn ctl(router: &Router) -> std::path::PathBuf {
    router.dir().join("bird.ctl")
}

pub(super) fn start(router: &mut Router, cfg: &RouterConfig) -> Result<()> {
    let (text, names) = config(cfg);
    let conf = router.dir().join("bird.conf");
    std::fs::write(&conf, text).context("writing bird.conf")?;
    router.protocols = names;
    let args = vec![
        "-f".to_string(),
        "-c".to_string(),
        conf.display().to_string(),
        "-s".to_string(),
        ctl(router).display().to_string(),
    ];
    router.spawn("bird", "bird", &args)?;
    router.wait_ready("bird control socket", |r| {
        cli(r, &["show", "status"]).is_ok_and(|s| s.contains("Daemon is up and running"))
    })
}

/// `birdc -s <ctl> <args>`; birdc exits 0 on a rejected command, so its error replies fail here.
pub(super) fn cli(router: &Router, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new("birdc");
    cmd.arg("-s").arg(ctl(router)).args(args);
    let out = output(cmd)?;
    if let Some(err) = out.lines().find(|l| {
        l.starts_with("syntax error") || l.starts_with("Unable to connect") || l.contains("error:")
    }) {
        bail!("birdc {}: {err}", args.join(" "));
    }
    Ok(out)
}

/// `show bfd sessions`: one line per session, `<address> <interface> <state> <since>
/// <interval s> <timeout s>`.
pub(super) fn bfd_peers(router: &Router) -> Result<Vec<super::BfdPeer>> {
    let text = cli(router, &["show", "bfd", "sessions"])?;
    let secs_to_ms =
        |s: &str| -> Option<u32> { s.parse::<f64>().ok().map(|v| (v * 1000.0).round() as u32) };
    let mut peers = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(peer) = fields.first().and_then(|f| f.parse::<IpAddr>().ok()) else {
            continue;
        };
        let n = fields.len();
        if n < 5 {
            continue;
        }
        peers.push(super::BfdPeer {
            peer,
            up: fields.get(2) == Some(&"Up"),
            transmit_ms: secs_to_ms(fields[n - 2]).context("interval")?,
            remote_receive_ms: None,
            remote_transmit_ms: None,
            remote_detect_mult: None,
            detect_ms: secs_to_ms(fields[n - 1]),
            multihop: None,
        });
    }
    Ok(peers)
}

pub(super) fn routes(router: &Router, family: Family) -> Result<Vec<Route>> {
    let table = match family {
        Family::Ipv4 => "master4",
        Family::Ipv6 => "master6",
    };
    let text = cli(
        router,
        &[
            "show", "route", "table", table, "where", "source", "=", "RTS_BGP", "all",
        ],
    )?;
    parse_routes(&text)
}

pub(super) fn established(router: &Router, neighbor: IpAddr) -> Result<bool> {
    let Some((_, name)) = router.protocols.iter().find(|(a, _)| *a == neighbor) else {
        bail!("{neighbor} is not a configured neighbor");
    };
    let text = cli(router, &["show", "protocols", name])?;
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name.as_str()) && l.contains("Established")))
}

/// Parses `birdc show route all`: a line starting with a prefix opens a route and its first
/// path, a line indented by spaces another path of the same prefix (`*` after the protocol
/// marks the best one), tab-indented lines are that path's attributes (`BGP.next_hop: ...`).
pub fn parse_routes(text: &str) -> Result<Vec<Route>> {
    let mut paths: Vec<(IpNet, PathAttrs)> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    for line in text.lines() {
        if line.trim().is_empty()
            || line.starts_with("BIRD ")
            || line.starts_with("Table ")
            || line.starts_with("Access restricted")
        {
            continue;
        }
        if let Some(attr) = line.strip_prefix('\t') {
            let Some((_, path)) = paths.last_mut() else {
                bail!("attribute before any route: {line:?}");
            };
            parse_attr(path, attr.trim()).with_context(|| format!("in {line:?}"))?;
            continue;
        }
        let header = if line.starts_with(' ') {
            line.trim_start()
        } else {
            let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            prefix = Some(
                first
                    .parse()
                    .with_context(|| format!("prefix in {line:?}"))?,
            );
            rest.trim_start()
        };
        let Some(prefix) = prefix else {
            bail!("path before any prefix: {line:?}");
        };
        // `unicast [n0 12:00:00.000 from 203.0.113.2] * (100) [AS64513i]`
        let best = header
            .split_once(']')
            .is_some_and(|(_, after)| after.trim_start().starts_with('*'));
        paths.push((
            prefix,
            PathAttrs {
                best,
                ..PathAttrs::default()
            },
        ));
    }
    Ok(merge_paths(paths))
}

fn parse_attr(path: &mut PathAttrs, attr: &str) -> Result<()> {
    let Some((name, value)) = attr.split_once(':') else {
        return Ok(());
    };
    let value = value.trim();
    match name {
        "BGP.origin" => path.origin = Some(normalize_origin(value)),
        "BGP.as_path" => {
            path.as_path = value
                .split(|c: char| c.is_whitespace() || c == '{' || c == '}')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()?;
        }
        // `203.0.113.2`, or for IPv6 the global address and then the link-local one.
        "BGP.next_hop" => {
            path.next_hop = value
                .split_whitespace()
                .filter_map(|s| s.parse::<IpAddr>().ok())
                .find(|a| !a.is_unspecified());
        }
        "BGP.local_pref" => path.local_pref = Some(value.parse()?),
        "BGP.community" => {
            path.communities = tuples(value)
                .map(|t| match t[..] {
                    [a, b] => Ok((u16::try_from(a)?, u16::try_from(b)?)),
                    _ => bail!("community {t:?}"),
                })
                .collect::<Result<_>>()?;
        }
        "BGP.large_community" => {
            path.large_communities = tuples(value)
                .map(|t| match t[..] {
                    [a, b, c] => Ok((a, b, c)),
                    _ => bail!("large community {t:?}"),
                })
                .collect::<Result<_>>()?;
        }
        _ => {}
    }
    Ok(())
}

/// `(64512,300) (65535,65281)` or `(64512, 1, 2)`: the numbers of each parenthesized group
/// (a group that does not parse yields what parsed, and the caller rejects its length).
fn tuples(value: &str) -> impl Iterator<Item = Vec<u32>> + '_ {
    value
        .split('(')
        .filter_map(|g| g.split_once(')').map(|(inner, _)| inner))
        .map(|inner| {
            inner
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
}
