//! Saturation in turns: Herald's program and the kernel answering for the same VIP at
//! saturation, one after the other in short unpaced steps of the same run. The VIPs are on the
//! node interface throughout; with Herald's program attached it answers (XDP_TX before the
//! stack sees the request), detached the kernel does, so each turn takes that responder's own
//! path, with nothing of the other in it.
//!
//! Measured minutes apart (the headline table), the two saturation figures differ by what the
//! shared host did meanwhile: its speed moves by itself for seconds at a time. Here the turns
//! run in pairs, one of each, and the order within a pair alternates (ABBA: each protocol starts
//! with whoever answered last), so the two figures of a pair are seconds apart and a steady
//! drift favours Herald in one pair and the kernel in the next; the ratio is the median of the
//! pairs'.

use std::time::Duration;

use anyhow::{Result, bail};

use super::lab::Lab;
use super::measure::Engine;
use super::requests::traffic;
use super::results::{Alternation, Mode, Proto, Turn};
use super::svg;

/// How many pairs of turns, how long each, and the paced rate of the warm-up before each.
pub struct Turns {
    pub pairs: usize,
    pub time: Duration,
    pub warm_rate: u64,
}

/// Who answers each turn (`true`: Herald) for `pairs` pairs starting with `first`: ABBA, so
/// each pair holds one of each and the order within pairs alternates.
pub fn order(pairs: usize, first: bool) -> Vec<bool> {
    (0..pairs)
        .flat_map(|i| {
            let lead = first ^ (i % 2 == 1);
            [lead, !lead]
        })
        .collect()
}

/// Which responder is answering, and switching between them.
struct Answering<'a> {
    lab: &'a Lab,
    xdp_mode: &'static str,
    /// Herald's program is attached; `None` once a switch failed half-way (not known).
    herald: Option<bool>,
}

impl Answering<'_> {
    fn switch_to(&mut self, engine: &mut Engine, herald: bool) -> Result<()> {
        if self.herald == Some(herald) {
            return Ok(());
        }
        self.herald = None;
        if herald {
            // Attaching is idempotent: an attached program is left as it is.
            engine.responder_pids = self.lab.start_xdp(self.xdp_mode)?;
        } else {
            self.lab.stop_xdp()?;
            self.herald = Some(false);
            engine.responder_pids = self.lab.node_napi()?;
        }
        self.herald = Some(herald);
        Ok(())
    }
}

/// Both protocols in turns with Herald's program in `mode`, which must be attached when this
/// is called. Whatever happens, Herald's program is attached again and the kernel's addresses
/// are removed afterwards (both are tried). The outer error: one of those failed, so what
/// follows in the mode would not measure what it says; the inner one: the turns failed, and
/// Herald answers alone again.
pub fn measure(
    lab: &Lab,
    engine: &mut Engine,
    mode: Mode,
    turns: &Turns,
) -> Result<Result<Vec<Alternation>>> {
    let xdp_mode = match mode {
        Mode::Driver => "driver",
        Mode::Skb => "skb",
        Mode::Userspace | Mode::Kernel => bail!("turns are for Herald's XDP modes"),
    };
    let mut answering = Answering {
        lab,
        xdp_mode,
        herald: Some(true),
    };
    let out = lab
        .start_kernel()
        .and_then(|()| measure_both(engine, &mut answering, mode, turns));
    let attached = answering.switch_to(engine, true);
    let removed = lab.stop_kernel();
    attached?;
    removed?;
    Ok(out)
}

fn measure_both(
    engine: &mut Engine,
    answering: &mut Answering<'_>,
    mode: Mode,
    turns: &Turns,
) -> Result<Vec<Alternation>> {
    let mut out = Vec::new();
    for proto in [Proto::Arp, Proto::Ndp] {
        let t = traffic(proto);
        let mut alternation = Alternation {
            proto,
            turns: Vec::new(),
        };
        // Each protocol starts with whoever answers now: one switch fewer.
        for herald in order(turns.pairs, answering.herald.unwrap_or(true)) {
            answering.switch_to(engine, herald)?;
            let who = if herald { "Herald" } else { "the kernel" };
            if !engine.wait_answered(&t.probes[0], Duration::from_secs(10))? {
                bail!("turns: {who} never answered a {} probe", proto.file());
            }
            engine.warm_up(&t.load, &t.probes, turns.warm_rate)?;
            let step = engine.step(&t.load, &t.probes, None, turns.time)?;
            let mut turn = Turn::of(herald, &step);
            turn.wrong = wrong_responder(mode, &turn);
            println!(
                "   {} turn {}, {}: replies {}/s{}, XDP_TX {}, machine speed {}",
                proto.file(),
                alternation.turns.len() + 1,
                turn.who(),
                svg::si(turn.replies),
                if turn.floor { " (a floor)" } else { "" },
                turn.xdp_tx.map_or("-".into(), |n| n.to_string()),
                step.speed_text()
            );
            if let Some(why) = &turn.wrong {
                println!("          NOT AS ASKED: {why}");
            }
            alternation.turns.push(turn);
        }
        println!("   {} {}", proto.file(), alternation.text());
        out.push(alternation);
    }
    Ok(out)
}

/// In driver mode the node driver's XDP_TX counter tells who answered: Herald's turns send
/// their replies that way, the kernel's none. (In skb mode the program's XDP_TX goes out as an
/// ordinary transmit, so the counter cannot tell.)
pub fn wrong_responder(mode: Mode, turn: &Turn) -> Option<String> {
    let sent = turn.xdp_tx?;
    if mode != Mode::Driver {
        return None;
    }
    match (turn.herald, sent) {
        (true, 0) => Some("Herald's turn sent nothing by XDP_TX: the kernel answered".into()),
        (false, n) if n > 0 => Some(format!(
            "the kernel's turn sent {n} frames by XDP_TX: Herald's program was still attached"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_run_abba_one_of_each_per_pair() {
        assert_eq!(order(3, true), [true, false, false, true, true, false]);
        assert_eq!(order(2, false), [false, true, true, false]);
        assert!(order(0, true).is_empty());
        for pairs in 0..6 {
            for first in [true, false] {
                let o = order(pairs, first);
                assert_eq!(o.len(), 2 * pairs);
                assert_eq!(o.first().copied(), (pairs > 0).then_some(first));
                assert!(o.chunks(2).all(|p| p[0] != p[1]));
            }
        }
    }

    #[test]
    fn the_drivers_counter_tells_who_answered() {
        let turn = |herald, xdp_tx| Turn {
            herald,
            replies: 1.0,
            floor: false,
            xdp_tx,
            wrong: None,
        };
        assert_eq!(wrong_responder(Mode::Driver, &turn(true, Some(5))), None);
        assert_eq!(wrong_responder(Mode::Driver, &turn(false, Some(0))), None);
        assert!(wrong_responder(Mode::Driver, &turn(true, Some(0))).is_some());
        assert!(wrong_responder(Mode::Driver, &turn(false, Some(3))).is_some());
        // skb mode, or counters not read: nothing to tell by.
        assert_eq!(wrong_responder(Mode::Skb, &turn(true, Some(0))), None);
        assert_eq!(wrong_responder(Mode::Driver, &turn(true, None)), None);
    }
}
