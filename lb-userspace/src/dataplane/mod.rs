//! The only module that touches aya and the kernel: loads the embedded XDP object, keeps its maps
//! and links pinned under a bpffs directory (so a restarted or crashed process leaves the
//! responder running with no gap), and feeds the maps.
//!
//! Pure parts live in [`keys`] (map keys, solicited-node groups, MACs), [`cadence`] (gratuitous
//! schedule), [`pins`] (pin layout) and [`caps`]; [`netdev`] and [`gratuitous`] hold the ioctls
//! and the raw socket.

pub mod answerers;
mod attach;
pub mod cadence;
pub mod caps;
pub mod edges;
mod entries;
mod error;
#[cfg(test)]
pub mod fake;
pub mod fallback;
pub mod gratuitous;
pub mod heartbeat;
pub mod keys;
pub mod markers;
pub mod netdev;
pub mod object;
pub mod pins;
pub mod plane;
mod types;
pub mod xdp_mode;

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use lb_common::maps::{
    Announcement, COUNTER_SLOTS, Claim, Guard, Ipv4Key, Ipv6Key, MAP_BUCKETS, MAP_CLAIMS4,
    MAP_CLAIMS6, MAP_COUNTERS, MAP_EXTRA, MAP_FLOOD_LIMIT, MAP_FLOOD_SOURCES, MAP_GUARD, MAP_LIMIT,
    MAP_V4, MAP_V6,
};
use lb_common::ratelimit::RateLimit;

use entries::{remove_entry, sum_over_cpus, upsert_announcement};
use error::map_err;
pub use error::{DataplaneError, Result};
use keys::{AddrKey, Mac};
use netdev::Interface;
pub use pins::AttachedMode;
pub use types::{
    AddressInfo, Announced, AttachMode, Attached, AttachmentInfo, Counters, DataplaneChoice,
    Detached, GuardState, InterfaceMode, LimitInfo, Limits, ServedBy, Snapshot, interface_modes,
    monotonic_ns,
};

/// The maps of the first version: a pin directory holding these was set up by some Herald.
const CORE_MAPS: [&str; 4] = [MAP_V4, MAP_V6, MAP_COUNTERS, MAP_GUARD];
/// Every pinned map. Those after the core ones may be missing from a directory an older Herald
/// pinned: opening it creates them beside the old ones, which keep their entries.
const MAP_NAMES: [&str; 11] = [
    MAP_V4,
    MAP_V6,
    MAP_COUNTERS,
    MAP_GUARD,
    MAP_EXTRA,
    MAP_CLAIMS4,
    MAP_CLAIMS6,
    MAP_LIMIT,
    MAP_BUCKETS,
    MAP_FLOOD_LIMIT,
    MAP_FLOOD_SOURCES,
];

/// The pinned maps of one pin directory.
pub struct Dataplane {
    pin_dir: PathBuf,
    v4: PerCpuHashMap<MapData, Ipv4Key, Announcement>,
    v6: PerCpuHashMap<MapData, Ipv6Key, Announcement>,
    counters: PerCpuArray<MapData, u64>,
    guard: Array<MapData, Guard>,
    extra: PerCpuArray<MapData, u64>,
    claims4: HashMap<MapData, Ipv4Key, Claim>,
    claims6: HashMap<MapData, Ipv6Key, Claim>,
    limit: Array<MapData, RateLimit>,
    flood_limit: Array<MapData, RateLimit>,
    /// Interfaces the userspace fallback responder serves in this process: announcing there
    /// needs no XDP link.
    userspace: Vec<u32>,
    /// Interfaces whose live pinned link this process already gave its own program (once per
    /// process: a rescan does not load the program again).
    refreshed: std::sync::Mutex<Vec<u32>>,
}

/// Parses the embedded object with every map pinned under `pin_dir` (reused when pinned
/// already, created and pinned otherwise). Programs are not loaded yet.
fn load_object(pin_dir: &Path) -> Result<aya::Ebpf> {
    let mut loader = aya::EbpfLoader::new();
    for name in MAP_NAMES {
        loader.map_pin_path(name, Cow::Owned(pin_dir.join(name)));
    }
    loader
        .load(object::XDP_OBJECT)
        .map_err(|e| DataplaneError::Load(Box::new(e)))
}

fn open_pinned<M>(pin_dir: &Path, name: &'static str) -> Result<M>
where
    M: TryFrom<Map, Error = MapError>,
{
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| DataplaneError::PinnedMap {
        path,
        source: Box::new(e),
    })?;
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    M::try_from(map).map_err(map_err(name))
}

