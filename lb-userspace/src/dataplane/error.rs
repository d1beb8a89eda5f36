//! Errors of the data plane. Each variant names the object (interface, address, pin) so the CLI
//! can print one line that says what is wrong and where.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("interface {name:?}: invalid name ({reason})")]
    InvalidInterfaceName { name: String, reason: &'static str },
    #[error("interface {0:?} does not exist")]
    UnknownInterface(String),
    #[error("interface {iface}: cannot serve {family}: {reason}")]
    FamilyUnsupported {
        iface: String,
        family: &'static str,
        reason: String,
    },
    #[error("address {ip}: cannot be announced ({reason})")]
    AddressNotAnnounceable { ip: IpAddr, reason: &'static str },
    #[error("MAC address {mac}: {reason}")]
    BadMac { mac: String, reason: &'static str },
    #[error(
        "interface {iface}: no Herald XDP program attached (run `herald xdp attach --iface {iface}` first)"
    )]
    NotAttached { iface: String },
    #[error(
        "interface {iface}: answered in userspace by pid {pid}: stop that process before attaching XDP"
    )]
    AnsweredInUserspace { iface: String, pid: u32 },
    #[error("interface {iface}: {mode} mode attach failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{path}: not on a BPF filesystem (mount one with `mount -t bpf bpf {path}`)")]
    NotBpffs { path: PathBuf },
    #[error(
        "{path} is not a BPF filesystem in this private mount namespace, and a mount made here \
         would vanish with it (taking the pins and the program): mount bpffs there on the host, \
         use `nsenter --net=/run/netns/NAME` rather than `ip netns exec` (which remounts /sys), \
         or point --pin-dir/HERALD_PIN_DIR at a bpffs"
    )]
    PrivateMountNamespace { path: PathBuf },
    #[error("pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error(
        "pinned map {path} is missing or unreadable ({source}); if another Herald version \
         pinned it, `herald xdp detach` removes it"
    )]
    PinnedMap {
        path: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("pinned link {path}: {source}")]
    PinnedLink {
        path: PathBuf,
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("loading the embedded XDP object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the embedded XDP object has no {what} {name:?}")]
    ObjectMissing {
        what: &'static str,
        name: &'static str,
    },
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("interface {iface}: {op}: {source}")]
    Netdev {
        iface: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("{what} needs {needed}; missing {missing} (run as root or grant the capabilities)")]
    MissingCapabilities {
        what: String,
        needed: String,
        missing: String,
    },
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Wraps an aya map error with the map name.
pub(crate) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map,
        source: Box::new(source),
    }
}
