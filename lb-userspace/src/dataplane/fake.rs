//! An in-memory [`L2Plane`] for unit tests: records every call in order, holds the announced
//! keys, and fails where a test tells it to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::edges::{EdgeCounters, ForeignClaim};
use super::fallback::FallbackCounts;
use super::heartbeat::Guard;
use super::keys::{AddrKey, Mac};
use super::netdev::Interface;
use super::plane::{L2Plane, Observed};
use super::xdp_mode::ModeChange;
use super::{DataplaneError, Result, ServedBy};

/// One call the speaker made, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Attach(String),
    Release(String),
    Announce(String, IpAddr),
    Withdraw(String, IpAddr),
    Gratuitous(String, IpAddr),
    Heartbeat(Duration),
    CloseGuard,
    Shutdown,
}

/// Shared between the plane and its guard handles, so a test sees every call.
#[derive(Default)]
pub struct State {
    pub ops: Vec<Op>,
    /// Announced (ifindex, address).
    pub keys: BTreeSet<(u32, IpAddr)>,
    /// Interfaces that exist, by name.
    pub interfaces: BTreeMap<String, Interface>,
    /// Interfaces where attach fails.
    pub attach_fails: BTreeSet<String>,
    /// Addresses whose announce fails.
    pub announce_fails: BTreeSet<IpAddr>,
    /// Interfaces answered (by name) and by whom.
    pub attached: BTreeMap<String, ServedBy>,
    pub userspace: Vec<(String, FallbackCounts)>,
    /// Foreign claims the next `observe` reports (then forgotten, as the real plane does).
    pub claims: Vec<ForeignClaim>,
    pub edges: EdgeCounters,
    /// XDP mode changes the next `observe` reports (then forgotten).
    pub mode_changes: Vec<ModeChange>,
}

#[derive(Clone, Default)]
pub struct FakePlane(pub Arc<Mutex<State>>);

/// An Ethernet interface as the kernel would report it.
pub fn interface(name: &str, index: u32) -> Interface {
    Interface {
        name: name.to_string(),
        index,
        mac: Mac([2, 0, 0, 0, 0, index as u8]),
        hw_type: libc::ARPHRD_ETHER,
        noarp: false,
        loopback: false,
    }
}

fn refused(op: &'static str) -> DataplaneError {
    DataplaneError::Io {
        op,
        source: std::io::Error::other("refused by the test"),
    }
}

impl FakePlane {
    pub fn with_interfaces(names: &[(&str, u32)]) -> FakePlane {
        let plane = FakePlane::default();
        plane.state().interfaces = names
            .iter()
            .map(|(name, index)| (name.to_string(), interface(name, *index)))
            .collect();
        plane
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The calls made so far, forgetting them.
    pub fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut self.state().ops)
    }

    fn record(&self, op: Op) {
        self.state().ops.push(op);
    }
}

impl Guard for FakePlane {
    fn heartbeat(&mut self, timeout: Duration) -> Result<()> {
        self.record(Op::Heartbeat(timeout));
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.record(Op::CloseGuard);
        Ok(())
    }
}

impl L2Plane for FakePlane {
    type Guard = FakePlane;

    fn interface(&self, name: &str) -> Result<Interface> {
        self.state()
            .interfaces
            .get(name)
            .cloned()
            .ok_or_else(|| DataplaneError::UnknownInterface(name.to_string()))
    }

    fn attach(&mut self, iface: &Interface) -> Result<ServedBy> {
        self.record(Op::Attach(iface.name.clone()));
        let mut state = self.state();
        if state.attach_fails.contains(&iface.name) {
            return Err(refused("attach"));
        }
        state
            .attached
            .insert(iface.name.clone(), ServedBy::XdpDriver);
        Ok(ServedBy::XdpDriver)
    }

    fn release_unused(&mut self, keep: &BTreeSet<String>) {
        let mut state = self.state();
        let gone: Vec<String> = state
            .attached
            .iter()
            .filter(|(name, by)| **by == ServedBy::Userspace && !keep.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            state.attached.remove(&name);
            state.ops.push(Op::Release(name));
        }
    }

    fn announce(&mut self, iface: &Interface, ip: IpAddr) -> Result<Mac> {
        self.record(Op::Announce(iface.name.clone(), ip));
        let mut state = self.state();
        if state.announce_fails.contains(&ip) {
            return Err(refused("announce"));
        }
        state.keys.insert((iface.index, ip));
        Ok(iface.mac)
    }

    fn withdraw(&mut self, iface: &Interface, ip: IpAddr) -> Result<bool> {
        self.record(Op::Withdraw(iface.name.clone(), ip));
        Ok(self.state().keys.remove(&(iface.index, ip)))
    }

    fn keys(&self) -> Result<Vec<AddrKey>> {
        Ok(self
            .state()
            .keys
            .iter()
            .map(|(index, ip)| AddrKey::new(*index, *ip))
            .collect())
    }

    fn gratuitous(&mut self, iface: &Interface, ip: IpAddr, _mac: Mac) -> Result<u32> {
        self.record(Op::Gratuitous(iface.name.clone(), ip));
        Ok(if ip.is_ipv4() { 2 } else { 1 })
    }

    fn observe(&mut self) -> Result<Observed> {
        let mut state = self.state();
        let claims = std::mem::take(&mut state.claims);
        let mode_changes = std::mem::take(&mut state.mode_changes);
        Ok(Observed {
            addresses: state
                .keys
                .iter()
                .map(|(index, ip)| (*index, *ip, 0, 0))
                .collect(),
            userspace: state.userspace.clone(),
            claims,
            edges: state.edges,
            mode_changes,
        })
    }

    fn guard(&self) -> Result<FakePlane> {
        Ok(self.clone())
    }

    fn shutdown(&mut self) {
        self.record(Op::Shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_reported_once() {
        let mut plane = FakePlane::with_interfaces(&[("eth0", 2)]);
        let claim = ForeignClaim {
            ifindex: 2,
            ip: IpAddr::from([198, 51, 100, 10]),
            mac: Mac([2, 0, 0, 0, 0, 9]),
            count: 3,
        };
        plane.state().claims.push(claim);
        plane.state().edges.foreign_claims = 3;
        let observed = plane.observe().expect("observe");
        assert_eq!(observed.claims, [claim]);
        assert_eq!(observed.edges.foreign_claims, 3);
        assert_eq!(plane.observe().expect("observe").claims, []);
    }
}
