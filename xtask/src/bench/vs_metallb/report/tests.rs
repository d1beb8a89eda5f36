use super::*;

/// The table row starting with `start`, or "" when there is none.
fn row<'a>(table: &'a str, start: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_default()
}

fn saturation(replies: f64) -> Saturation {
    Saturation {
        replies,
        offered: replies * 2.0,
        p50_us: Some(20.0),
        p99_us: Some(15_000.0),
        low_rate: 5000.0,
        low_p50_us: Some(10.0),
        low_p99_us: None,
        generator_max: 400_000.0,
        generator_limited: false,
        responder_cpu: None,
        runs: vec![replies],
        failed_runs: 0,
    }
}

fn figures(replies: f64, p99_ms: f64, all_ms: f64) -> Figures {
    Figures {
        arp: Ok(saturation(replies)),
        ndp: Ok(saturation(replies / 2.0)),
        direct_arp: Ok(saturation(replies * 3.0)),
        direct_ndp: Ok(saturation(replies * 2.0)),
        direct_mode: None,
        direct_skb_arp: Err("not measured".into()),
        direct_skb_ndp: Err("not measured".into()),
        failover: Ok(Failover {
            trials: 20,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            max_ms: p99_ms,
        }),
        services: Ok(Services {
            count: 1000,
            all_ms,
        }),
    }
}

#[test]
fn targets_compare_herald_to_metallb() {
    let ten = Target::AtLeastTimes(10.0);
    assert_eq!(ten.met(310_000.0, 31_000.0), Some(true));
    assert_eq!(ten.met(309_999.0, 31_000.0), Some(false));
    assert_eq!(ten.met(1.0, 0.0), None, "no MetalLB figure to compare with");
    let third = Target::AtMostTimes(1.0 / 3.0);
    assert_eq!(third.met(500.0, 6000.0), Some(true));
    assert_eq!(third.met(2500.0, 6000.0), Some(false));
    let no_slower = Target::AtMostTimes(1.0);
    assert_eq!(no_slower.met(10.0, 10.0), Some(true));
    assert_eq!(no_slower.met(10.5, 10.0), Some(false));
    assert_eq!(no_slower.met(f64::NAN, 10.0), None);
}

#[test]
fn the_median_run_is_one_run_never_a_mean() {
    assert_eq!(median_index(&[3.0, 1.0, 2.0]), Some(2));
    assert_eq!(median_index(&[5.0]), Some(0));
    // Even count: the lower middle run.
    assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
    assert_eq!(median_index(&[]), None);
    assert_eq!(median_index(&[1.0, f64::NAN]), None);
}

#[test]
fn repeated_runs_print_their_spread_and_flag_disagreement() {
    let single = table(
        &figures(400_000.0, 550.0, 9_000.0),
        &figures(30_000.0, 6_900.0, 12_000.0),
    );
    assert!(
        !single.contains("back-to-back runs"),
        "one run has no spread"
    );
    let mut herald = figures(400_000.0, 550.0, 9_000.0);
    let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
    if let Ok(arp) = herald.arp.as_mut() {
        arp.runs = vec![380_000.0, 400_000.0, 420_000.0];
    }
    if let Ok(arp) = metallb.arp.as_mut() {
        arp.runs = vec![30_000.0, 10_000.0, 31_000.0];
        arp.failed_runs = 1;
    }
    let t = table(&herald, &metallb);
    assert!(t.contains("over 4 back-to-back runs"), "{t}");
    assert!(
        t.contains(
            "- ARP, segment: Herald 400.0k/s (380.0k/s–420.0k/s, ±5%); MetalLB 30.0k/s (10.0k/s–31.0k/s, ±67%) UNSTABLE: runs disagree by more than ±30%; 1 run(s) failed"
        ),
        "{t}"
    );
    let arp = row(&t, "| ARP, segment replies/s");
    assert!(
        arp.ends_with("| **yes** (UNSTABLE: runs disagree by more than ±30%) |"),
        "{arp}"
    );
    let ndp = row(&t, "| NDP, segment replies/s");
    assert!(ndp.ends_with("| **yes** |"), "{ndp}");
}

