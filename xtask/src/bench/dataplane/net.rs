//! The raw I/O: an AF_PACKET sender (`sendmmsg`, qdisc bypassed) and an AF_PACKET receive ring
//! (TPACKET_V2) whose classic BPF filter keeps only ARP replies and Neighbor Advertisements.
//! Sockets are created inside a network namespace by a thread that joined it; a socket keeps its
//! namespace for life, so the threads that use them need not join it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

const ETH_P_ALL: u16 = 0x0003;
const TPACKET_V2: libc::c_int = 1;
/// Each ring frame holds the TPACKET_V2 header plus the first bytes of a reply.
const FRAME_SIZE: usize = 256;
const BLOCK_SIZE: usize = 1 << 16;
const BLOCKS: usize = 64;
/// Bytes of each reply copied into the ring: enough for the NA's target address.
const SNAPLEN: u32 = 96;

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
pub fn join_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread that joined the network namespace `/run/netns/<name>`.
pub fn in_netns<R: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<R> {
    let name = name.to_string();
    std::thread::spawn(move || {
        join_netns(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in a network namespace panicked"))?
}

/// Runs `script` with `sh` in network namespace `netns` (the host's when None), with that
/// namespace's sysfs on `/sys` writable. A hostNetwork pod in the namespace (a real node's speaker) has the namespace's sysfs
/// mounted read-only, and every sysfs mount of one namespace shares that read-only superblock,
/// so the script's own mount is made writable for its run and read-only again afterwards (the
/// pod's mount keeps its own read-only flag throughout). Returns the script's stdout.
pub fn sysfs_sh(netns: Option<&str>, script: &str) -> Result<String> {
    let Some(netns) = netns else {
        return sh_output(
            std::process::Command::new("sh").args(["-c", script]),
            "host",
            script,
        );
    };
    let wrapped = format!(
        "mount -t sysfs sysfs /sys || exit 1\n\
         was=$(awk '$2==\"/sys\"{{o=$4}} END{{split(o,a,\",\"); print a[1]}}' /proc/self/mounts)\n\
         [ \"$was\" = ro ] && mount -o remount,rw /sys\n\
         ( {script} ); rc=$?\n\
         [ \"$was\" = ro ] && mount -o remount,ro /sys\n\
         exit $rc\n"
    );
    sh_output(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["unshare", "-m", "sh", "-c", &wrapped]),
        netns,
        script,
    )
}

/// The stdout of `cmd`, or its stderr as the error of `script` in `place`.
fn sh_output(cmd: &mut std::process::Command, place: &str, script: &str) -> Result<String> {
    let out = cmd.output().context("running sh")?;
    if !out.status.success() {
        bail!(
            "in {place}: {script}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A set of CPUs, as the affinity calls take and give it.
pub type Cpus = std::collections::BTreeSet<usize>;

/// Pins thread `tid` (any process; 0: the calling thread) to `cpu`.
pub fn pin_thread(tid: u32, cpu: usize) -> Result<()> {
    set_affinity(tid as libc::pid_t, &Cpus::from([cpu]))
        .with_context(|| format!("sched_setaffinity(thread {tid}, cpu {cpu})"))
}

/// The CPUs thread `tid` may run on; `None` where it cannot be read (gone).
pub fn affinity(tid: libc::pid_t) -> Option<Cpus> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &raw mut set) == 0)
            .then_some(set)
    }?;
    Some(cpus(&set))
}

/// Lets thread `tid` (any process; 0: the calling thread) run on `cpus` only.
pub fn set_affinity(tid: libc::pid_t, cpus: &Cpus) -> io::Result<()> {
    let set = set_of(cpus);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn cpus(set: &libc::cpu_set_t) -> Cpus {
    // SAFETY: CPU_ISSET reads inside the set for every index below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

fn set_of(cpus: &Cpus) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it for indices
    // below CPU_SETSIZE and panics on others.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

/// The numeric entries of a /proc directory (processes, or one process's threads).
pub fn numbered(dir: &str) -> Vec<libc::pid_t> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    pin_thread(0, cpu)?;
    // Sleeps between paced batches should end when asked, not 50 µs later.
    // SAFETY: prctl on the calling thread with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
    Ok(())
}

/// Nice -20 for the calling thread: the machine is shared with builds, and the bench measures
/// packet paths, not the scheduler's fairness to them.
pub fn raise_priority() {
    // SAFETY: gettid/setpriority on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -20);
    }
}

/// CLOCK_REALTIME in ns: the clock the kernel stamps ring frames with.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn ifindex(ifname: &str) -> Result<i32> {
    let c = std::ffi::CString::new(ifname).context("interface name")?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("interface {ifname}: {}", io::Error::last_os_error());
    }
    Ok(idx as i32)
}

fn packet_socket(protocol: u16) -> Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_opt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> Result<()> {
    // SAFETY: value points to a T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref::<T>(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("setsockopt {what}: {}", io::Error::last_os_error());
    }
    Ok(())
}

