//! What `herald xdp` prints: who answers, what an ended responder did, and `list`'s table.

use crate::dataplane::answerers::Serving;
use crate::dataplane::fallback::FallbackCounts;
use crate::dataplane::{Attached, GuardState, LimitInfo, Snapshot};

pub(super) fn print_serving(iface: &str, serving: &Serving) {
    match serving {
        Serving::Xdp(attached) => print_attached(attached),
        Serving::OtherProcess(pid) => {
            println!("{iface}: already answered in userspace (pid {pid})");
        }
        Serving::Own {
            released_xdp,
            xdp_refused,
            ..
        } => {
            if let Some(why) = xdp_refused {
                println!("{iface}: XDP cannot attach ({why}); falling back to userspace");
            }
            if let Some(mode) = released_xdp {
                println!("{iface}: detached the XDP program ({mode} mode) to answer in userspace");
            }
            println!("{iface}: answering in userspace (AF_PACKET)");
        }
    }
}

/// Prints what each ended responder did; the first failure is the command's error.
pub(super) fn print_attached(attached: &Attached) {
    if attached.already {
        println!(
            "{}: already attached ({} mode){}",
            attached.iface,
            attached.mode,
            if attached.program_updated {
                ", program replaced by this version's"
            } else {
                ""
            }
        );
    } else if let Some(change) = crate::dataplane::xdp_mode::ModeChange::of(attached) {
        println!("{}", change.message);
    } else if let Some(why) = &attached.driver_refused {
        println!(
            "{}: driver mode refused ({why}); attached in skb mode",
            attached.iface
        );
    } else {
        println!("{}: attached in {} mode", attached.iface, attached.mode);
    }
}

pub(super) fn print_summary(iface: &str, c: &FallbackCounts) {
    println!(
        "{iface}: userspace responder: {} ARP/NS frames, {} replies, {} replies dropped by the kernel (send failed), {} receive errors, {} counter write errors",
        c.frames, c.replies, c.send_failures, c.receive_errors, c.map_errors
    );
}

pub(super) fn render_text(s: &Snapshot) -> String {
    let mut out = format!("pin dir: {}\n", s.pin_dir.display());
    out += &match s.guard {
        GuardState::Off => "guard: off (answers never expire)\n".to_string(),
        GuardState::Closed => "guard: closed (never armed): not answering\n".to_string(),
        GuardState::Fresh { age_ms, timeout_ms } => {
            format!("guard: fresh (heartbeat {age_ms} ms ago, timeout {timeout_ms} ms)\n")
        }
        GuardState::Stale { age_ms, timeout_ms } => {
            format!(
                "guard: STALE (heartbeat {age_ms} ms ago, timeout {timeout_ms} ms): not answering\n"
            )
        }
    };
    out += "interfaces:\n";
    if s.interfaces.is_empty() {
        out += "  (none attached)\n";
    }
    for i in &s.interfaces {
        let state = match (i.pid, i.active) {
            (None, true) => String::new(),
            (None, false) => " (interface gone)".to_string(),
            (Some(pid), true) => format!(" (pid {pid})"),
            (Some(pid), false) => format!(" (pid {pid} is gone: not answering)"),
        };
        out += &format!("  {} mode {}{state}\n", i.iface, i.dataplane);
    }
    out += "addresses:\n";
    if s.addresses.is_empty() {
        out += "  (none announced)\n";
    } else {
        out += &format!(
            "  {:<16} {:<40} {:<17} {:>10} {:>10}\n",
            "IFACE", "ADDRESS", "MAC", "REQUESTS", "REPLIES"
        );
    }
    for a in &s.addresses {
        let iface = a.iface.clone().unwrap_or_else(|| format!("#{}", a.ifindex));
        out += &format!(
            "  {:<16} {:<40} {:<17} {:>10} {:>10}\n",
            iface, a.ip, a.mac, a.requests, a.replies
        );
    }
    let c = s.counters;
    out += &format!(
        "counters: arp_replies={} na_replies={} passed={} malformed={} silenced={}\n",
        c.arp_replies, c.na_replies, c.passed, c.malformed, c.silenced
    );
    let e = s.edges;
    out += &format!(
        "          rate_limited={} flood_dropped={} foreign_claims={} sha_mismatch={}\n",
        e.rate_limited, e.flood_dropped, e.foreign_claims, e.sha_mismatch
    );
    if let Some(limits) = s.limits {
        out += &format!(
            "limits: answers per requester MAC {}; flood guard per source {}\n",
            limit_text(limits.answers),
            limit_text(limits.flood_guard)
        );
    }
    out
}