#[test]
fn percentiles_use_nearest_rank() {
    let v: Vec<f64> = (1..=20).map(f64::from).rev().collect();
    assert_eq!(percentile(&v, 50.0), Some(10.0));
    assert_eq!(percentile(&v, 99.0), Some(20.0));
    assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn table_shows_ratios_and_verdicts() {
    let t = table(
        &figures(400_000.0, 550.0, 9_000.0),
        &figures(30_000.0, 6_900.0, 12_000.0),
    );
    let line = |start: &str| {
        t.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
            .to_string()
    };
    let arp = line("| ARP, segment replies/s at saturation");
    assert!(arp.contains("400.0k/s") && arp.contains("30.0k/s"), "{arp}");
    assert!(
        arp.contains("13.3×") && arp.ends_with("| **yes** |"),
        "{arp}"
    );
    let ndp = line("| NDP, segment replies/s at saturation");
    assert!(ndp.contains("13.3×"), "{ndp}");
    let p99 = line("| failover on speaker frozen (SIGSTOP), p99 (20 trials)");
    assert!(p99.contains("550 ms") && p99.contains("6900 ms"), "{p99}");
    assert!(
        p99.contains("0.08×") && p99.ends_with("| **yes** |"),
        "{p99}"
    );
    let services = line("| 1000 Services → all have their IPs");
    assert!(
        services.contains("9.0 s") && services.contains("12.0 s"),
        "{services}"
    );
    assert!(services.contains("0.75×") && services.ends_with("| **yes** |"));
    let latency = line("| ARP, segment reply latency p99 at saturation");
    assert!(latency.contains("15.0 ms"), "{latency}");
    assert!(line("| ARP, segment reply latency p99 at 5.0k/s offered").contains("| – |"));
    assert!(!t.contains("Not measured"));
}

#[test]
fn a_floor_is_marked_and_a_missed_target_stays_open() {
    let mut herald = figures(100_000.0, 550.0, 9_000.0);
    if let Ok(arp) = herald.arp.as_mut() {
        arp.generator_limited = true;
    }
    let t = table(&herald, &figures(30_000.0, 6_900.0, 12_000.0));
    let arp = row(&t, "| ARP, segment replies/s");
    assert!(
        arp.contains("| ≥ 100.0k/s |") && arp.contains("| ≥ 3.33× |"),
        "{arp}"
    );
    assert!(arp.ends_with("| open (Herald not saturated) |"), "{arp}");
    assert!(t.contains("a reflected loop ran under 95% of its step: the figure is a floor"));
    let ndp = row(&t, "| NDP, segment replies/s");
    assert!(
        ndp.ends_with("| **no** |"),
        "an exact figure stays a verdict: {ndp}"
    );
}

#[test]
fn direct_link_rows_name_the_mode_and_compare_skb_with_the_same_metallb_figure() {
    let mut herald = figures(400_000.0, 550.0, 9_000.0);
    herald.direct_mode = Some("driver".into());
    herald.direct_skb_arp = Ok(saturation(250_000.0));
    herald.direct_skb_ndp = Err("probe never answered".into());
    if let Ok(arp) = herald.direct_arp.as_mut() {
        arp.responder_cpu = Some(60.0);
    }
    let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
    if let Ok(arp) = metallb.direct_arp.as_mut() {
        arp.responder_cpu = Some(100.0);
    }
    let t = table(&herald, &metallb);
    let line = |start: &str| {
        t.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
            .to_string()
    };
    let driver = line("| ARP, direct link (Herald XDP driver mode) replies/s at saturation");
    assert!(
        driver.contains("| 1.20M/s | 90.0k/s | 13.3× |") && driver.ends_with("| **yes** |"),
        "{driver}"
    );
    let skb = line("| ARP, direct link (Herald XDP skb mode) replies/s at saturation");
    assert!(
        skb.contains("| 250.0k/s | 90.0k/s | 2.78× |") && skb.ends_with("| **no** |"),
        "{skb}"
    );
    let cpu = line(
        "| ARP, direct link (Herald XDP driver mode): responder CPU at saturation (% of one core)",
    );
    assert!(cpu.contains("| 60% | 100% | 0.60× |"), "{cpu}");
    let per_reply = line("| ARP, direct link (Herald XDP driver mode): responder CPU per reply");
    assert!(per_reply.contains("| 0.50 µs | 11.11 µs |"), "{per_reply}");
    assert!(
        !t.contains("| ARP, segment: responder CPU"),
        "no CPU rows where none was measured"
    );
    let skb_ndp = line("| NDP, direct link (Herald XDP skb mode) replies/s at saturation");
    assert!(skb_ndp.ends_with("| not measured |"), "{skb_ndp}");
    // Without a second mode there is one direct section per protocol.
    let plain = table(&figures(400_000.0, 550.0, 9_000.0), &metallb);
    assert!(plain.contains("| ARP, direct link replies/s at saturation |"));
    assert!(!plain.contains("skb mode"));
    let mut lost = metallb.clone();
    lost.direct_ndp = Err("no node answered NS".into());
    let t = table(&herald, &lost);
    assert!(t.contains("- MetalLB NDP (direct link): no node answered NS"));
}

#[test]
fn parts_measured_for_neither_have_no_rows() {
    let mut herald = figures(400_000.0, 550.0, 9_000.0);
    let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
    for f in [&mut herald, &mut metallb] {
        f.failover = Err("not selected (--parts)".into());
        f.services = Err("not selected (--parts)".into());
    }
    let t = table(&herald, &metallb);
    assert!(!t.contains("| failover on speaker frozen"), "{t}");
    assert!(!t.contains("Services → all have their IPs"), "{t}");
    assert!(
        t.contains("- Herald failover: not selected (--parts)"),
        "{t}"
    );
}

#[test]
fn missing_figures_are_named_with_the_reason() {
    let mut metallb = figures(30_000.0, 6_900.0, 12_000.0);
    metallb.failover = Err("no other node answered within 15 s".into());
    let t = table(&figures(400_000.0, 550.0, 9_000.0), &metallb);
    assert!(t.contains("- MetalLB failover: no other node answered within 15 s"));
    let p99 = t
        .lines()
        .find(|l| l.contains("p99 (20 trials)"))
        .unwrap_or_default();
    assert!(p99.ends_with("| not measured |"), "{p99}");
    let slow = table(
        &figures(100_000.0, 3000.0, 13_000.0),
        &figures(30_000.0, 6000.0, 12_000.0),
    );
    let arp = row(&slow, "| ARP, segment replies/s");
    assert!(arp.ends_with("| **no** |"), "{arp}");
}
