//! Interface facts and link-layer multicast membership through ioctls on a socket of the current
//! network namespace (no sysfs: `/sys/class/net` shows the namespace sysfs was mounted in, which
//! differs from ours under `nsenter --net`).

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::error::{DataplaneError, Result};
use super::keys::Mac;

/// What the data plane needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// `ARPHRD_*`: only Ethernet (1) carries ARP/NDP as the program parses it.
    pub hw_type: u16,
    pub noarp: bool,
    pub loopback: bool,
}

/// Checks a name before it reaches an ioctl (IFNAMSIZ includes the NUL).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(DataplaneError::InvalidInterfaceName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name.contains(['/', ':', '\0']) || name.chars().any(char::is_whitespace) {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

fn dgram_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid ifreq for every request used in this module.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            request as _,
            std::ptr::from_mut::<libc::ifreq>(req),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Interface {
    /// Looks an interface up by name in the current network namespace.
    pub fn by_name(name: &str) -> Result<Interface> {
        validate_name(name)?;
        let netdev = |op| {
            move |source| DataplaneError::Netdev {
                iface: name.to_string(),
                op,
                source,
            }
        };
        let sock = dgram_socket().map_err(netdev("socket"))?;
        let mut req = ifreq_for(name);
        if let Err(e) = ioctl(&sock, libc::SIOCGIFINDEX, &mut req) {
            return Err(if e.raw_os_error() == Some(libc::ENODEV) {
                DataplaneError::UnknownInterface(name.to_string())
            } else {
                netdev("SIOCGIFINDEX")(e)
            });
        }
        // SAFETY: SIOCGIFINDEX filled the ifindex member.
        let index = unsafe { req.ifr_ifru.ifru_ifindex } as u32;
        let mut req = ifreq_for(name);
        ioctl(&sock, libc::SIOCGIFHWADDR, &mut req).map_err(netdev("SIOCGIFHWADDR"))?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *dst = *src as u8;
        }
        let mut req = ifreq_for(name);
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(netdev("SIOCGIFFLAGS"))?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
        Ok(Interface {
            name: name.to_string(),
            index,
            mac: Mac(mac),
            hw_type: hw.sa_family,
            noarp: flags & libc::IFF_NOARP != 0,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        })
    }

    /// Why this interface cannot carry Herald's answers for IPv4, if it cannot.
    pub fn ipv4_unservable(&self) -> Option<String> {
        ethernet_unservable(self)
            .or_else(|| self.noarp.then(|| "interface has NOARP set".to_string()))
    }

    /// Why this interface cannot carry Herald's answers for IPv6 (the unsolicited NA needs a
    /// link-local source), if it cannot.
    pub fn ipv6_unservable(&self) -> Option<String> {
        ethernet_unservable(self).or_else(|| match self.link_local() {
            Some(_) => None,
            None => Some("no IPv6 link-local address (IPv6 disabled?)".to_string()),
        })
    }

    /// The interface's usable link-local address, from `/proc/net/if_inet6` (per namespace).
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        let table = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
        link_local_from_if_inet6(&table, &self.name)
    }

    /// Makes the NIC accept frames to `group` (SIOCADDMULTI). The membership is the device's,
    /// not the socket's: it outlives this process and shows in `ip maddr`. Adding a group the
    /// device already holds this way is a no-op in the kernel (one "global" reference).
    pub fn join_link_group(&self, group: Mac) -> Result<()> {
        self.link_group(libc::SIOCADDMULTI, "SIOCADDMULTI", group)
    }

    /// Drops the membership added by [`Interface::join_link_group`]; memberships the kernel
    /// holds for its own addresses are separate and stay.
    pub fn leave_link_group(&self, group: Mac) -> Result<()> {
        match self.link_group(libc::SIOCDELMULTI, "SIOCDELMULTI", group) {
            Err(DataplaneError::Netdev { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn link_group(&self, request: libc::c_ulong, op: &'static str, group: Mac) -> Result<()> {
        let netdev = |source| DataplaneError::Netdev {
            iface: self.name.clone(),
            op,
            source,
        };
        let sock = dgram_socket().map_err(netdev)?;
        let mut req = ifreq_for(&self.name);
        // SAFETY: writing the hwaddr member of a zeroed union.
        unsafe {
            req.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(group.0) {
                *dst = src as libc::c_char;
            }
        }
        ioctl(&sock, request, &mut req).map_err(netdev)
    }
}

impl Interface {
    /// The kernel driver behind the interface (`ETHTOOL_GDRVINFO`), e.g. `veth`, `mlx5_core`.
    pub fn driver(&self) -> io::Result<String> {
        /// `struct ethtool_drvinfo` (linux/ethtool.h).
        #[repr(C)]
        struct DrvInfo {
            cmd: u32,
            driver: [u8; 32],
            version: [u8; 32],
            fw_version: [u8; 32],
            bus_info: [u8; 32],
            erom_version: [u8; 32],
            reserved2: [u8; 12],
            n_priv_flags: u32,
            n_stats: u32,
            testinfo_len: u32,
            eedump_len: u32,
            regdump_len: u32,
        }
        const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        let sock = dgram_socket()?;
        // SAFETY: DrvInfo is plain old data; all-zero is a valid value.
        let mut info: DrvInfo = unsafe { std::mem::zeroed() };
        info.cmd = ETHTOOL_GDRVINFO;
        let mut req = ifreq_for(&self.name);
        req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut info).cast();
        ioctl(&sock, SIOCETHTOOL, &mut req)?;
        let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
        Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
    }
}

/// Packets the interface dropped on transmit (`tx_dropped` of `ip -s link`), from
/// `getifaddrs(3)`'s link statistics in the current network namespace. XDP_TX frames a driver
/// cannot send are counted here.
pub fn tx_dropped(index: u32) -> io::Result<u64> {
    /// The head of `struct rtnl_link_stats` (linux/if_link.h), what glibc's getifaddrs puts in
    /// `ifa_data` for `AF_PACKET` entries.
    #[repr(C)]
    struct LinkStatsHead {
        rx_packets: u32,
        tx_packets: u32,
        rx_bytes: u32,
        tx_bytes: u32,
        rx_errors: u32,
        tx_errors: u32,
        rx_dropped: u32,
        tx_dropped: u32,
    }
    let name = name_of(index).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned, which is alive until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        // SAFETY: ifa_addr and ifa_name are null or valid for the list's lifetime.
        let is_packet = !entry.ifa_addr.is_null()
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_PACKET;
        if !is_packet || entry.ifa_data.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string in the list.
        if unsafe { CStr::from_ptr(entry.ifa_name) }.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: for AF_PACKET entries ifa_data points at a struct rtnl_link_stats.
        let stats = unsafe { &*entry.ifa_data.cast::<LinkStatsHead>() };
        found = Some(u64::from(stats.tx_dropped));
        break;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
}

fn ethernet_unservable(iface: &Interface) -> Option<String> {
    if iface.loopback {
        return Some("loopback interface".to_string());
    }
    (iface.hw_type != libc::ARPHRD_ETHER)
        .then(|| format!("not an Ethernet interface (link type {})", iface.hw_type))
}

/// Parses `/proc/net/if_inet6` (hex address, ifindex, prefix length, scope, flags, name) for
/// the first link-scope address of `name` that did not fail duplicate address detection.
pub fn link_local_from_if_inet6(table: &str, name: &str) -> Option<Ipv6Addr> {
    const SCOPE_LINK: u32 = 0x20;
    const IFA_F_DADFAILED: u32 = 0x08;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [addr, _index, _plen, scope, flags, dev] = fields[..] else {
            return None;
        };
        if dev != name || u32::from_str_radix(scope, 16).ok()? != SCOPE_LINK {
            return None;
        }
        if u32::from_str_radix(flags, 16).ok()? & IFA_F_DADFAILED != 0 {
            return None;
        }
        Some(Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?))
    })
}

