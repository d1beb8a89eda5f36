use super::*;

pub(in crate::bench::dataplane) fn step(
    target: Option<u64>,
    offered: f64,
    refused: f64,
) -> StepResult {
    StepResult {
        target,
        offered,
        refused,
        replies: offered,
        probes_sent: 0,
        probes_refused: 0,
        held: 0,
        reflected: false,
        loop_share: None,
        windows: Vec::new(),
        speed: None,
        latencies_ns: Vec::new(),
        probe_tags: Vec::new(),
        splits_ns: Vec::new(),
        node_cpu: CpuShare::default(),
        responder_cpu: 0.0,
        client_cpu: CpuShare::default(),
        ring_drops: 0,
        to_generator: 0,
        wrong_address: 0,
        path: Ok(None),
    }
}

#[test]
fn a_step_that_was_not_what_it_asked_for_says_so() {
    assert!(step(Some(100_000), 99_000.0, 0.0).shortfalls().is_empty());
    assert!(
        step(None, 10.0, 0.0).shortfalls().is_empty(),
        "unpaced asks for no rate"
    );
    assert_eq!(
        step(Some(800_000), 651_000.0, 0.0).shortfalls(),
        ["generator reached 651000/s of 800000/s"]
    );
    let mut unreadable = step(Some(25_000), 25_000.0, 12.0);
    unreadable.path = Err("counters unreadable: ethtool: not found".into());
    assert_eq!(
        unreadable.shortfalls(),
        [
            "12/s refused at send",
            "counters unreadable: ethtool: not found"
        ]
    );
}

#[test]
fn a_saturation_step_is_generator_bound_when_the_responder_idles() {
    let mut s = step(None, 3_100_000.0, 0.0);
    s.replies = 2_900_000.0;
    s.client_cpu.busy = 98.0;
    s.responder_cpu = 59.0;
    assert!(s.generator_bound(), "client saturated, responder 41% idle");
    s.responder_cpu = 93.0;
    assert!(
        !s.generator_bound(),
        "both saturated: the responder's figure"
    );
    s.client_cpu.busy = 70.0;
    s.responder_cpu = 59.0;
    assert!(!s.generator_bound(), "loss with a generator to spare");
    s.replies = s.offered;
    assert!(s.generator_bound(), "nothing lost");
    s.replies = 2_900_000.0;
    s.client_cpu.busy = 98.0;
    assert_eq!(
        s.shortfalls(),
        ["generator-bound (client CPU 98%, responder 59%): replies/s is a floor"]
    );
    s.target = Some(400_000);
    assert!(!s.generator_bound(), "a paced step asks for its rate");
    assert!(
        !s.is_floor(),
        "a paced step that lost some kept up with nothing more"
    );
    s.replies = s.offered;
    assert!(
        s.is_floor(),
        "a paced step that lost nothing: the responder had room"
    );
}

#[test]
fn a_reflected_step_is_generator_bound_unless_the_responder_was_full() {
    let mut s = step(None, 6_500_000.0, 0.0);
    s.reflected = true;
    s.replies = s.offered;
    s.client_cpu.busy = 70.0;
    s.responder_cpu = 95.0;
    assert!(
        !s.generator_bound(),
        "nothing lost, the responder saturated"
    );
    assert!(s.shortfalls().is_empty());
    s.client_cpu.busy = 98.0;
    s.responder_cpu = 91.0;
    assert!(s.generator_bound(), "both near their limit: a floor");
    s.client_cpu.busy = 70.0;
    s.responder_cpu = 60.0;
    assert!(s.generator_bound(), "the responder idled");
    s.client_cpu.busy = 99.0;
    assert_eq!(
        s.shortfalls(),
        ["generator-bound (client CPU 99%, responder 60%): replies/s is a floor"]
    );
    s.responder_cpu = 97.0;
    s.loop_share = Some(0.99);
    assert!(s.shortfalls().is_empty(), "the loop ran the whole step");
    assert!(!s.is_floor(), "responder full, the loop ran its step");
    s.loop_share = Some(LOOP_SHARE_MIN);
    assert!(!s.is_floor(), "exactly the share asked for");
    s.loop_share = None;
    assert!(!s.is_floor(), "no loop stamps: the CPUs decide");
    s.loop_share = Some(0.4);
    assert!(
        s.is_floor(),
        "the loop stalled: less than the step was measured"
    );
    assert_eq!(
        s.shortfalls(),
        ["the reflected loop ran 40% of the step: replies/s is a floor"]
    );
}

#[test]
fn split_percentiles_are_taken_apart() {
    let mut s = step(None, 0.0, 0.0);
    assert_eq!(s.split_us(50.0), None);
    s.splits_ns = vec![(2_000, 50_000), (3_000, 60_000), (4_000, 70_000)];
    assert_eq!(s.split_us(50.0), Some((3.0, 60.0)));
}
