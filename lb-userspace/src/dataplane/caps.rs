//! Capability check done up front, so running without privileges fails with one line naming
//! what is missing instead of an `EPERM` from deep inside a syscall.

use std::fmt;

/// Capabilities the data plane uses (numbers from linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// Links, XDP attach, multicast membership.
    NetAdmin = 12,
    /// AF_PACKET sockets for gratuitous packets.
    NetRaw = 13,
    /// Mounting bpffs; also grants everything CAP_BPF does.
    SysAdmin = 21,
    /// Maps and programs.
    Bpf = 39,
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::NetRaw => "CAP_NET_RAW",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Bpf => "CAP_BPF",
        })
    }
}

/// Reads the effective capability set from `/proc/self/status` (`CapEff:` line, hex).
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The capabilities of `needed` absent from `effective`. CAP_SYS_ADMIN stands in for CAP_BPF,
/// as in the kernel's `bpf_capable()`.
pub fn missing(needed: &[Cap], effective: u64) -> Vec<Cap> {
    let has = |c: Cap| effective & (1u64 << c as u32) != 0;
    needed
        .iter()
        .copied()
        .filter(|&c| !(has(c) || (c == Cap::Bpf && has(Cap::SysAdmin))))
        .collect()
}

pub fn join(caps: &[Cap]) -> String {
    caps.iter()
        .map(Cap::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn missing_table() {
        let all = [Cap::Bpf, Cap::NetAdmin, Cap::NetRaw];
        assert_eq!(missing(&all, u64::MAX), vec![]);
        assert_eq!(missing(&all, 0), all.to_vec());
        let net_admin_only = 1 << 12;
        assert_eq!(missing(&all, net_admin_only), vec![Cap::Bpf, Cap::NetRaw]);
        // CAP_SYS_ADMIN covers CAP_BPF but not the network capabilities.
        assert_eq!(missing(&all, 1 << 21), vec![Cap::NetAdmin, Cap::NetRaw]);
        assert_eq!(join(&[Cap::Bpf, Cap::NetAdmin]), "CAP_BPF, CAP_NET_ADMIN");
    }
}
