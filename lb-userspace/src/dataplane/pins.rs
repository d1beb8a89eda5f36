//! The layout of the pin directory: one pin per map (named as in the object) and one per XDP
//! link, `link_<mode>_<ifname>`. The mode is in the name because the kernel's link info does not
//! say it, and `list` and a repeated `attach` must report it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{DataplaneError, Result};

/// The mode an XDP link runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the kernel stack (works on every interface).
    Skb,
}

impl AttachedMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Skb => "skb",
        }
    }
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const LINK_PREFIX: &str = "link_";

pub fn link_pin_name(ifname: &str, mode: AttachedMode) -> String {
    format!("{LINK_PREFIX}{}_{ifname}", mode.as_str())
}

/// The interface and mode of a link pin name, or `None` for any other file.
pub fn parse_link_pin_name(file: &str) -> Option<(String, AttachedMode)> {
    let rest = file.strip_prefix(LINK_PREFIX)?;
    let (mode, ifname) = rest.split_once('_')?;
    let mode = match mode {
        "driver" => AttachedMode::Driver,
        "skb" => AttachedMode::Skb,
        _ => return None,
    };
    (!ifname.is_empty()).then(|| (ifname.to_string(), mode))
}

/// The link pins present in `dir` as (interface, mode, path), sorted by interface.
pub fn link_pins(dir: &Path) -> Result<Vec<(String, AttachedMode, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DataplaneError::PinDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataplaneError::PinDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some((ifname, mode)) = entry.file_name().to_str().and_then(parse_link_pin_name) {
            links.push((ifname, mode, entry.path()));
        }
    }
    links.sort();
    Ok(links)
}

/// The interface index an XDP link pinned at `path` is attached to: 0 once the interface is
/// gone (the kernel detaches the link but the pin stays). Read from the link's fdinfo, since
/// aya's link info leaves the XDP part out.
pub fn pinned_link_ifindex(path: &Path) -> std::io::Result<u32> {
    let fd = bpf_obj_get(path)?;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    fdinfo_ifindex(&fdinfo).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no ifindex in link fdinfo")
    })
}

pub fn fdinfo_ifindex(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("ifindex:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Detaches the pinned link at `path` from its interface now (`BPF_LINK_DETACH`), leaving the
/// pin file (of a defunct link) for the caller to remove. Unpinning alone would detach later,
/// when the kernel's deferred release of the last reference runs.
pub fn detach_pinned_link(path: &Path) -> std::io::Result<()> {
    /// The `BPF_LINK_DETACH` member of `union bpf_attr`.
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    /// `enum bpf_cmd` in linux/bpf.h.
    const BPF_LINK_DETACH: libc::c_long = 34;
    let fd = bpf_obj_get(path)?;
    let attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: attr is a valid BPF_LINK_DETACH attribute; fd stays open across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &raw const attr,
            std::mem::size_of::<LinkDetachAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `BPF_OBJ_GET`: opens a pinned object. No access flags: the kernel refuses
/// `BPF_F_RDONLY`/`BPF_F_WRONLY` (EINVAL) for anything but maps, links included.
fn bpf_obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    /// The `BPF_OBJ_GET` member of `union bpf_attr`.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr is a valid BPF_OBJ_GET attribute whose path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGetAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success the syscall returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs lives by convention; mounted here on demand as systemd and Cilium do.
const STANDARD_BPFFS: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; all-zero is valid and statfs(2) fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `dir` exists on a bpffs, mounting bpffs at /sys/fs/bpf when that is the parent,
/// nothing is mounted there yet, and this process lives in the host's mount namespace. In a
/// private mount namespace (`ip netns exec` makes one and remounts /sys) a mount of ours would
/// vanish with the namespace, taking the pins and the attached program along: refuse instead.
/// A `dir` that is itself on a bpffs (a container's volume of the host's `/sys/fs/bpf/herald`,
/// and nothing else of bpffs) needs nothing more.
pub fn ensure_pin_dir(dir: &Path) -> Result<()> {
    if is_bpffs(dir).unwrap_or(false) {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pin_err = |source| DataplaneError::PinDir {
        path: parent.to_path_buf(),
        source,
    };
    if !is_bpffs(parent).map_err(pin_err)? {
        if parent != Path::new(STANDARD_BPFFS) {
            return Err(DataplaneError::NotBpffs {
                path: parent.to_path_buf(),
            });
        }
        if !in_init_mount_namespace() {
            return Err(DataplaneError::PrivateMountNamespace {
                path: parent.to_path_buf(),
            });
        }
        mount_bpffs(parent).map_err(pin_err)?;
        tracing::info!(path = %parent.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// True when this process shares PID 1's mount namespace (mounts made here outlive it).
fn in_init_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(ours), Ok(init)) => ours == init,
        _ => false,
    }
}

fn mount_bpffs(at: &Path) -> std::io::Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: all strings are NUL-terminated; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        for (ifname, mode) in [
            ("eth0", AttachedMode::Skb),
            ("veth_a_b", AttachedMode::Driver),
            ("x", AttachedMode::Skb),
        ] {
            let name = link_pin_name(ifname, mode);
            assert_eq!(
                parse_link_pin_name(&name),
                Some((ifname.to_string(), mode)),
                "{name}"
            );
        }
        assert_eq!(link_pin_name("eth0", AttachedMode::Skb), "link_skb_eth0");
    }

    #[test]
    fn other_pins_are_not_links() {
        for other in [
            "HERALD_V4",
            "link_",
            "link_skb_",
            "link_hw_eth0",
            "linkskb_eth0",
            "link_skb",
        ] {
            assert_eq!(parse_link_pin_name(other), None, "{other}");
        }
    }

    #[test]
    fn fdinfo_ifindex_table() {
        let live = "pos:\t0\nflags:\t02000000\nlink_type:\txdp\nlink_id:\t7\nprog_tag:\tabc\nprog_id:\t9\nifindex:\t3\n";
        assert_eq!(fdinfo_ifindex(live), Some(3));
        assert_eq!(fdinfo_ifindex("link_type:\txdp\nifindex:\t0\n"), Some(0));
        assert_eq!(fdinfo_ifindex("link_type:\txdp\n"), None);
    }

    #[test]
    fn link_pins_of_a_missing_dir_is_empty() {
        assert!(
            link_pins(Path::new("/nonexistent/herald-pins"))
                .unwrap()
                .is_empty()
        );
    }
}
