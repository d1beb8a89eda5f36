//! `herald xdp ...`: load, feed and inspect the XDP responder without Kubernetes. Parses
//! arguments, checks capabilities up front, calls [`crate::dataplane`] and renders the result.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use lb_common::maps::PIN_DIR;

use crate::dataplane::cadence::{Cadence, Windows};
use crate::dataplane::caps::{self, Cap};
use crate::dataplane::answerers::{self, Answerers, Serving};
use crate::dataplane::fallback::FallbackCounts;
use crate::dataplane::heartbeat::{Beat, Heartbeat, OnError};
use crate::dataplane::markers;
use crate::dataplane::gratuitous::Sender;
use crate::dataplane::keys::{self, Mac};
use crate::dataplane::netdev::Interface;
use crate::dataplane::{
    self, AttachMode, Attached, Counters, Dataplane, DataplaneChoice, DataplaneError, GuardState,
    Snapshot,
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
    /// Driver mode, falling back to skb mode.
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
}

#[derive(Args, Clone, Copy)]
struct CadenceArgs {
    /// Gratuitous packets continue until this long after the last change ("0" = send once).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    gratuitous_window: Duration,
    /// Interval between gratuitous rounds inside the window.
    #[arg(long, value_parser = parse_duration, default_value = "1100ms")]
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
    #[command(flatten)]
    cadence: CadenceArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 5s, 1100ms, 0)"))
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
            attach(pin_dir, &a.iface, a.mode.into(), choice)
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
fn require(what: &str, needed: &[Cap]) -> Result<()> {
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

fn attach(pin_dir: &Path, iface: &str, mode: AttachMode, choice: DataplaneChoice) -> Result<()> {
    let iface = interface(iface)?;
    let mut dp = Dataplane::open(pin_dir).map_err(one_line)?;
    let mut answerers = Answerers::new(pin_dir, choice, mode);
    let serving = answerers.serve(&mut dp, &iface).map_err(one_line)?;
    print_serving(&iface.name, &serving);
    if !matches!(serving, Serving::Own { .. }) {
        return Ok(());
    }
    // This process answers: in the foreground until SIGTERM/SIGINT. Addresses are announced and
    // withdrawn with `herald xdp announce` / `withdraw` from other processes, as with XDP.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut poll = tokio::time::interval(RESPONDER_POLL);
        let (why, mut ended) = loop {
            tokio::select! {
                _ = sigterm.recv() => break ("SIGTERM", Vec::new()),
                _ = sigint.recv() => break ("SIGINT", Vec::new()),
                _ = poll.tick() => {
                    let ended = answerers.take_ended(&mut dp);
                    if !ended.is_empty() {
                        break ("the responder ended", ended);
                    }
                }
            }
        };
        ended.extend(answerers.stop_all());
        finish(&answerers, ended)?;
        println!("{why}: {}: stopped answering in userspace", iface.name);
        Ok(())
    })
}

/// How often the foreground commands look whether their userspace responder ended.
const RESPONDER_POLL: Duration = Duration::from_millis(200);

/// What `attach` and `run` print about who answers.
fn print_serving(iface: &str, serving: &Serving) {
    match serving {
        Serving::Xdp(attached) => print_attached(attached),
        Serving::OtherProcess(pid) => println!("{iface}: already answered in userspace (pid {pid})"),
        Serving::Own {
            released_xdp,
            xdp_refused,
            ..
        } => {
            if let Some(why) = xdp_refused {
                println!("{iface}: XDP cannot attach ({why}); falling back to userspace");
            }
            if let Some(mode) = released_xdp {
                println!("{iface}: detached the XDP program ({mode} mode) to answer in userspace");
            }
            println!("{iface}: answering in userspace (AF_PACKET)");
        }
    }
}

/// Prints what each ended responder did; the first failure is the command's error.
fn finish(answerers: &Answerers, ended: Vec<answerers::Ended>) -> Result<()> {
    let counts = answerers.counts();
    let mut result = Ok(());
    for e in ended {
        if let Some((_, c)) = counts.iter().find(|(name, _)| *name == e.iface) {
            print_summary(&e.iface, c);
        }
        if let (Err(error), true) = (e.outcome, result.is_ok()) {
            result = Err(anyhow!("{}: {error}", e.iface));
        }
    }
    result
}

fn print_attached(attached: &Attached) {
    if attached.already {
        println!(
            "{}: already attached ({} mode)",
            attached.iface, attached.mode
        );
    } else if let Some(why) = &attached.driver_refused {
        println!(
            "{}: driver mode refused ({why}); attached in skb mode",
            attached.iface
        );
    } else {
        println!("{}: attached in {} mode", attached.iface, attached.mode);
    }
}