fn bind(fd: &OwnedFd, protocol: u16, ifindex: i32) -> Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("bind AF_PACKET: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Transmit-only packet socket on one interface.
pub struct Sender {
    fd: OwnedFd,
}

/// Outcome of one `Sender::send`.
pub enum Sent {
    /// This many frames went out (all or the first part of the batch).
    Frames(usize),
    /// The device refused the next frame (queue full / backpressure): it is lost.
    Refused,
}

impl Sender {
    /// Opens the sender on `ifname` of the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Sender> {
        // Protocol 0: this socket receives nothing.
        let fd = packet_socket(0)?;
        set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1i32,
            "PACKET_QDISC_BYPASS",
        )?;
        bind(&fd, 0, ifindex(ifname)?)?;
        Ok(Sender { fd })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Sends the first `count` prepared frames with one `sendmmsg`.
    pub fn send(&self, batch: &mut Batch, count: usize) -> io::Result<Sent> {
        let count = count.min(batch.msgs.len());
        // SAFETY: batch.msgs holds `count` valid headers whose iovecs point at frames that
        // outlive the batch (see Batch::new).
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                batch.msgs.as_mut_ptr(),
                count as libc::c_uint,
                0,
            )
        };
        if n >= 0 {
            return Ok(Sent::Frames(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN | libc::ENETDOWN) => Ok(Sent::Refused),
            _ => Err(err),
        }
    }
}

/// `sendmmsg` headers built once per step, so the send loop does no per-batch work.
pub struct Batch<'a> {
    _iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    _frames: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Batch<'a> {
    pub fn new(frames: &[&'a [u8]]) -> Batch<'a> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // The iovecs live in iovs' heap buffer, which never moves or grows after this.
        let msgs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: a zeroed mmsghdr is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Batch {
            _iovs: iovs,
            msgs,
            _frames: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }
}

/// Receive ring on one interface: counts every reply (kernel-side, even if the ring overflows)
/// and hands the first bytes of each, with the kernel's receive time, to `drain`.
pub struct ReplyRing {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    next: usize,
}

// SAFETY: the mapping is owned by this value and only touched through &mut self.
unsafe impl Send for ReplyRing {}

/// One captured reply.
pub struct Captured<'a> {
    pub bytes: &'a [u8],
    /// CLOCK_REALTIME when the kernel received it.
    pub received_ns: u64,
}

impl ReplyRing {
    pub fn open(ifname: &str) -> Result<ReplyRing> {
        let fd = packet_socket(ETH_P_ALL)?;
        // Filter first, so nothing else is queued between socket() and bind().
        let filter = reply_filter();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        set_opt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog,
            "SO_ATTACH_FILTER",
        )?;
        set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1i32,
            "PACKET_IGNORE_OUTGOING",
        )?;
        set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &TPACKET_V2,
            "PACKET_VERSION",
        )?;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: BLOCKS as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: (BLOCK_SIZE / FRAME_SIZE * BLOCKS) as u32,
        };
        set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "PACKET_RX_RING",
        )?;
        let map_len = BLOCK_SIZE * BLOCKS;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            bail!("mmap PACKET_RX_RING: {}", io::Error::last_os_error());
        }
        bind(&fd, ETH_P_ALL, ifindex(ifname)?)?;
        let mut ring = ReplyRing {
            fd,
            map: map.cast(),
            map_len,
            next: 0,
        };
        ring.take_counts()?;
        Ok(ring)
    }

    fn frames(&self) -> usize {
        self.map_len / FRAME_SIZE
    }

    /// Replies that passed the filter and ring overflows since the last call (the kernel resets
    /// its counters on each read). Counts include frames the ring had no room for.
    pub fn take_counts(&mut self) -> Result<(u64, u64)> {
        take_counts(&self.fd)
    }

    /// A handle that reads the counters from another thread.
    pub fn counter(&self) -> Result<Counter> {
        Ok(Counter {
            fd: self.fd.try_clone().context("dup ring socket")?,
        })
    }

    /// Waits up to `timeout_ms` for replies, then hands each ready one to `each`.
    pub fn drain(&mut self, timeout_ms: i32, mut each: impl FnMut(Captured<'_>)) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        loop {
            let frame_off = frame_offset(self.next);
            // SAFETY: frame_off + FRAME_SIZE is inside the mapping; the kernel hands a frame to
            // us by setting TP_STATUS_USER, and we hand it back by writing TP_STATUS_KERNEL.
            unsafe {
                let hdr = self.map.add(frame_off).cast::<libc::tpacket2_hdr>();
                let status = std::ptr::read_volatile(&raw const (*hdr).tp_status);
                if status & libc::TP_STATUS_USER == 0 {
                    break;
                }
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                let mac = usize::from((*hdr).tp_mac);
                let len = ((*hdr).tp_snaplen as usize).min(FRAME_SIZE.saturating_sub(mac));
                let bytes = std::slice::from_raw_parts(self.map.add(frame_off + mac), len);
                let received_ns =
                    u64::from((*hdr).tp_sec) * 1_000_000_000 + u64::from((*hdr).tp_nsec);
                each(Captured { bytes, received_ns });
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                std::ptr::write_volatile(&raw mut (*hdr).tp_status, libc::TP_STATUS_KERNEL);
            }
            self.next = (self.next + 1) % self.frames();
        }
    }
}

