//! What the client namespace sees, measured from this process: a thread enters the namespace
//! (`setns` affects only the calling thread) and opens its sockets there — a raw AF_PACKET socket
//! for ARP requests/replies with precise timestamps, and TCP connections through a LoadBalancer IP.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const ETH_P_ARP: u16 = 0x0806;

/// Runs `f` on a thread inside network namespace `netns` and returns its result.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let file = File::open(format!("/run/netns/{netns}"))
        .with_context(|| format!("opening network namespace {netns}"))?;
    std::thread::spawn(move || {
        enter(&file)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// Spawns `f` on a thread inside `netns` (for probes running while the caller injects a fault).
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let file = File::open(format!("/run/netns/{netns}"))
        .with_context(|| format!("opening network namespace {netns}"))?;
    Ok(std::thread::spawn(move || {
        enter(&file)?;
        f()
    }))
}

fn enter(file: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub type Mac = [u8; 6];

pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An ARP reply seen by the client: when, and the MAC it named.
#[derive(Clone, Copy, Debug)]
pub struct ArpAnswer {
    pub at: Instant,
    pub mac: Mac,
}

/// ARP requests for one IPv4 address from the client's interface, and the replies addressed to
/// the client (gratuitous ARP, which targets the announced address itself, is not counted).
pub struct ArpProber {
    fd: i32,
    ifindex: i32,
    mac: Mac,
    src: Ipv4Addr,
    target: Ipv4Addr,
}

impl Drop for ArpProber {
    fn drop(&mut self) {
        // SAFETY: closing our own socket.
        unsafe {
            libc::close(self.fd);
        }
    }
}

impl ArpProber {
    /// Opens the prober on `iface` of the current thread's namespace.
    pub fn open(iface: &str, src: Ipv4Addr, target: Ipv4Addr) -> Result<ArpProber> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let mut prober = ArpProber {
            fd,
            ifindex: 0,
            mac: [0; 6],
            src,
            target,
        };
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: NUL-terminated name.
        prober.ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if prober.ifindex == 0 {
            bail!("no interface {iface} in this namespace");
        }
        // SAFETY: ifreq is plain data; SIOCGIFHWADDR fills ifr_hwaddr.
        unsafe {
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(iface.as_bytes()) {
                *dst = *src as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) != 0 {
                bail!("SIOCGIFHWADDR {iface}: {}", std::io::Error::last_os_error());
            }
            for (dst, src) in prober.mac.iter_mut().zip(req.ifr_ifru.ifru_hwaddr.sa_data) {
                *dst = src as u8;
            }
        }
        let addr = prober.link_addr([0; 6]);
        // SAFETY: binding to a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            bail!("binding to {iface}: {}", std::io::Error::last_os_error());
        }
        Ok(prober)
    }

    fn link_addr(&self, dst: Mac) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        addr
    }

    /// Broadcasts one ARP request for the target.
    pub fn send_request(&self) -> Result<()> {
        let frame = request_frame(self.mac, self.src, self.target);
        let addr = self.link_addr([0xff; 6]);
        // SAFETY: sending from a valid buffer to a valid sockaddr_ll.
        let sent = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            bail!("sending ARP request: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Collects replies for the target addressed to us until `until`, and then every reply
    /// already queued on the socket: a prober thread scheduled late (a loaded machine) still
    /// counts the replies that arrived in time instead of leaving them to the next round.
    ///
    /// ARP replies carry nothing that names the request they answer (every field is copied from
    /// the same request), so a round is what arrived before the next request goes out.
    pub fn replies_until(&self, until: Instant) -> Result<Vec<ArpAnswer>> {
        let mut answers = Vec::new();
        loop {
            let now = Instant::now();
            if now >= until {
                while let Some(frame) = self.recv_queued()? {
                    answers.extend(frame);
                }
                return Ok(answers);
            }
            let wait_ms = (until - now).as_millis().clamp(1, 1000) as i32;
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, wait_ms) };
            if ready > 0 {
                // Spurious readiness is fine: the receive does not block.
                if let Some(frame) = self.recv_queued()? {
                    answers.extend(frame);
                }
            }
        }
    }

    /// One frame already queued on the socket without waiting: `None` when none is queued,
    /// `Some(None)` for a frame that is not a reply to us about the target.
    #[allow(
        clippy::option_option,
        reason = "None: nothing queued; Some(None): a frame not for us"
    )]
    fn recv_queued(&self) -> Result<Option<Option<ArpAnswer>>> {
        let mut buf = [0u8; 1514];
        // SAFETY: receiving into a buffer we own.
        let len = unsafe {
            libc::recv(
                self.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if len < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock => Ok(None),
                std::io::ErrorKind::Interrupted => Ok(Some(None)),
                _ => Err(error).context("receiving ARP replies"),
            };
        }
        let at = Instant::now();
        let frame = &buf[..len as usize];
        Ok(Some(
            reply_mac(frame, self.src, self.target).map(|mac| ArpAnswer { at, mac }),
        ))
    }
}

/// A broadcast Ethernet frame carrying an ARP request from (`mac`, `src`) for `target`.
fn request_frame(mac: Mac, src: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, hardware length 6, protocol length 4, operation 1 (request).
    frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&src.octets());
    frame[38..42].copy_from_slice(&target.octets());
    frame
}