/// The name of interface `index` in the current namespace, if it exists.
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The index of interface `name`, if it exists.
pub fn index_of(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000001 02 40 00 80     eth0
fe80000000000000aa00bbfffecc0001 02 40 20 80     eth0
fe800000000000000000000000000002 03 40 20 08     eth1
fe800000000000000000000000000003 04 40 20 c0     eth2
";

    #[test]
    fn link_local_table() {
        assert_eq!(
            link_local_from_if_inet6(IF_INET6, "eth0"),
            Some("fe80::aa00:bbff:fecc:1".parse().unwrap())
        );
        // DAD failed: unusable.
        assert_eq!(link_local_from_if_inet6(IF_INET6, "eth1"), None);
        // Tentative (0x40) still usable as the source of a frame we build ourselves.
        assert_eq!(
            link_local_from_if_inet6(IF_INET6, "eth2"),
            Some("fe80::3".parse().unwrap())
        );
        assert_eq!(link_local_from_if_inet6(IF_INET6, "lo"), None);
        assert_eq!(link_local_from_if_inet6(IF_INET6, "eth9"), None);
        assert_eq!(link_local_from_if_inet6("garbage line\n", "eth0"), None);
    }

    #[test]
    fn interface_names() {
        assert!(validate_name("eth0").is_ok());
        assert!(validate_name("veth-herald-123").is_ok());
        for bad in ["", "a-name-longer-than15", "a/b", "a b", "a:1"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_is_found_and_refused_for_both_families() {
        // `lo` exists in every network namespace.
        let lo = Interface::by_name("lo").expect("lo exists");
        assert!(lo.loopback);
        assert!(lo.ipv4_unservable().is_some());
        assert!(lo.ipv6_unservable().is_some());
        assert_eq!(index_of("lo"), Some(lo.index));
        assert_eq!(name_of(lo.index).as_deref(), Some("lo"));
    }

    #[test]
    fn loopback_driver_and_tx_counter_are_read() {
        let lo = Interface::by_name("lo").expect("lo exists");
        // The loopback device has no ethtool driver info; the call fails cleanly.
        assert!(lo.driver().is_err());
        assert!(tx_dropped(lo.index).is_ok());
        assert!(tx_dropped(u32::MAX).is_err());
    }

    #[test]
    fn unknown_interface_is_named() {
        let err = Interface::by_name("herald-nope0").unwrap_err();
        assert!(
            matches!(err, DataplaneError::UnknownInterface(ref n) if n == "herald-nope0"),
            "{err}"
        );
    }
}
