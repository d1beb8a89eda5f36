//! `herald xdp ...`: load, feed and inspect the XDP responder without Kubernetes. Parses
//! arguments, checks capabilities up front, calls [`crate::dataplane`] and renders the result.

use lb_common::ratelimit::RateLimit;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use lb_common::maps::PIN_DIR;

use crate::dataplane::cadence::Cadence;
use crate::dataplane::caps::{self, Cap};
use crate::dataplane::gratuitous::Sender;
use crate::dataplane::keys::Mac;
use crate::dataplane::markers;
use crate::dataplane::netdev::Interface;
mod foreground;
mod render;

use foreground::{attach, run_foreground};
use render::render_text;

use crate::dataplane::{
    self, AttachMode, Counters, Dataplane, DataplaneChoice, DataplaneError, GuardState, Snapshot,
    edges::EdgeCounters,
};

#[derive(Args)]
pub struct XdpArgs {
    /// bpffs directory holding Herald's pinned maps and XDP links.
    #[arg(long, global = true, env = "HERALD_PIN_DIR", default_value = PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: XdpCommand,
}

#[derive(Subcommand)]
enum XdpCommand {
    /// Attach the responder to an interface (idempotent; XDP keeps running after exit, a
    /// userspace responder runs in the foreground until SIGTERM/SIGINT).
    Attach(AttachArgs),
    /// Answer ARP/NDP for an address on an interface and send gratuitous ARP / unsolicited NA.
    Announce(AnnounceArgs),
    /// Stop answering for an address.
    Withdraw(WithdrawArgs),
    /// Show attached interfaces, announced addresses, MACs, counters and the guard.
    List(ListArgs),
    /// Detach from one interface (or all), withdrawing its addresses; maps go with the last link.
    Detach(DetachArgs),
    /// Attach, announce and keep the guard's heartbeat fresh until SIGTERM/SIGINT, then withdraw.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Driver mode, falling back to skb mode; skb mode on a veth (whose driver-mode replies
    /// are dropped unless its peer runs XDP).
    Auto,
    Driver,
    Skb,
}

impl From<ModeArg> for AttachMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Auto => AttachMode::Auto,
            ModeArg::Driver => AttachMode::Driver,
            ModeArg::Skb => AttachMode::Skb,
        }
    }
}

#[derive(Args)]
struct AttachArgs {
    #[arg(long)]
    iface: String,
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,
    /// xdp: attach the XDP program (pinned, outlives this command); userspace: answer from
    /// this process through AF_PACKET (same maps, replies and counters) until SIGTERM/SIGINT;
    /// auto: XDP, falling back to userspace when it cannot attach.
    #[arg(long, value_enum, default_value = "xdp")]
    dataplane: DataplaneArg,
    /// Answers per second one requester MAC gets (`PER_SECOND[/BURST]`, `0` or `off`); default:
    /// leave the pinned value (a new map starts at 1000/2000).
    #[arg(long, value_parser = crate::cli::speaker::parse_rate_limit)]
    rate_limit: Option<RateLimit>,
    /// The flood guard: ARP and NS frames one Ethernet source may have passed to the kernel
    /// unanswered (`PER_SECOND[/BURST]`, `0` or `off`), the rest dropped; default: leave the
    /// pinned value (a new map starts at 10000/1000).
    #[arg(long, value_parser = crate::cli::speaker::parse_rate_limit)]
    flood_limit: Option<RateLimit>,
}

#[derive(Args, Clone, Copy)]
struct CadenceArgs {
    /// Gratuitous packets continue until this long after the last change ("0" = send once).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    gratuitous_window: Duration,
    /// Interval between gratuitous rounds inside the window (at least 10ms; "0" = send once).
    #[arg(long, value_parser = parse_interval, default_value = "1100ms")]
    gratuitous_interval: Duration,
}

impl From<CadenceArgs> for Cadence {
    fn from(args: CadenceArgs) -> Self {
        Cadence {
            interval: args.gratuitous_interval,
            window: args.gratuitous_window,
        }
    }
}

#[derive(Args)]
struct AnnounceArgs {
    /// IPv4 or IPv6 address to answer for.
    ip: String,
    #[arg(long)]
    iface: String,
    /// MAC to answer with (default: the interface's).
    #[arg(long)]
    mac: Option<String>,
    #[command(flatten)]
    cadence: CadenceArgs,
}

#[derive(Args)]
struct WithdrawArgs {
    ip: String,
    #[arg(long)]
    iface: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Args)]
