//! Raw `bpf(2)` for the bench's own programs and maps (xtask needs no BPF crate): the attribute
//! block written field by field at the kernel's offsets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub(super) const BPF_PROG_LOAD: libc::c_long = 5;
pub(super) const BPF_LINK_CREATE: libc::c_long = 28;
pub(super) const BPF_LINK_UPDATE: libc::c_long = 29;
pub(super) const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(super) const BPF_MAP_TYPE_DEVMAP: u32 = 14;
pub(super) const BPF_XDP: u32 = 37;
pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub(super) const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub(super) const BPF_PROG_TYPE_XDP: u32 = 6;
pub(super) const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// A `bpf_attr` big enough for the commands used here; fields written at their offsets.
#[repr(C, align(8))]
pub(super) struct Attr(pub(super) [u8; 128]);

impl Attr {
    pub(super) fn new() -> Attr {
        Attr([0; 128])
    }
    pub(super) fn u32(&mut self, offset: usize, v: u32) -> &mut Attr {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn u64(&mut self, offset: usize, v: u64) -> &mut Attr {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

pub(super) fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A one-element array map whose values are `value_size` bytes (`what` names it in errors).
pub(super) fn array_map(value_size: u32, what: &str) -> Result<OwnedFd> {
    create_map(BPF_MAP_TYPE_ARRAY, value_size, 1, what)
}

/// A map of `kind` with u32 keys and `entries` values of `value_size` bytes.
fn create_map(kind: u32, value_size: u32, entries: u32, what: &str) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, kind)
        .u32(4, 4)
        .u32(8, value_size)
        .u32(12, entries);
    match bpf(BPF_MAP_CREATE, &mut attr) {
        // SAFETY: new fd from the kernel.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => bail!("creating {what}: {e}"),
    }
}

/// The u64 at byte offset `at` of a map value.
pub(super) fn word(value: &[u8], at: i16) -> u64 {
    let at = at as usize;
    let mut b = [0u8; 8];
    b.copy_from_slice(&value[at..at + 8]);
    u64::from_ne_bytes(b)
}

/// A device map (`BPF_MAP_TYPE_DEVMAP`) holding `ifindexes` (of the calling thread's
/// namespace) at keys 0, 1, …: where `bpf_redirect_map` sends frames, to all of them when
/// broadcasting.
pub(super) fn devmap(ifindexes: &[u32], what: &str) -> Result<OwnedFd> {
    let map = create_map(BPF_MAP_TYPE_DEVMAP, 4, ifindexes.len() as u32, what)?;
    for (key, ifindex) in ifindexes.iter().enumerate() {
        if let Err(e) = map_update_at(&map, key as u32, &ifindex.to_ne_bytes()) {
            bail!("{what}: adding ifindex {ifindex}: {e}");
        }
    }
    Ok(map)
}

/// Attaches `prog` to `ifindex` (of the calling thread's namespace) in XDP driver mode; the
/// attachment lasts as long as the returned link fd.
pub(super) fn attach_xdp(prog: &OwnedFd, ifindex: u32, what: &str) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE);
    match bpf(BPF_LINK_CREATE, &mut attr) {
        // SAFETY: new fd from the kernel.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => bail!("attaching {what} (XDP driver mode, ifindex {ifindex}): {e}"),
    }
}

/// Reads element 0 of an array map into `value` (its exact size).
pub(super) fn map_lookup(map: &OwnedFd, value: &mut [u8]) -> io::Result<()> {
    let key = 0u32;
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .u64(8, &raw const key as u64)
        .u64(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

/// Writes element 0 of an array map.
pub(super) fn map_update(map: &OwnedFd, value: &[u8]) -> io::Result<()> {
    map_update_at(map, 0, value)
}

/// Writes element `key` of an array-like map.
pub(super) fn map_update_at(map: &OwnedFd, key: u32, value: &[u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .u64(8, &raw const key as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loads an XDP program from its bytes; the verifier's log is in the error.
pub(super) fn load_xdp(insns: &[u8], name: &str) -> Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 16384];
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, (insns.len() / 8) as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "loading XDP program {name}: {e} {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        }
    }
}

/// Runs `prog` once on `frame`, outside live mode: XDP action, frame as it left.
#[cfg(test)]
pub(super) fn test_run(prog: &OwnedFd, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 512];
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, 1);
    bpf(BPF_PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN (needs root, as the bench)");
    let retval = u32::from_ne_bytes(attr.0[4..8].try_into().unwrap());
    let len = u32::from_ne_bytes(attr.0[12..16].try_into().unwrap()) as usize;
    out.truncate(len);
    (retval, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_fields_land_at_their_offsets() {
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304).u64(8, 0x1122_3344_5566_7788);
        assert_eq!(&a.0[4..8], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&a.0[8..16], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert!(a.0[16..].iter().all(|&b| b == 0));
    }
}
