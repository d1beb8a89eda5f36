//! Gathers [`InterfaceFacts`] for every interface of the current network namespace through
//! `getifaddrs(3)` (netlink underneath, so it follows the namespace the process runs in, unlike
//! `/sys/class/net` under `nsenter --net`). The bridge/bond `master` link is read from sysfs only
//! when sysfs shows this namespace (its ifindex matches), as MetalLB reads it.

use std::collections::BTreeMap;
use std::ffi::CStr;

use super::interfaces::InterfaceFacts;

#[derive(Default)]
struct Partial {
    index: u32,
    flags: u32,
    ethernet: bool,
    link_local: bool,
}

/// Facts of every interface, sorted by name. An error of `getifaddrs` itself is returned.
pub fn scan() -> std::io::Result<Vec<InterfaceFacts>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut by_name: BTreeMap<String, Partial> = BTreeMap::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned; each node is valid until freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let partial = by_name.entry(name).or_default();
        partial.flags = entry.ifa_flags;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        match family {
            libc::AF_PACKET => {
                // SAFETY: AF_PACKET entries carry a sockaddr_ll.
                #[allow(
                    clippy::cast_ptr_alignment,
                    reason = "getifaddrs aligns each address for its family"
                )]
                let ll = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
                partial.index = ll.sll_ifindex as u32;
                partial.ethernet = ll.sll_hatype == libc::ARPHRD_ETHER;
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 entries carry a sockaddr_in6.
                #[allow(
                    clippy::cast_ptr_alignment,
                    reason = "getifaddrs aligns each address for its family"
                )]
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                let addr = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if addr.is_unicast_link_local() {
                    partial.link_local = true;
                }
            }
            _ => {}
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(by_name
        .into_iter()
        .map(|(name, p)| {
            let flags = p.flags as libc::c_int;
            InterfaceFacts {
                has_master: has_master(&name, p.index),
                up: flags & libc::IFF_UP != 0,
                broadcast: flags & libc::IFF_BROADCAST != 0,
                noarp: flags & libc::IFF_NOARP != 0,
                ethernet: p.ethernet && flags & libc::IFF_LOOPBACK == 0,
                ipv6_link_local: p.link_local,
                name,
            }
        })
        .collect())
}

fn has_master(name: &str, index: u32) -> bool {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let same_namespace = std::fs::read_to_string(dir.join("ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(index);
    same_namespace && dir.join("master").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every namespace has a loopback: up, not Ethernet, never eligible.
    #[test]
    fn scan_sees_loopback() {
        let facts = scan().unwrap();
        let lo = facts.iter().find(|f| f.name == "lo").expect("lo listed");
        assert!(lo.up);
        assert!(!lo.ethernet);
        assert!(!lo.has_master);
    }
}