/// `1000/s (burst 2000)`, or `off`; a burst of 0 counts as 1, as in the program.
fn limit_text(limit: LimitInfo) -> String {
    if limit.per_second == 0 {
        return "off".to_string();
    }
    format!("{}/s (burst {})", limit.per_second, limit.burst.max(1))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::dataplane::edges::EdgeCounters;
    use crate::dataplane::keys::Mac;
    use crate::dataplane::{
        AddressInfo, AttachedMode, AttachmentInfo, Counters, InterfaceMode, Limits, ServedBy,
    };

    #[test]
    fn text_rendering_shows_every_part() {
        let snapshot = Snapshot {
            pin_dir: PathBuf::from("/sys/fs/bpf/herald"),
            attachments: vec![AttachmentInfo {
                iface: "eth0".into(),
                mode: AttachedMode::Skb,
                present: true,
            }],
            interfaces: vec![
                InterfaceMode {
                    iface: "eth0".into(),
                    dataplane: ServedBy::XdpSkb,
                    pid: None,
                    active: true,
                },
                InterfaceMode {
                    iface: "eth1".into(),
                    dataplane: ServedBy::Userspace,
                    pid: Some(42),
                    active: true,
                },
                InterfaceMode {
                    iface: "eth2".into(),
                    dataplane: ServedBy::Userspace,
                    pid: Some(43),
                    active: false,
                },
            ],
            addresses: vec![AddressInfo {
                iface: Some("eth0".into()),
                ifindex: 2,
                ip: "198.51.100.10".parse().unwrap(),
                mac: Mac([2, 0, 0x5e, 0, 0, 0x10]),
                requests: 3,
                replies: 2,
            }],
            counters: Counters {
                arp_replies: 2,
                na_replies: 0,
                passed: 9,
                malformed: 1,
                silenced: 1,
            },
            edges: EdgeCounters {
                sha_mismatch: 4,
                rate_limited: 5,
                foreign_claims: 6,
                flood_dropped: 7,
            },
            limits: Some(Limits {
                answers: LimitInfo {
                    per_second: 1_000,
                    burst: 2_000,
                },
                flood_guard: LimitInfo {
                    per_second: 0,
                    burst: 0,
                },
            }),
            guard: GuardState::Stale {
                age_ms: 3000,
                timeout_ms: 2000,
            },
        };
        let text = render_text(&snapshot);
        for part in [
            "eth0 mode xdp-skb\n",
            "eth1 mode userspace (pid 42)\n",
            "eth2 mode userspace (pid 43 is gone: not answering)\n",
            "198.51.100.10",
            "02:00:5e:00:00:10",
            "STALE",
            "arp_replies=2",
            "silenced=1",
            "rate_limited=5 flood_dropped=7 foreign_claims=6 sha_mismatch=4\n",
            "limits: answers per requester MAC 1000/s (burst 2000); flood guard per source off\n",
        ] {
            assert!(text.contains(part), "{part} missing in:\n{text}");
        }
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["guard"]["state"], "stale");
        assert_eq!(json["addresses"][0]["mac"], "02:00:5e:00:00:10");
        assert_eq!(json["attachments"][0]["mode"], "skb");
        assert_eq!(json["interfaces"][0]["dataplane"], "xdp-skb");
        assert_eq!(json["interfaces"][1]["dataplane"], "userspace");
        assert_eq!(json["interfaces"][1]["pid"], 42);
        assert_eq!(json["interfaces"][2]["active"], false);
        assert_eq!(json["edges"]["flood_dropped"], 7);
        assert_eq!(json["limits"]["answers"]["burst"], 2000);
        assert_eq!(json["limits"]["flood_guard"]["per_second"], 0);
    }

    #[test]
    fn without_maps_there_are_no_limits_to_show() {
        let snapshot = Snapshot {
            pin_dir: PathBuf::from("/sys/fs/bpf/herald"),
            attachments: Vec::new(),
            interfaces: Vec::new(),
            addresses: Vec::new(),
            counters: Counters::default(),
            edges: EdgeCounters::default(),
            limits: None,
            guard: GuardState::Off,
        };
        let text = render_text(&snapshot);
        assert!(!text.contains("limits:"), "{text}");
        assert!(text.contains("flood_dropped=0"), "{text}");
        let json = serde_json::to_value(&snapshot).unwrap();
        assert!(json.get("limits").is_none(), "{json}");
        assert_eq!(json["edges"]["rate_limited"], 0);
    }

    #[test]
    fn a_limit_is_shown_as_the_program_applies_it() {
        let limit = |per_second, burst| limit_text(LimitInfo { per_second, burst });
        assert_eq!(limit(10_000, 1_000), "10000/s (burst 1000)");
        assert_eq!(limit(5, 0), "5/s (burst 1)");
        assert_eq!(limit(0, 7), "off");
    }
}