fn print_summary(iface: &str, c: &FallbackCounts) {
    println!(
        "{iface}: userspace responder: {} ARP/NS frames, {} replies, {} replies dropped by the kernel (send failed), {} receive errors, {} counter write errors",
        c.frames, c.replies, c.send_failures, c.receive_errors, c.map_errors
    );
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
            guard: GuardState::Off,
        },
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        Output::Text => print!("{}", render_text(&snapshot)),
    }
    Ok(())
}

fn render_text(s: &Snapshot) -> String {
    let mut out = format!("pin dir: {}\n", s.pin_dir.display());
    out += &match s.guard {
        GuardState::Off => "guard: off (answers never expire)\n".to_string(),
        GuardState::Fresh { age_ms, timeout_ms } => {
            format!("guard: fresh (heartbeat {age_ms} ms ago, timeout {timeout_ms} ms)\n")
        }
        GuardState::Stale { age_ms, timeout_ms } => {
            format!(
                "guard: STALE (heartbeat {age_ms} ms ago, timeout {timeout_ms} ms): not answering\n"
            )
        }
    };
    out += "interfaces:\n";
    if s.interfaces.is_empty() {
        out += "  (none attached)\n";
    }
    for i in &s.interfaces {
        let state = match (i.pid, i.active) {
            (None, true) => String::new(),
            (None, false) => " (interface gone)".to_string(),
            (Some(pid), true) => format!(" (pid {pid})"),
            (Some(pid), false) => format!(" (pid {pid} is gone: not answering)"),
        };
        out += &format!("  {} mode {}{state}\n", i.iface, i.dataplane);
    }
    out += "addresses:\n";
    if s.addresses.is_empty() {
        out += "  (none announced)\n";
    } else {
        out += &format!(
            "  {:<16} {:<40} {:<17} {:>10} {:>10}\n",
            "IFACE", "ADDRESS", "MAC", "REQUESTS", "REPLIES"
        );
    }
    for a in &s.addresses {
        let iface = a.iface.clone().unwrap_or_else(|| format!("#{}", a.ifindex));
        out += &format!(
            "  {:<16} {:<40} {:<17} {:>10} {:>10}\n",
            iface, a.ip, a.mac, a.requests, a.replies
        );
    }
    let c = s.counters;
    out += &format!(
        "counters: arp_replies={} na_replies={} passed={} malformed={} silenced={}\n",
        c.arp_replies, c.na_replies, c.passed, c.malformed, c.silenced
    );
    out
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

/// Foreground responder: the guard's heartbeat lives exactly as long as this process, so a
/// killed or hung process stops the answers after `--guard-timeout`.
async fn run_foreground(pin_dir: &Path, args: RunArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let ips = args
        .announce
        .iter()
        .map(|s| parse_ip(s))
        .collect::<Result<Vec<_>>>()?;
    let mac = parse_mac(args.mac.as_deref())?;
    let iface = interface(&args.iface)?;
    // Refuse bad input before touching anything.
    for ip in &ips {
        if let Some(reason) = keys::unannounceable_reason(*ip) {
            return Err(one_line(DataplaneError::AddressNotAnnounceable {
                ip: *ip,
                reason,
            }));
        }
        let unservable = if ip.is_ipv4() {
            iface.ipv4_unservable()
        } else {
            iface.ipv6_unservable()
        };
        if let Some(reason) = unservable {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(one_line(DataplaneError::FamilyUnsupported {
                iface: iface.name.clone(),
                family,
                reason,
            }));
        }
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let mut dp = Dataplane::open(pin_dir).map_err(one_line)?;
    let mut answerers = Answerers::new(pin_dir, args.dataplane.into(), args.mode.into());
    let serving = answerers.serve(&mut dp, &iface).map_err(one_line)?;
    match &serving {
        Serving::Xdp(attached) => println!(
            "{}: {} in {} mode",
            iface.name,
            if attached.already {
                "already attached"
            } else {
                "attached"
            },
            attached.mode
        ),
        other => print_serving(&iface.name, other),
    }
    let guard_on = !args.guard_timeout.is_zero();
    let heartbeat = if guard_on {
        dp.heartbeat(args.guard_timeout).map_err(one_line)?;
        let timeout = args.guard_timeout;
        // A quarter of the timeout leaves three missed beats of slack before answers stop.
        let every = (timeout / 4).max(Duration::from_millis(10));
        let guard = Dataplane::open(pin_dir).map_err(one_line)?;
        Some(
            Heartbeat::spawn("guard", guard, every, false, OnError::Stop, move || {
                Beat::Refresh(timeout)
            })
            .map_err(one_line)?,
        )
    } else {
        dp.guard_off().map_err(one_line)?;
        None
    };

    let sender = Sender::open().map_err(one_line)?;
    let cadence = Cadence::from(args.cadence);
    let mut windows = Windows::new(cadence);
    let start = Instant::now();
    for ip in &ips {
        let announced = dp.announce(&iface, *ip, mac).map_err(one_line)?;
        println!("announced {} on {} with {}", ip, iface.name, announced.mac);
        if windows.apply(*ip, start.elapsed()) {
            send_round(&sender, &iface, *ip, announced.mac);
        }
    }
    let answer_mac = mac.unwrap_or(iface.mac);

    let tick_every = if cadence.is_once() {
        Duration::from_secs(3600)
    } else {
        cadence.interval
    };
    let mut gratuitous =
        tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    let mut poll = tokio::time::interval(RESPONDER_POLL);
    let mut ended = Vec::new();
    let outcome: &str = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = poll.tick() => {
                // The heartbeat must not outlive the answers: stop when the responder does.
                ended = answerers.take_ended(&mut dp);
                if !ended.is_empty() {
                    break "the userspace responder ended";
                }
                if heartbeat.as_ref().is_some_and(Heartbeat::is_finished) {
                    break "the guard heartbeat failed";
                }
            }
            _ = gratuitous.tick() => {
                for ip in windows.tick(start.elapsed()) {
                    send_round(&sender, &iface, ip, answer_mac);
                }
            }
        }
    };
    let beat = heartbeat.map_or(Ok(()), Heartbeat::stop);
    for ip in &ips {
        dp.withdraw(&iface, *ip).map_err(one_line)?;
    }
    dp.guard_off().map_err(one_line)?;
    ended.extend(answerers.stop_all());
    finish(&answerers, ended)?;
    beat.map_err(one_line)?;
    println!(
        "{outcome}: withdrew {} addresses from {}",
        ips.len(),
        iface.name
    );
    Ok(())
}