struct ListArgs {
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
struct DetachArgs {
    /// Only this interface (default: all).
    #[arg(long)]
    iface: Option<String>,
}

/// Who answers: the XDP program, this process through an AF_PACKET socket, or XDP when it
/// attaches and userspace otherwise.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataplaneArg {
    Xdp,
    Userspace,
    Auto,
}

impl From<DataplaneArg> for DataplaneChoice {
    fn from(arg: DataplaneArg) -> Self {
        match arg {
            DataplaneArg::Xdp => DataplaneChoice::Xdp,
            DataplaneArg::Userspace => DataplaneChoice::Userspace,
            DataplaneArg::Auto => DataplaneChoice::Auto,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    iface: String,
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,
    /// xdp: the XDP program answers; userspace: this process does (AF_PACKET, same maps, same
    /// replies, same counters), unless a `herald xdp attach --dataplane userspace` process
    /// already answers there; auto: XDP, falling back to userspace when it cannot attach.
    #[arg(long, value_enum, default_value = "xdp")]
    dataplane: DataplaneArg,
    /// Addresses to announce (repeatable).
    #[arg(long = "announce", required = true, num_args = 1..)]
    announce: Vec<String>,
    /// MAC to answer with (default: the interface's).
    #[arg(long)]
    mac: Option<String>,
    /// The program stops answering this long after the last heartbeat ("0" = guard off).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    guard_timeout: Duration,
    /// As `herald xdp attach --rate-limit`.
    #[arg(long, value_parser = crate::cli::speaker::parse_rate_limit)]
    rate_limit: Option<RateLimit>,
    /// As `herald xdp attach --flood-limit`.
    #[arg(long, value_parser = crate::cli::speaker::parse_rate_limit)]
    flood_limit: Option<RateLimit>,
    #[command(flatten)]
    cadence: CadenceArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 5s, 1100ms, 0)"))
}

/// Shortest gap between gratuitous rounds: more often than this is a flood of one's own LAN.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if !interval.is_zero() && interval < MIN_INTERVAL {
        return Err(format!(
            "{s} is shorter than {}ms (use 0 to send once)",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(interval)
}

pub fn run(args: XdpArgs) -> Result<()> {
    let pin_dir = args.pin_dir.as_path();
    match args.command {
        XdpCommand::Attach(a) => {
            let choice = DataplaneChoice::from(a.dataplane);
            if choice == DataplaneChoice::Xdp {
                require("herald xdp attach", &[Cap::Bpf, Cap::NetAdmin])?;
            } else {
                require("herald xdp attach", &[Cap::Bpf, Cap::NetAdmin, Cap::NetRaw])?;
            }
            attach(
                pin_dir,
                &a.iface,
                a.mode.into(),
                choice,
                [a.rate_limit, a.flood_limit],
            )
        }
        XdpCommand::Announce(a) => {
            require(
                "herald xdp announce",
                &[Cap::Bpf, Cap::NetAdmin, Cap::NetRaw],
            )?;
            announce(pin_dir, a)
        }
        XdpCommand::Withdraw(a) => {
            require("herald xdp withdraw", &[Cap::Bpf, Cap::NetAdmin])?;
            withdraw(pin_dir, a)
        }
        XdpCommand::List(a) => {
            require("herald xdp list", &[Cap::Bpf])?;
            list(pin_dir, a.output)
        }
        XdpCommand::Detach(a) => {
            require("herald xdp detach", &[Cap::Bpf, Cap::NetAdmin])?;
            detach(pin_dir, a.iface.as_deref())
        }
        XdpCommand::Run(a) => {
            require("herald xdp run", &[Cap::Bpf, Cap::NetAdmin, Cap::NetRaw])?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_foreground(pin_dir, a))
        }
    }
}

/// One line naming the missing capabilities, before any syscall can fail with EPERM.
/// Set (to anything) to skip the capability check below and let the kernel refuse instead:
/// how the tests show that the kernel itself needs each capability the manifest grants.
const SKIP_CAPABILITY_CHECK: &str = "HERALD_SKIP_CAPABILITY_CHECK";

fn require(what: &str, needed: &[Cap]) -> Result<()> {
    if std::env::var_os(SKIP_CAPABILITY_CHECK).is_some() {
        return Ok(());
    }
    let effective =
        caps::effective().context("reading the effective capabilities from /proc/self/status")?;
    let missing = caps::missing(needed, effective);
    if missing.is_empty() {
        return Ok(());
    }
    Err(one_line(DataplaneError::MissingCapabilities {
        what: what.to_string(),
        needed: caps::join(needed),
        missing: caps::join(&missing),
    }))
}

/// Dataplane errors already carry their cause in the message: keep the output to one line.
fn one_line(e: DataplaneError) -> anyhow::Error {
    anyhow!("{e}")
}

fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| anyhow!("address {s:?}: not an IPv4 or IPv6 address"))
}

