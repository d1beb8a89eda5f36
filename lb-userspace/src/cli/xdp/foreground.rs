//! The foreground commands: `attach` when this process answers in userspace, and `run`, whose
//! guard heartbeat lives exactly as long as the process.

use super::render::{print_serving, print_summary};
use lb_common::ratelimit::RateLimit;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::{RunArgs, interface, one_line, parse_ip, parse_mac};
use crate::dataplane::answerers::{self, Answerers, Serving};
use crate::dataplane::cadence::{Cadence, Windows};
use crate::dataplane::gratuitous::Sender;
use crate::dataplane::heartbeat::{Beat, Heartbeat, OnError};
use crate::dataplane::keys::{self, Mac};
use crate::dataplane::netdev::Interface;
use crate::dataplane::{AttachMode, Dataplane, DataplaneChoice, DataplaneError, GuardState};

/// Writes the limits given on the command line; the pinned values stay for those not given.
fn set_limits(
    dp: &mut Dataplane,
    rate_limit: Option<RateLimit>,
    flood_limit: Option<RateLimit>,
) -> Result<()> {
    if let Some(limit) = rate_limit {
        dp.set_rate_limit(limit).map_err(one_line)?;
    }
    if let Some(limit) = flood_limit {
        dp.set_flood_limit(limit).map_err(one_line)?;
    }
    Ok(())
}

pub(super) fn attach(
    pin_dir: &Path,
    iface: &str,
    mode: AttachMode,
    choice: DataplaneChoice,
    [rate_limit, flood_limit]: [Option<RateLimit>; 2],
) -> Result<()> {
    let iface = interface(iface)?;
    let mut dp = Dataplane::open(pin_dir).map_err(one_line)?;
    set_limits(&mut dp, rate_limit, flood_limit)?;
    let mut answerers = Answerers::new(pin_dir, choice, mode);
    let serving = answerers.serve(&mut dp, &iface).map_err(one_line)?;
    print_serving(&iface.name, &serving);
    // Maps created closed answer nothing until armed; attached by hand, with no daemon to keep
    // a heartbeat, they answer for good (`herald xdp run` keeps a guard instead).
    if dp.guard_state().map_err(one_line)? == GuardState::Closed {
        dp.guard_off().map_err(one_line)?;
        println!("guard: off (answers never expire; `herald xdp run` keeps a guard)");
    }
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

/// Foreground responder: the guard's heartbeat lives exactly as long as this process, so a
/// killed or hung process stops the answers after `--guard-timeout`.
pub(super) async fn run_foreground(pin_dir: &Path, args: RunArgs) -> Result<()> {
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
    set_limits(&mut dp, args.rate_limit, args.flood_limit)?;
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
