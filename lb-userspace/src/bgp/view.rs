//! `herald bgp status`, pure: one node's sessions as the speaker serves them on `/status/bgp`
//! (JSON, [`BgpStatus`]) and as the command prints them (a table, [`render_table`]).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::session::{State, Status};

/// The path the speaker serves [`BgpStatus`] on.
pub const PATH: &str = "/status/bgp";

/// One node's BGP sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpStatus {
    pub node: String,
    /// By peer name.
    pub sessions: Vec<SessionView>,
}

/// One session's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// The BGPPeer's name.
    pub peer: String,
    /// The peer's `address:port`.
    pub address: SocketAddr,
    pub state: State,
    /// Seconds in `state` (the uptime when Established); `None` before the session first ran.
    pub uptime_seconds: Option<u64>,
    /// Prefixes the peer holds from this node.
    pub prefixes_sent: usize,
    /// Prefixes the policy wants the peer to hold.
    pub prefixes_wanted: usize,
    /// Why the session last went down or failed to come up (kept after it recovers).
    pub last_error: Option<String>,
    /// This end of the connection, once one was made.
    pub local_address: Option<SocketAddr>,
    pub remote_router_id: Option<Ipv4Addr>,
    pub updates_sent: u64,
    /// The peer's BFD session (`up`, `down: <diagnostic>`, `waiting`); absent without BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
}

impl SessionView {
    /// The view of one session at `now`.
    pub fn of(
        peer: &str,
        address: SocketAddr,
        status: &Status,
        wanted: usize,
        now: SystemTime,
    ) -> SessionView {
        SessionView {
            peer: peer.to_string(),
            address,
            state: status.state,
            uptime_seconds: status
                .since
                .map(|since| now.duration_since(since).unwrap_or_default().as_secs()),
            prefixes_sent: status.prefixes_sent,
            prefixes_wanted: wanted,
            last_error: status.last_error.clone(),
            local_address: status.local,
            remote_router_id: status.remote_router_id,
            updates_sent: status.updates_sent,
            bfd: None,
        }
    }
}

/// `3d4h`, `2h5m`, `4m10s`, `42s`: the two largest units.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// The sessions as an aligned table, one line per peer, headed by the node's name; a BFD column
/// when any session has BFD.
pub fn render_table(status: &BgpStatus) -> String {
    let mut out = format!("Node {}\n", status.node);
    if status.sessions.is_empty() {
        out.push_str("no BGP sessions\n");
        return out;
    }
    let with_bfd = status.sessions.iter().any(|s| s.bfd.is_some());
    let mut header = vec!["PEER", "ADDRESS", "STATE", "UPTIME", "SENT", "WANTED"];
    if with_bfd {
        header.push("BFD");
    }
    header.push("LAST ERROR");
    let rows: Vec<Vec<String>> = status
        .sessions
        .iter()
        .map(|s| {
            let mut row = vec![
                s.peer.clone(),
                s.address.to_string(),
                s.state.as_str().to_string(),
                s.uptime_seconds.map_or_else(
                    || "-".to_string(),
                    |u| short_duration(Duration::from_secs(u)),
                ),
                s.prefixes_sent.to_string(),
                s.prefixes_wanted.to_string(),
            ];
            if with_bfd {
                row.push(s.bfd.clone().unwrap_or_else(|| "-".to_string()));
            }
            row.push(s.last_error.clone().unwrap_or_else(|| "-".to_string()));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                let _ = writeln!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(peer: &str, state: State, uptime: Option<u64>, error: Option<&str>) -> SessionView {
        SessionView {
            peer: peer.into(),
            address: "203.0.113.1:179".parse().unwrap(),
            state,
            uptime_seconds: uptime,
            prefixes_sent: 2,
            prefixes_wanted: 3,
            last_error: error.map(str::to_string),
            local_address: None,
            remote_router_id: None,
            updates_sent: 4,
            bfd: None,
        }
    }

    #[test]
    fn a_view_counts_the_time_in_its_state() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut status = Status {
            prefixes_sent: 1,
            last_error: Some("connect: refused".into()),
            ..Status::default()
        };
        status.enter(State::Established, t0);
        let v = SessionView::of(
            "r4",
            "203.0.113.1:179".parse().unwrap(),
            &status,
            2,
            t0 + Duration::from_secs(75),
        );
        assert_eq!(v.state, State::Established);
        assert_eq!(v.uptime_seconds, Some(75));
        assert_eq!((v.prefixes_sent, v.prefixes_wanted), (1, 2));
        assert_eq!(v.last_error.as_deref(), Some("connect: refused"));
        // A clock that went back gives 0, not a panic.
        let back = SessionView::of("r4", v.address, &status, 2, t0 - Duration::from_secs(1));
        assert_eq!(back.uptime_seconds, Some(0));
    }

    #[test]
    fn durations_keep_their_two_largest_units() {
        let d = |s| short_duration(Duration::from_secs(s));
        assert_eq!(d(0), "0s");
        assert_eq!(d(42), "42s");
        assert_eq!(d(250), "4m10s");
        assert_eq!(d(7_500), "2h5m");
        assert_eq!(d(3 * 86_400 + 4 * 3_600 + 59), "3d4h");
    }

    #[test]
    fn the_table_aligns_one_line_per_session() {
        let status = BgpStatus {
            node: "node-a".into(),
            sessions: vec![
                view("r4", State::Established, Some(3_725), None),
                view("router-six", State::Idle, None, Some("connect: timed out")),
            ],
        };
        assert_eq!(
            render_table(&status),
            "Node node-a\n\
             PEER        ADDRESS          STATE        UPTIME  SENT  WANTED  LAST ERROR\n\
             r4          203.0.113.1:179  Established  1h2m    2     3       -\n\
             router-six  203.0.113.1:179  Idle         -       2     3       connect: timed out\n"
        );
        let mut with_bfd = status.clone();
        with_bfd.sessions[0].bfd = Some("up".into());
        assert_eq!(
            render_table(&with_bfd),
            "Node node-a\n\
             PEER        ADDRESS          STATE        UPTIME  SENT  WANTED  BFD  LAST ERROR\n\
             r4          203.0.113.1:179  Established  1h2m    2     3       up   -\n\
             router-six  203.0.113.1:179  Idle         -       2     3       -    connect: timed out\n"
        );
        let none = BgpStatus {
            node: "node-a".into(),
            sessions: vec![],
        };
        assert_eq!(render_table(&none), "Node node-a\nno BGP sessions\n");
    }

    #[test]
    fn json_names_fields_in_camel_case_and_reads_back() {
        let status = BgpStatus {
            node: "node-a".into(),
            sessions: vec![view("r4", State::Established, Some(5), None)],
        };
        let json = serde_json::to_value(&status).unwrap();
        let s = &json["sessions"][0];
        assert_eq!(s["peer"], "r4");
        assert_eq!(s["address"], "203.0.113.1:179");
        assert_eq!(s["state"], "Established");
        assert_eq!(s["uptimeSeconds"], 5);
        assert_eq!(s["prefixesSent"], 2);
        assert_eq!(s["prefixesWanted"], 3);
        assert!(s["lastError"].is_null());
        let back: BgpStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
