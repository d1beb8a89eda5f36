//! BFD's UDP sockets. Control packets arrive on port 3784 (single hop, RFC 5881) or 4784
//! (multihop, RFC 5883), read with `recvmsg` so each carries its TTL (or IPv6 hop limit): a
//! single-hop packet counts only with TTL 255 (the GTSM rule of RFC 5881 section 5), a multihop
//! one with at least the profile's `minimumTtl`. Each session sends from its own socket, bound
//! to a source port in 49152–65535 and sending with TTL 255.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Destination port of single-hop Control packets.
pub const SINGLE_HOP_PORT: u16 = 3784;
/// Destination port of multihop Control packets.
pub const MULTIHOP_PORT: u16 = 4784;
/// The source ports RFC 5881 section 4 allows.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// TTL / hop limit of every packet sent.
pub const TTL: u32 = 255;

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub from: SocketAddr,
    pub len: usize,
    /// TTL or hop limit; None when the kernel gave none (it always does with the options set).
    pub ttl: Option<u8>,
}

fn udp(domain: Domain) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A receiving socket on one port and family, with the TTL of each packet.
pub struct Listener {
    socket: UdpSocket,
    v6: bool,
}

impl Listener {
    /// Binds `[::]:port` (IPv6 only) or `0.0.0.0:port`.
    pub fn bind(port: u16, v6: bool) -> io::Result<Listener> {
        let (domain, addr) = if v6 {
            (
                Domain::IPV6,
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
            )
        } else {
            (
                Domain::IPV4,
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
            )
        };
        let socket = udp(domain)?;
        socket.set_reuse_address(true)?;
        let on: libc::c_int = 1;
        let (level, name) = if v6 {
            socket.set_only_v6(true)?;
            (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVTTL)
        };
        // SAFETY: setsockopt with a c_int value on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(&addr.into())?;
        Ok(Listener {
            socket: UdpSocket::from_std(socket.into())?,
            v6,
        })
    }

    /// The next datagram into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let v6 = self.v6;
        self.socket
            .async_io(Interest::READABLE, || {
                recv_with_ttl(self.socket.as_raw_fd(), buf, v6)
            })
            .await
    }
}

/// `recvmsg` with room for one TTL / hop-limit control message.
fn recv_with_ttl(fd: i32, buf: &mut [u8], v6: bool) -> io::Result<Received> {
    let mut from = socket2::SockAddrStorage::zeroed();
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // SAFETY: the storage is big enough for any socket address.
    msg.msg_name = std::ptr::from_mut(unsafe { from.view_as::<libc::sockaddr_storage>() }).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // size_t on glibc, socklen_t on musl: 64 bytes fit either.
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (want_level, want_type) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    let mut ttl = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen; the data of a TTL / hop-limit message is one c_int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == want_level && (*cmsg).cmsg_type == want_type {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                ttl = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    // SAFETY: the kernel wrote a socket address of msg_namelen bytes.
    let from = unsafe { SockAddr::new(from, msg.msg_namelen) };
    let from = from
        .as_socket()
        .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    Ok(Received {
        from,
        len: usize::try_from(n).unwrap_or(0),
        ttl,
    })
}

/// One session's sending socket: bound to `source` (or the kernel's choice of address) and a
/// port in [`SOURCE_PORTS`], connected to the peer's BFD port, TTL 255.
pub struct Sender {
    /// Sent on directly (non-blocking): a Tokio socket would report "would block" until it
    /// had been polled for writability once.
    socket: Socket,
}

impl Sender {
    /// `first_port` is where the search for a free source port starts (a random value spreads
    /// sessions over the range).
    pub fn connect(
        peer: IpAddr,
        multihop: bool,
        source: Option<IpAddr>,
        first_port: u16,
    ) -> io::Result<Sender> {
        let port = if multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let socket = match peer {
            IpAddr::V4(_) => {
                let s = udp(Domain::IPV4)?;
                s.set_ttl_v4(TTL)?;
                s
            }
            IpAddr::V6(_) => {
                let s = udp(Domain::IPV6)?;
                s.set_unicast_hops_v6(TTL)?;
                s
            }
        };
        let local = source.unwrap_or(match peer {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let offset = u32::from(first_port.wrapping_sub(*SOURCE_PORTS.start())) % span;
        let mut bound = Err(io::Error::from(io::ErrorKind::AddrInUse));
        for i in 0..span {
            let candidate = *SOURCE_PORTS.start() + ((offset + i) % span) as u16;
            bound = socket.bind(&SocketAddr::new(local, candidate).into());
            if bound.is_ok() {
                break;
            }
        }
        bound?;
        socket.connect(&SocketAddr::new(peer, port).into())?;
        Ok(Sender { socket })
    }

    /// Sends one packet now; a full socket buffer drops it (BFD resends on its own timer).
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        self.socket.send(payload).map(|_| ())
    }

    /// The address and port this socket sends from.
    pub fn local(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }
}
