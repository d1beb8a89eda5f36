//! Sends the gratuitous packets of an announcement through an AF_PACKET socket: a gratuitous ARP
//! request and reply for IPv4, an unsolicited Neighbor Advertisement (Override, to ff02::1, from
//! the interface's link-local address) for IPv6. The frames come from `lb_common`, the same code
//! the XDP program's replies are tested against.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::error::{DataplaneError, Result};
use super::keys::Mac;
use super::netdev::Interface;

/// An AF_PACKET socket bound to nothing; each frame names its interface. Protocol 0: it sends
/// only and never queues received frames.
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn open() -> Result<Sender> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(DataplaneError::Io {
                op: "AF_PACKET socket",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        Ok(Sender {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// One gratuitous round for `ip` on `iface` announcing `mac`; returns the packets sent
    /// (2 for IPv4, 1 for IPv6, as MetalLB counts them).
    pub fn announce(&self, iface: &Interface, ip: IpAddr, mac: Mac) -> Result<u32> {
        let mut buf = [0u8; 128];
        let fail = |op| {
            move |source| DataplaneError::Netdev {
                iface: iface.name.clone(),
                op,
                source,
            }
        };
        match ip {
            IpAddr::V4(v4) => {
                for reply in [false, true] {
                    let len = lb_common::write_gratuitous_arp(&mut buf, mac.0, v4.octets(), reply)
                        .ok_or_else(|| {
                            fail("building gratuitous ARP")(io::ErrorKind::InvalidData.into())
                        })?;
                    self.send(iface.index, &buf[..len], libc::ETH_P_ARP as u16)
                        .map_err(fail("sending gratuitous ARP"))?;
                }
                Ok(2)
            }
            IpAddr::V6(v6) => {
                let source =
                    iface
                        .link_local()
                        .ok_or_else(|| DataplaneError::FamilyUnsupported {
                            iface: iface.name.clone(),
                            family: "IPv6",
                            reason: "no IPv6 link-local address (IPv6 disabled?)".to_string(),
                        })?;
                let len =
                    lb_common::write_unsolicited_na(&mut buf, mac.0, source.octets(), v6.octets())
                        .ok_or_else(|| {
                            fail("building unsolicited NA")(io::ErrorKind::InvalidData.into())
                        })?;
                self.send(iface.index, &buf[..len], libc::ETH_P_IPV6 as u16)
                    .map_err(fail("sending unsolicited NA"))?;
                Ok(1)
            }
        }
    }

    /// Sends a complete Ethernet frame (destination MAC in its first six bytes).
    fn send(&self, ifindex: u32, frame: &[u8], ethertype: u16) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and addr are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
        }
        Ok(())
    }
}