impl Dataplane {
    /// Opens the maps pinned under `pin_dir`, creating and pinning those absent (all of them,
    /// or those an older Herald did not have: the others are reused as they are, entries and
    /// all). A guard created here starts closed ([`Guard::CLOSED`]): nothing is answered until
    /// the caller arms it ([`Dataplane::heartbeat`]) or turns it off ([`Dataplane::guard_off`]),
    /// so a process that dies between announcing and its first heartbeat leaves nothing
    /// answering. A rate limit created here starts at [`RateLimit::DEFAULT`], a flood guard at
    /// [`RateLimit::FLOOD_DEFAULT`]; one already
    /// pinned keeps its value.
    pub fn open(pin_dir: &Path) -> Result<Dataplane> {
        pins::ensure_pin_dir(pin_dir)?;
        let new_guard = !pin_dir.join(MAP_GUARD).exists();
        let new_limit = !pin_dir.join(MAP_LIMIT).exists();
        let new_flood_limit = !pin_dir.join(MAP_FLOOD_LIMIT).exists();
        if !MAP_NAMES.iter().all(|name| pin_dir.join(name).exists()) {
            drop(load_object(pin_dir)?);
        }
        let mut dp = Self::from_pins(pin_dir)?;
        if new_guard {
            dp.close_guard()?;
        }
        if new_limit {
            dp.set_rate_limit(RateLimit::DEFAULT)?;
        }
        if new_flood_limit {
            dp.set_flood_limit(RateLimit::FLOOD_DEFAULT)?;
        }
        Ok(dp)
    }

    /// Opens the pinned maps if the data plane was set up (creating the maps a newer Herald
    /// added, as [`Dataplane::open`] does); `None` when nothing is pinned.
    pub fn open_existing(pin_dir: &Path) -> Result<Option<Dataplane>> {
        if !CORE_MAPS.iter().all(|name| pin_dir.join(name).exists()) {
            return Ok(None);
        }
        Self::open(pin_dir).map(Some)
    }

