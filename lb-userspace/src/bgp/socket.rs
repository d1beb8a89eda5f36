//! The TCP connection of a BGP session: source address, TTL, VRF device and TCP MD5 signatures
//! (RFC 2385) set on the socket before it connects.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

/// The first IPv4 address on the interface that holds `local`, if any: MetalLB's router ID
/// for a session whose transport is IPv6. Addresses are compared without their scope, as
/// MetalLB compares them: a link-local address several interfaces share, or one present in
/// two VRFs, finds the first of them (whose IPv4 address is still one of this node's).
pub fn ipv4_beside(local: IpAddr) -> Option<Ipv4Addr> {
    let ip_of = |a: &nix::ifaddrs::InterfaceAddress| -> Option<IpAddr> {
        let address = a.address.as_ref()?;
        if let Some(v4) = address.as_sockaddr_in() {
            return Some(IpAddr::V4(v4.ip()));
        }
        address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    };
    let all: Vec<_> = nix::ifaddrs::getifaddrs().ok()?.collect();
    let interface = &all.iter().find(|a| ip_of(a) == Some(local))?.interface_name;
    all.iter()
        .filter(|a| &a.interface_name == interface)
        .find_map(|a| match ip_of(a)? {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

/// How to reach one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub peer: SocketAddr,
    pub source: Option<IpAddr>,
    /// TTL / hop limit of every segment; `None` leaves the system default (see
    /// `sessions::session_ttl`).
    pub ttl: Option<u32>,
    /// A VRF (or any) device to bind the socket to.
    pub device: Option<String>,
    pub password: Option<Password>,
    pub timeout: Duration,
}

/// A TCP MD5 key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: String) -> Self {
        Password(value)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The kernel's longest TCP MD5 key (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (the prefix and ifindex fields are unused: flags 0).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Connects to the peer with every socket option in place before the SYN.
pub async fn connect(dial: &Dial) -> io::Result<TcpStream> {
    let socket = match dial.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let sock = SockRef::from(&socket);
    if let Some(device) = &dial.device {
        sock.bind_device(Some(device.as_bytes()))?;
    }
    if let Some(ttl) = dial.ttl {
        match dial.peer {
            SocketAddr::V4(_) => sock.set_ttl_v4(ttl)?,
            SocketAddr::V6(_) => sock.set_unicast_hops_v6(ttl)?,
        }
    }
    sock.set_tcp_nodelay(true)?;
    if let Some(password) = &dial.password {
        set_md5(&socket, dial.peer.ip(), password)?;
    }
    if let Some(source) = dial.source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    match tokio::time::timeout(dial.timeout, socket.connect(dial.peer)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {:?}", dial.timeout),
        )),
    }
}

/// Signs every segment to `peer` with `password` (`TCP_MD5SIG`).
fn set_md5(socket: &impl AsRawFd, peer: IpAddr, password: &Password) -> io::Result<()> {
    let key = password.0.as_bytes();
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the TCP MD5 password is longer than {MD5_MAX_KEY_LEN} bytes"),
        ));
    }
    // SAFETY: all-zero bytes are a valid `tcp_md5sig` (plain integers and arrays).
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sockaddr = socket2::SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: `SockAddr` holds a `sockaddr_storage`-sized buffer of `len()` valid bytes, and
    // `sig.addr` is a `sockaddr_storage`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sockaddr.as_ptr().cast::<u8>(),
            std::ptr::addr_of_mut!(sig.addr).cast::<u8>(),
            sockaddr.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a properly sized `tcp_md5sig` for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_beside_an_ipv6_address_is_read_from_its_interface() {
        // The loopback interface holds 127.0.0.1, and ::1 unless IPv6 is off on this host.
        let loopback_v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
        if loopback_v6 {
            assert_eq!(
                ipv4_beside(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
                Some(Ipv4Addr::LOCALHOST)
            );
        } else {
            eprintln!("no ::1 on this host: only the negative case is checked");
        }
        // An address no interface holds.
        assert_eq!(ipv4_beside("2001:db8::dead".parse().unwrap()), None);
    }

    #[test]
    fn passwords_never_print() {
        let p = Password::new("s3cret".into());
        assert_eq!(format!("{p:?}"), "Password(..)");
    }

    #[test]
    fn the_md5_struct_matches_the_kernel_layout() {
        // sizeof(struct tcp_md5sig) on Linux: 128 + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[tokio::test]
    async fn a_key_is_accepted_by_the_kernel_and_an_overlong_one_is_refused() {
        let socket = TcpSocket::new_v4().unwrap();
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        set_md5(&socket, peer, &Password::new("s3cret".into())).unwrap();
        let long = Password::new("x".repeat(MD5_MAX_KEY_LEN + 1));
        let err = set_md5(&socket, peer, &long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn nobody_listening_fails_with_the_os_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dial = Dial {
            peer: addr,
            source: None,
            ttl: Some(1),
            device: None,
            password: None,
            timeout: Duration::from_secs(5),
        };
        let err = connect(&dial).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