fn parse_mac(s: Option<&str>) -> Result<Option<Mac>> {
    s.map(|s| s.parse::<Mac>().map_err(|e| anyhow!("--mac: {e}")))
        .transpose()
}

fn interface(name: &str) -> Result<Interface> {
    Interface::by_name(name).map_err(one_line)
}

fn announce(pin_dir: &Path, args: AnnounceArgs) -> Result<()> {
    let ip = parse_ip(&args.ip)?;
    let mac = parse_mac(args.mac.as_deref())?;
    let iface = interface(&args.iface)?;
    let mut dp = Dataplane::open(pin_dir).map_err(one_line)?;
    let announced = dp.announce(&iface, ip, mac).map_err(one_line)?;
    println!(
        "announced {} on {} with {}",
        announced.ip, iface.name, announced.mac
    );
    let sender = Sender::open().map_err(one_line)?;
    let start = Instant::now();
    let mut packets = 0;
    for round in Cadence::from(args.cadence).single_apply_rounds() {
        if let Some(wait) = round.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        packets += sender
            .announce(&iface, ip, announced.mac)
            .map_err(one_line)?;
    }
    println!("sent {packets} gratuitous packets");
    Ok(())
}

fn withdraw(pin_dir: &Path, args: WithdrawArgs) -> Result<()> {
    let ip = parse_ip(&args.ip)?;
    let iface = interface(&args.iface)?;
    let Some(mut dp) = Dataplane::open_existing(pin_dir).map_err(one_line)? else {
        bail!(
            "{ip} is not announced on {}: nothing is pinned under {}",
            iface.name,
            pin_dir.display()
        );
    };
    if dp.withdraw(&iface, ip).map_err(one_line)? {
        println!("withdrew {ip} from {}", iface.name);
    } else {
        println!("{ip} was not announced on {}", iface.name);
    }
    Ok(())
}

fn list(pin_dir: &Path, output: Output) -> Result<()> {
    let snapshot = match Dataplane::open_existing(pin_dir).map_err(one_line)? {
        Some(dp) => dp.snapshot().map_err(one_line)?,
        None => Snapshot {
            pin_dir: pin_dir.to_path_buf(),
            attachments: Vec::new(),
            interfaces: dataplane::interface_modes(
                &[],
                &markers::responders(pin_dir).map_err(one_line)?,
            ),
            addresses: Vec::new(),
            counters: Counters::default(),
            edges: EdgeCounters::default(),
            limits: None,
            guard: GuardState::Off,
        },
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        Output::Text => print!("{}", render_text(&snapshot)),
    }
    Ok(())
}

fn detach(pin_dir: &Path, iface: Option<&str>) -> Result<()> {
    let report = dataplane::detach(pin_dir, iface).map_err(one_line)?;
    if report.links.is_empty() {
        match iface {
            Some(name) => println!("{name}: not attached"),
            None => println!("nothing attached"),
        }
    }
    for (name, mode) in &report.links {
        println!("{name}: detached ({mode} mode)");
    }
    if report.withdrawn > 0 {
        println!("withdrew {} addresses", report.withdrawn);
    }
    if report.maps_removed {
        println!("removed the maps under {}", pin_dir.display());
    }
    if report.userspace_still_serving {
        println!(
            "kept the maps under {}: a userspace responder still answers (see `herald xdp list`)",
            pin_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1100ms"), Ok(Duration::from_millis(1100)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_interval("10ms"), Ok(Duration::from_millis(10)));
        let e = parse_interval("1ns").unwrap_err();
        assert!(e.contains("shorter than 10ms"), "{e}");
    }

    #[test]
    fn bad_addresses_and_macs_are_one_line_errors() {
        let e = parse_ip("198.51.100.300").unwrap_err().to_string();
        assert_eq!(e, "address \"198.51.100.300\": not an IPv4 or IPv6 address");
        let e = parse_mac(Some("02:00")).unwrap_err().to_string();
        assert!(e.starts_with("--mac: MAC address \"02:00\""), "{e}");
        assert!(!e.contains('\n'));
        assert_eq!(parse_mac(None).unwrap(), None);
    }
}