fn frame_offset(index: usize) -> usize {
    let per_block = BLOCK_SIZE / FRAME_SIZE;
    (index / per_block) * BLOCK_SIZE + (index % per_block) * FRAME_SIZE
}

/// Reads (and resets) a packet socket's PACKET_STATISTICS.
pub struct Counter {
    fd: OwnedFd,
}

impl Counter {
    pub fn take(&self) -> Result<(u64, u64)> {
        take_counts(&self.fd)
    }
}

fn take_counts(fd: &OwnedFd) -> Result<(u64, u64)> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: st/len describe a tpacket_stats buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        bail!("PACKET_STATISTICS: {}", io::Error::last_os_error());
    }
    Ok((u64::from(st.tp_packets), u64::from(st.tp_drops)))
}

impl Drop for ReplyRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what open() mapped.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// Classic BPF: accept ARP operation 2 and ICMPv6 type 136 (without extension headers), first
/// SNAPLEN bytes; drop everything else before it costs a copy.
pub fn reply_filter() -> Vec<libc::sock_filter> {
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(LDH_ABS, 0, 0, 12),    // 0: ethertype
        op(JEQ_K, 0, 2, 0x0806),  // 1: ARP → 2, else → 4
        op(LDH_ABS, 0, 0, 20),    // 2: ARP operation
        op(JEQ_K, 5, 6, 2),       // 3: reply → 9 accept, else → 10 drop
        op(JEQ_K, 0, 5, 0x86dd),  // 4: IPv6 → 5, else → 10 drop
        op(LDB_ABS, 0, 0, 20),    // 5: next header
        op(JEQ_K, 0, 3, 58),      // 6: ICMPv6 → 7, else → 10 drop
        op(LDB_ABS, 0, 0, 54),    // 7: ICMPv6 type
        op(JEQ_K, 0, 1, 136),     // 8: NA → 9, else → 10 drop
        op(RET_K, 0, 0, SNAPLEN), // 9: accept
        op(RET_K, 0, 0, 0),       // 10: drop
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_set_read_back_is_the_set_written() {
        for cpus_in in [vec![0], vec![1, 5, 63], vec![0, 64, 1023]] {
            let cpus_in: Cpus = cpus_in.into_iter().collect();
            assert_eq!(cpus(&set_of(&cpus_in)), cpus_in);
        }
    }

    #[test]
    fn a_pinned_thread_reads_back_pinned() {
        std::thread::spawn(|| {
            pin_thread(0, 0).unwrap();
            assert_eq!(affinity(0), Some(Cpus::from([0])));
        })
        .join()
        .unwrap();
    }

    /// A tiny interpreter for the instructions `reply_filter` uses, to check its jumps.
    fn run(filter: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = filter[pc];
            let k = i.k as usize;
            match i.code {
                0x28 => {
                    a = pkt
                        .get(k..k + 2)
                        .map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])));
                }
                0x30 => a = pkt.get(k).copied().map_or(0, u32::from),
                0x15 => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn filter_keeps_only_arp_replies_and_neighbor_advertisements() {
        use super::super::frames::*;
        use std::net::{Ipv4Addr, Ipv6Addr};
        let f = reply_filter();
        let c4 = Ipv4Addr::new(198, 51, 100, 2);
        let v4 = Ipv4Addr::new(198, 51, 100, 10);
        let c6: Ipv6Addr = "2001:db8::2".parse().expect("v6");
        let v6: Ipv6Addr = "2001:db8::10".parse().expect("v6");
        let request = arp_request(GENERATOR_MAC, c4, v4);
        let mut reply = request.clone();
        reply[21] = 2;
        let ns = neighbor_solicitation(GENERATOR_MAC, c6, v6);
        let mut na = ns.clone();
        na[54] = 136;
        assert_eq!(run(&f, &request), 0);
        assert_eq!(run(&f, &ns), 0);
        assert_eq!(run(&f, &reply), SNAPLEN);
        assert_eq!(run(&f, &na), SNAPLEN);
        let mut ipv4 = request.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run(&f, &ipv4), 0);
        // All but the client's own ARP reply (index 3, outgoing, ignored by the socket).
        for (i, bad) in bad_input(c4, v4, c6, v6).iter().enumerate() {
            assert_eq!(run(&f, bad), if i == 3 { SNAPLEN } else { 0 }, "frame {i}");
        }
    }

    #[test]
    fn ring_frames_never_cross_a_block() {
        let per_block = BLOCK_SIZE / FRAME_SIZE;
        for i in [0, 1, per_block - 1, per_block, per_block * BLOCKS - 1] {
            let off = frame_offset(i);
            assert_eq!(off / BLOCK_SIZE, (off + FRAME_SIZE - 1) / BLOCK_SIZE);
            assert!(off + FRAME_SIZE <= BLOCK_SIZE * BLOCKS);
        }
    }
}