/// The sender MAC of an ARP reply saying where `target` is, addressed to `src` (gratuitous ARP,
/// whose target is the announced address itself, does not count as an answer).
fn reply_mac(frame: &[u8], src: Ipv4Addr, target: Ipv4Addr) -> Option<Mac> {
    if frame.len() < 42
        || frame[12..14] != ETH_P_ARP.to_be_bytes()
        || frame[20..22] != [0, 2]
        || frame[28..32] != target.octets()
        || frame[38..42] != src.octets()
    {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[22..28]);
    Some(mac)
}

/// Every `interval`, one ARP request; per interval, the MACs that answered it (empty = unanswered).
pub struct ArpRound {
    pub answers: Vec<ArpAnswer>,
}

impl ArpRound {
    pub fn macs(&self) -> Vec<Mac> {
        let mut macs: Vec<Mac> = self.answers.iter().map(|a| a.mac).collect();
        macs.sort_unstable();
        macs.dedup();
        macs
    }
}

/// Probes `target` from the current thread's namespace every `interval` until `stop()` is true
/// or `max` passes.
pub fn probe_arp_rounds(
    iface: &str,
    src: Ipv4Addr,
    target: Ipv4Addr,
    interval: Duration,
    max: Duration,
    mut stop: impl FnMut(&[ArpRound]) -> bool,
) -> Result<Vec<ArpRound>> {
    let prober = ArpProber::open(iface, src, target)?;
    let start = Instant::now();
    let mut rounds: Vec<ArpRound> = Vec::new();
    while start.elapsed() < max && !stop(&rounds) {
        prober.send_request()?;
        // The round is timed from when the request has left (a preemption before the send
        // must not eat into the wait for its reply).
        let sent = Instant::now();
        let answers = prober.replies_until(sent + interval)?;
        rounds.push(ArpRound { answers });
    }
    Ok(rounds)
}

/// One HTTP/1.0 request to `addr`: the body the backend answers (its node name).
pub fn tcp_hello(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n")
        .with_context(|| format!("sending to {addr}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading from {addr}"))?;
    Ok(http_body(&text).trim().to_string())
}

/// The body of an HTTP response (everything when there is no header block).
fn http_body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body)
}

/// A TCP probe's outcome as `lab status --json` shows it.
pub(super) fn tcp_json(tcp: Result<String>) -> serde_json::Value {
    match tcp {
        Ok(node) => serde_json::json!({"ok": true, "served_by": node}),
        Err(e) => serde_json::json!({"ok": false, "error": format!("{e:#}")}),
    }
}

/// An address as it stands before `:port` (IPv6 in brackets).
pub(super) fn fmt_addr(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_MAC: Mac = [2, 0, 0, 0, 0, 0x64];
    const NODE_MAC: Mac = [2, 0, 0, 0, 0, 0x11];
    const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

    #[test]
    fn the_http_body_is_the_node_name() {
        assert_eq!(
            http_body("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nnode-a\n"),
            "node-a\n"
        );
        assert_eq!(http_body("node-b\n"), "node-b\n");
    }

    /// The reply a responder builds from a request: swap, operation 2, its MAC as sender.
    fn answer(request: &[u8; 42], mac: Mac) -> [u8; 42] {
        let mut reply = *request;
        reply[0..6].copy_from_slice(&request[6..12]);
        reply[6..12].copy_from_slice(&mac);
        reply[21] = 2;
        reply[22..28].copy_from_slice(&mac);
        reply[28..32].copy_from_slice(&request[38..42]);
        reply[32..38].copy_from_slice(&request[22..28]);
        reply[38..42].copy_from_slice(&request[28..32]);
        reply
    }

    #[test]
    fn request_is_a_broadcast_arp_request_for_the_target() {
        let f = request_frame(CLIENT_MAC, CLIENT, VIP);
        assert_eq!(f[0..6], [0xff; 6]);
        assert_eq!(f[6..12], CLIENT_MAC);
        assert_eq!(f[12..14], [0x08, 0x06]);
        assert_eq!(f[20..22], [0, 1]);
        assert_eq!(f[28..32], CLIENT.octets());
        assert_eq!(f[32..38], [0; 6]);
        assert_eq!(f[38..42], VIP.octets());
    }

    #[test]
    fn only_replies_to_us_about_the_target_count() {
        let request = request_frame(CLIENT_MAC, CLIENT, VIP);
        let reply = answer(&request, NODE_MAC);
        assert_eq!(reply_mac(&reply, CLIENT, VIP), Some(NODE_MAC));
        assert_eq!(reply_mac(&request, CLIENT, VIP), None, "our own request");
        assert_eq!(
            reply_mac(&reply, CLIENT, Ipv4Addr::new(198, 51, 100, 11)),
            None
        );
        assert_eq!(reply_mac(&reply[..41], CLIENT, VIP), None, "truncated");
        let mut gratuitous = reply;
        gratuitous[38..42].copy_from_slice(&VIP.octets());
        assert_eq!(reply_mac(&gratuitous, CLIENT, VIP), None, "gratuitous ARP");
    }
}