/// A failed gratuitous round is logged, not fatal: the program still answers requests.
fn send_round(sender: &Sender, iface: &Interface, ip: IpAddr, mac: Mac) {
    if let Err(e) = sender.announce(iface, ip, mac) {
        tracing::warn!(%ip, iface = %iface.name, "gratuitous round failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{AddressInfo, AttachedMode, AttachmentInfo, InterfaceMode, ServedBy};

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1100ms"), Ok(Duration::from_millis(1100)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
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

    #[test]
    fn text_rendering_shows_every_part() {
        let snapshot = Snapshot {
            pin_dir: PathBuf::from("/sys/fs/bpf/herald"),
            attachments: vec![AttachmentInfo {
                iface: "eth0".into(),
                mode: AttachedMode::Skb,
                present: true,
            }],
            interfaces: vec![
                InterfaceMode {
                    iface: "eth0".into(),
                    dataplane: ServedBy::XdpSkb,
                    pid: None,
                    active: true,
                },
                InterfaceMode {
                    iface: "eth1".into(),
                    dataplane: ServedBy::Userspace,
                    pid: Some(42),
                    active: true,
                },
                InterfaceMode {
                    iface: "eth2".into(),
                    dataplane: ServedBy::Userspace,
                    pid: Some(43),
                    active: false,
                },
            ],
            addresses: vec![AddressInfo {
                iface: Some("eth0".into()),
                ifindex: 2,
                ip: "198.51.100.10".parse().unwrap(),
                mac: Mac([2, 0, 0x5e, 0, 0, 0x10]),
                requests: 3,
                replies: 2,
            }],
            counters: Counters {
                arp_replies: 2,
                na_replies: 0,
                passed: 9,
                malformed: 1,
                silenced: 1,
            },
            guard: GuardState::Stale {
                age_ms: 3000,
                timeout_ms: 2000,
            },
        };
        let text = render_text(&snapshot);
        for part in [
            "eth0 mode xdp-skb\n",
            "eth1 mode userspace (pid 42)\n",
            "eth2 mode userspace (pid 43 is gone: not answering)\n",
            "198.51.100.10",
            "02:00:5e:00:00:10",
            "STALE",
            "arp_replies=2",
            "silenced=1",
        ] {
            assert!(text.contains(part), "{part} missing in:\n{text}");
        }
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["guard"]["state"], "stale");
        assert_eq!(json["addresses"][0]["mac"], "02:00:5e:00:00:10");
        assert_eq!(json["attachments"][0]["mode"], "skb");
        assert_eq!(json["interfaces"][0]["dataplane"], "xdp-skb");
        assert_eq!(json["interfaces"][1]["dataplane"], "userspace");
        assert_eq!(json["interfaces"][1]["pid"], 42);
        assert_eq!(json["interfaces"][2]["active"], false);
    }
}
