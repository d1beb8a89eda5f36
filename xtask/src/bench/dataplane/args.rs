//! The bench's command line.

use super::measure;
use super::results::Mode;

#[derive(clap::Args)]
pub struct Args {
    /// Offered rates (requests/s) of the paced steps; an unpaced step follows them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,100000,200000,400000,800000,1600000"
    )]
    pub rates: Vec<u64>,
    /// Length of each step in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub step_ms: u64,
    /// Length of the lowest-rate step in milliseconds (at least `--step-ms`): its p99 is the
    /// headline tail, taken over one probe per millisecond, so a longer step gives it more.
    #[arg(long, default_value_t = 10000)]
    pub tail_ms: u64,
    /// Length of the side-by-side step (Herald and the kernel answering in one step, probes
    /// alternating) in milliseconds, per XDP mode and protocol. The client CPU's speed moves
    /// between two levels for seconds at a time on a shared host, and the two tails' ratio
    /// with it, so the step spans several of those spells.
    #[arg(long, default_value_t = 30000)]
    pub beside_ms: u64,
    /// Length of the bad-input flood per responder in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub flood_ms: u64,
    /// Junk frames/s of the bad-input flood, the same for every responder, paced by the
    /// generator's program in bursts of a few frames; 0: as fast as the generator goes. The
    /// default is a rate the flood reaches in every run on a 2-CPU VM whose kernel refuses live
    /// frames (its circle's top speed moved between 1.2 and 2.4M/s from run to run, so an
    /// unreachable rate asked a different flood of every run).
    #[arg(long, default_value_t = 1_000_000)]
    pub flood_rate: u64,
    /// Pairs of saturation turns per XDP mode and protocol: Herald's program and the kernel at
    /// saturation one after the other, seconds apart, the order alternating from pair to pair
    /// (ABBA; an even number balances a steady drift); 0: none.
    #[arg(long, default_value_t = 4)]
    pub turn_pairs: usize,
    /// Length of each saturation turn in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub turn_ms: u64,
    /// Responders to measure (driver, skb, userspace, kernel).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "driver,skb,userspace,kernel"
    )]
    pub modes: Vec<Mode>,
    /// Load generator: AF_PACKET for paced steps and the kernel's XDP live frames for unpaced
    /// ones (mixed, the default), or one of them for every step.
    #[arg(long, value_enum, default_value_t = measure::Generator::Mixed)]
    pub generator: measure::Generator,
    /// Runs of every responder, back to back; the headline figures are reported as the median
    /// of the runs with their range and spread, flagged beyond ±30%.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Use the existing target/release/herald instead of building it first.
    #[arg(long)]
    pub no_build: bool,
    /// Leave real-time throttling in the kernel's periods (1 s) instead of holding 10 ms ones
    /// for the run: for comparison (the saturation steps' tails then reach tens of ms).
    #[arg(long)]
    pub kernel_rt_period: bool,
    /// Leave the machine's other threads free to run on the node CPU instead of keeping it for
    /// the lab: for comparison (a task in a long stretch of kernel code there holds off the
    /// node's NAPI thread while the veth's 256-slot ring overflows).
    #[arg(long)]
    pub shared_node_cpu: bool,
    /// The flood guard Herald's program is attached with (`PER_SECOND[/BURST]`, as `herald xdp
    /// attach --flood-limit`); default: Herald's own.
    #[arg(long)]
    pub flood_limit: Option<String>,
}
