//! What one session looks like from outside (`herald bgp status`, the logs): its RFC 4271 state,
//! since when, what it last failed on and what the peer holds from it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// RFC 4271's states, as far as a connecting speaker goes through them (it never listens, so
/// it waits out a failed connection in Idle, never in Active).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Idle,
    Connect,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// What a session looks like from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// When the session entered `state` (for Established: the uptime); `None` before the
    /// session's task first ran.
    pub since: Option<SystemTime>,
    /// Why the session last went down or failed to come up; kept after it recovers, so a
    /// session that flaps says why.
    pub last_error: Option<String>,
    /// Prefixes the peer holds from this speaker.
    pub prefixes_sent: usize,
    pub updates_sent: u64,
    pub remote_router_id: Option<Ipv4Addr>,
    pub local: Option<SocketAddr>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: State::Idle,
            since: None,
            last_error: None,
            prefixes_sent: 0,
            updates_sent: 0,
            remote_router_id: None,
            local: None,
        }
    }
}

impl Status {
    /// Enters `state` at `now`; staying in the same state keeps its start.
    pub fn enter(&mut self, state: State, now: SystemTime) {
        if self.state != state || self.since.is_none() {
            self.state = state;
            self.since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_state_keeps_its_start_until_it_changes() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut s = Status::default();
        s.enter(State::Idle, t0);
        assert_eq!(s.since, Some(t0), "the first state is stamped");
        s.enter(State::Idle, t0 + Duration::from_secs(5));
        assert_eq!(s.since, Some(t0));
        s.enter(State::Established, t0 + Duration::from_secs(7));
        assert_eq!(
            (s.state, s.since),
            (State::Established, Some(t0 + Duration::from_secs(7)))
        );
    }
}