    fn from_pins(pin_dir: &Path) -> Result<Dataplane> {
        Ok(Dataplane {
            pin_dir: pin_dir.to_path_buf(),
            v4: open_pinned(pin_dir, MAP_V4)?,
            v6: open_pinned(pin_dir, MAP_V6)?,
            counters: open_pinned(pin_dir, MAP_COUNTERS)?,
            guard: open_pinned(pin_dir, MAP_GUARD)?,
            extra: open_pinned(pin_dir, MAP_EXTRA)?,
            claims4: open_pinned(pin_dir, MAP_CLAIMS4)?,
            claims6: open_pinned(pin_dir, MAP_CLAIMS6)?,
            limit: open_pinned(pin_dir, MAP_LIMIT)?,
            flood_limit: open_pinned(pin_dir, MAP_FLOOD_LIMIT)?,
            userspace: Vec::new(),
            refreshed: std::sync::Mutex::default(),
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Lets [`Dataplane::announce`] accept `iface` without an XDP link: this process answers
    /// there with [`fallback::Fallback`].
    pub fn serve_in_userspace(&mut self, iface: &Interface) {
        if !self.userspace.contains(&iface.index) {
            self.userspace.push(iface.index);
        }
    }

    /// Undoes [`Dataplane::serve_in_userspace`].
    pub fn stop_serving_in_userspace(&mut self, ifindex: u32) {
        self.userspace.retain(|i| *i != ifindex);
    }

    /// The XDP link pinned for `ifname`, if any, and its mode.
    pub fn attached_mode(&self, ifname: &str) -> Result<Option<AttachedMode>> {
        Ok(self.link_of(ifname)?.map(|(_, mode, _)| mode))
    }

    /// Unpins the XDP link of `ifname` (the kernel detaches the program), keeping its addresses
    /// and the maps: for handing the interface over to a userspace responder. True when a link
    /// was pinned.
    pub fn release_link(&self, ifname: &str) -> Result<bool> {
        let Some((_, _, path)) = self.link_of(ifname)? else {
            return Ok(false);
        };
        std::fs::remove_file(&path).map_err(|source| DataplaneError::PinDir { path, source })?;
        Ok(true)
    }

    pub(crate) fn link_of(&self, ifname: &str) -> Result<Option<(String, AttachedMode, PathBuf)>> {
        Ok(pins::link_pins(&self.pin_dir)?
            .into_iter()
            .find(|(name, _, _)| name == ifname))
    }

    /// Announces `ip` on `iface` with `mac` (the interface's own by default): the program
    /// answers for it from now on, and for IPv6 the NIC accepts its solicited-node group.
    pub fn announce(
        &mut self,
        iface: &Interface,
        ip: IpAddr,
        mac: Option<Mac>,
    ) -> Result<Announced> {
        if let Some(reason) = keys::unannounceable_reason(ip) {
            return Err(DataplaneError::AddressNotAnnounceable { ip, reason });
        }
        let unservable = match ip {
            IpAddr::V4(_) => iface.ipv4_unservable().map(|r| ("IPv4", r)),
            IpAddr::V6(_) => iface.ipv6_unservable().map(|r| ("IPv6", r)),
        };
        if let Some((family, reason)) = unservable {
            return Err(DataplaneError::FamilyUnsupported {
                iface: iface.name.clone(),
                family,
                reason,
            });
        }
        let mac = mac.unwrap_or(iface.mac);
        if !mac.is_usable_unicast() {
            return Err(DataplaneError::BadMac {
                mac: mac.to_string(),
                reason: "not a unicast address",
            });
        }
        if !self.userspace.contains(&iface.index)
            && self.link_of(&iface.name)?.is_none()
            && markers::live_responder(&self.pin_dir, &iface.name)?.is_none()
        {
            return Err(DataplaneError::NotAttached {
                iface: iface.name.clone(),
            });
        }
        let changed = match AddrKey::new(iface.index, ip) {
            AddrKey::V4(key) => upsert_announcement(&mut self.v4, &key, mac, MAP_V4)?,
            AddrKey::V6(key) => {
                iface.join_link_group(keys::solicited_node_mac(ip_v6(ip)))?;
                upsert_announcement(&mut self.v6, &key, mac, MAP_V6)?
            }
        };
        Ok(Announced { ip, mac, changed })
    }

    /// Stops answering for `ip` on `iface`; false when it was not announced. Leaves the
    /// solicited-node group unless another address announced there still needs it.
    pub fn withdraw(&mut self, iface: &Interface, ip: IpAddr) -> Result<bool> {
        self.withdraw_key(AddrKey::new(iface.index, ip), Some(iface))
    }

    fn withdraw_key(&mut self, key: AddrKey, iface: Option<&Interface>) -> Result<bool> {
        let was = match key {
            AddrKey::V4(k) => remove_entry(self.v4.remove(&k), MAP_V4)?,
            AddrKey::V6(k) => {
                let was = remove_entry(self.v6.remove(&k), MAP_V6)?;
                let group = keys::solicited_node_mac(ip_v6(key.ip()));
                let still_needed = self.keys()?.iter().any(|other| {
                    other.ifindex() == k.ifindex
                        && matches!(other, AddrKey::V6(_))
                        && keys::solicited_node_mac(ip_v6(other.ip())) == group
                });
                if let Some(iface) = iface.filter(|_| !still_needed) {
                    iface.leave_link_group(group)?;
                }
                was
            }
        };
        Ok(was)
    }

    /// Every announced key, IPv4 then IPv6.
    pub fn keys(&self) -> Result<Vec<AddrKey>> {
        let mut out = Vec::new();
        for key in self.v4.keys() {
            out.push(AddrKey::V4(key.map_err(map_err(MAP_V4))?));
        }
        for key in self.v6.keys() {
            out.push(AddrKey::V6(key.map_err(map_err(MAP_V6))?));
        }
        Ok(out)
    }

    /// Withdraws everything announced on `iface`; returns how many addresses.
    pub fn withdraw_all(&mut self, iface: &Interface) -> Result<usize> {
        let mut count = 0;
        for key in self
            .keys()?
            .into_iter()
            .filter(|k| k.ifindex() == iface.index)
        {
            count += usize::from(self.withdraw_key(key, Some(iface))?);
        }
        Ok(count)
    }

    /// Refreshes the guard: the program answers until `timeout` after now, unless refreshed.
    pub fn heartbeat(&mut self, timeout: Duration) -> Result<()> {
        let guard = Guard {
            heartbeat_ns: monotonic_ns(),
            timeout_ns: timeout.as_nanos().min(u128::from(u64::MAX)) as u64,
        };
        self.guard.set(0, &guard, 0).map_err(map_err(MAP_GUARD))
    }

    /// Turns the guard off: answers never stop for lack of a heartbeat.
    /// Closes the guard: nothing is answered until the next heartbeat.
    pub fn close_guard(&mut self) -> Result<()> {
        self.guard
            .set(0, &Guard::CLOSED, 0)
            .map_err(map_err(MAP_GUARD))
    }

    pub fn guard_off(&mut self) -> Result<()> {
        self.guard
            .set(0, &Guard::default(), 0)
            .map_err(map_err(MAP_GUARD))
    }

    pub fn guard_state(&self) -> Result<GuardState> {
        let guard = self.guard.get(&0, 0).map_err(map_err(MAP_GUARD))?;
        Ok(GuardState::of(guard, monotonic_ns()))
    }

    /// Addresses, MACs, counters, edge counters, per-source limits, guard and links.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut addresses = Vec::new();
        for key in self.keys()? {
            let per_cpu = match key {
                AddrKey::V4(k) => self.v4.get(&k, 0).map_err(map_err(MAP_V4))?,
                AddrKey::V6(k) => self.v6.get(&k, 0).map_err(map_err(MAP_V6))?,
            };
            let entry = sum_over_cpus(&per_cpu[..]);
            addresses.push(AddressInfo {
                iface: netdev::name_of(key.ifindex()),
                ifindex: key.ifindex(),
                ip: key.ip(),
                mac: Mac(entry.mac),
                requests: entry.requests,
                replies: entry.replies,
            });
        }
        addresses.sort_by_key(|a| (a.ifindex, a.ip));
        let mut slots = [0u64; COUNTER_SLOTS as usize];
        for (index, slot) in slots.iter_mut().enumerate() {
            let values = self
                .counters
                .get(&(index as u32), 0)
                .map_err(map_err(MAP_COUNTERS))?;
            *slot = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        let [arp_replies, na_replies, passed, malformed, silenced] = slots;
        let attachments = pins::link_pins(&self.pin_dir)?
            .into_iter()
            .map(|(iface, mode, path)| AttachmentInfo {
                present: netdev::index_of(&iface)
                    .is_some_and(|index| pins::pinned_link_ifindex(&path).ok() == Some(index)),
                iface,
                mode,
            })
            .collect::<Vec<_>>();
        let interfaces = interface_modes(&attachments, &markers::responders(&self.pin_dir)?);
        Ok(Snapshot {
            pin_dir: self.pin_dir.clone(),
            interfaces,
            attachments,
            addresses,
            counters: Counters {
                arp_replies,
                na_replies,
                passed,
                malformed,
                silenced,
            },
            edges: self.edge_counters()?,
            limits: Some(Limits {
                answers: self.rate_limit()?.into(),
                flood_guard: self.flood_limit()?.into(),
            }),
            guard: self.guard_state()?,
        })
    }
}

/// Detaches from `iface` (every interface when `None`): withdraws its addresses (leaving their
/// multicast groups), unpins its link (the kernel detaches the program when the last reference
/// goes) and, when no link remains, removes the maps and the pin directory.
pub fn detach(pin_dir: &Path, iface: Option<&str>) -> Result<Detached> {
    let mut report = Detached::default();
    // Maps that cannot be opened (another version's layout) must not block the detach: the
    // links are unpinned anyway and the maps removed with the last one.
    let mut dataplane = Dataplane::open_existing(pin_dir).unwrap_or_else(|e| {
        tracing::warn!("detaching without withdrawing addresses first: {e}");
        None
    });
    for (ifname, mode, path) in pins::link_pins(pin_dir)? {
        if iface.is_some_and(|wanted| wanted != ifname) {
            continue;
        }
        if let (Some(dp), Ok(interface)) = (dataplane.as_mut(), Interface::by_name(&ifname)) {
            report.withdrawn += dp.withdraw_all(&interface)?;
        }
        std::fs::remove_file(&path).map_err(|source| DataplaneError::PinDir { path, source })?;
        report.links.push((ifname, mode));
    }
    drop(dataplane);
    // A live userspace responder still reads the maps: they stay until it stops.
    let userspace_live = pin_dir.exists() && {
        markers::remove_dead_markers(pin_dir)?;
        markers::responders(pin_dir)?.iter().any(|r| r.alive)
    };
    report.userspace_still_serving = userspace_live;
    if pins::link_pins(pin_dir)?.is_empty() && pin_dir.exists() && !userspace_live {
        for name in MAP_NAMES {
            let path = pin_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DataplaneError::PinDir { path, source }),
            }
        }
        std::fs::remove_dir(pin_dir).map_err(|source| DataplaneError::PinDir {
            path: pin_dir.to_path_buf(),
            source,
        })?;
        report.maps_removed = true;
    }
    Ok(report)
}

fn ip_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}
