//! Baton's executions per second beside its peers', from the JSON each
//! benchmark wrote in the same run.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// JSON written by `baton-bench embedded --json`.
    #[arg(long)]
    pub baton: PathBuf,
    /// Files of JSON lines written by the peer drivers (bench/peers/run.sh).
    #[arg(long = "peer")]
    pub peers: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct PeerResult {
    system: String,
    workload: String,
    executions: usize,
    in_flight: usize,
    executions_per_s: f64,
    steps_per_s: f64,
    #[serde(default)]
    load_before: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct BatonResult {
    workload: String,
    executions_per_s: f64,
    steps_per_s: f64,
    in_flight: usize,
    #[serde(default = "one")]
    workers: usize,
    /// Absent from reports written before conflicts were counted.
    #[serde(default)]
    conflicts_per_execution: Option<f64>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
struct BatonReport {
    loaded: Vec<BatonResult>,
}

/// Targets for the 10-step workload: Baton at least this many times each peer.
fn target(system: &str) -> Option<f64> {
    match system {
        "restate" => Some(2.0),
        "dbos" => Some(5.0),
        _ => None,
    }
}

pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.baton)
        .with_context(|| format!("reading {}", args.baton.display()))?;
    let baton: BatonReport = serde_json::from_str(&text).context("Baton's results")?;
    let mut peers = Vec::new();
    for path in &args.peers {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            peers.push(
                serde_json::from_str::<PeerResult>(line)
                    .with_context(|| format!("a line of {}", path.display()))?,
            );
        }
    }
    println!(
        "executions/s at each system's best in-flight setting (load average at its start in brackets):"
    );
    let mut workloads: Vec<&str> = baton.loaded.iter().map(|b| b.workload.as_str()).collect();
    workloads.dedup();
    let mut systems: Vec<&str> = peers.iter().map(|p| p.system.as_str()).collect();
    systems.sort();
    systems.dedup();
    for workload in workloads {
        let Some(b) = baton
            .loaded
            .iter()
            .filter(|b| b.workload == workload)
            .max_by(|x, y| x.executions_per_s.total_cmp(&y.executions_per_s))
        else {
            continue;
        };
        println!(
            "  {:<12} baton    {:>8.1}/s ({:>7.0} steps/s, {} in flight)",
            b.workload, b.executions_per_s, b.steps_per_s, b.in_flight
        );
        for system in &systems {
            let Some(best) = peers
                .iter()
                .filter(|p| p.system == *system && p.workload == b.workload)
                .max_by(|x, y| x.executions_per_s.total_cmp(&y.executions_per_s))
            else {
                continue;
            };
            let ratio = b.executions_per_s / best.executions_per_s;
            let verdict = match target(system) {
                Some(t) if b.workload == "sequence-10" => {
                    format!(
                        "  (target >= {t}x: {})",
                        if ratio >= t { "met" } else { "missed" }
                    )
                }
                _ => String::new(),
            };
            println!(
                "  {:<12} {:<8} {:>8.1}/s ({:>7.0} steps/s, {} in flight, {} executions) [{:.2}]  baton/{system} = {ratio:.2}x{verdict}",
                "",
                system,
                best.executions_per_s,
                best.steps_per_s,
                best.in_flight,
                best.executions,
                best.load_before
            );
        }
    }
    for system in &systems {
        table(&baton.loaded, &peers, system);
    }
    Ok(())
}

/// Every Baton run beside the peer's best for the same workload (and its run
/// at the same in-flight setting, if there was one), then the fan-out's
/// targets: at 64 in flight, at least twice the peer's executions/s, steps/s
/// within 1.5x of the sequence's, and at most one version conflict per
/// execution with a single worker.
fn table(baton: &[BatonResult], peers: &[PeerResult], system: &str) {
    let best = |workload: &str| {
        peers
            .iter()
            .filter(|p| p.system == system && p.workload == workload)
            .max_by(|x, y| x.executions_per_s.total_cmp(&y.executions_per_s))
    };
    let same = |workload: &str, in_flight: usize| {
        peers
            .iter()
            .find(|p| p.system == system && p.workload == workload && p.in_flight == in_flight)
    };
    println!();
    println!(
        "| workload | in flight | baton executions/s | baton steps/s | conflicts/execution | {system} at the same in flight | {system} best (in flight) | baton / {system} best |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for b in baton {
        let conflicts = b
            .conflicts_per_execution
            .map_or("-".to_string(), |c| format!("{c:.3}"));
        let at_same = same(&b.workload, b.in_flight)
            .map_or("-".to_string(), |p| format!("{:.1}", p.executions_per_s));
        let (peer_best, ratio) = match best(&b.workload) {
            Some(p) => (
                format!("{:.1} ({})", p.executions_per_s, p.in_flight),
                format!("**{:.2}x**", b.executions_per_s / p.executions_per_s),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "| {} | {} | {:.1} | {:.0} | {conflicts} | {at_same} | {peer_best} | {ratio} |",
            b.workload, b.in_flight, b.executions_per_s, b.steps_per_s
        );
    }
    let run = |workload: &str, in_flight: usize| {
        baton
            .iter()
            .find(|b| b.workload == workload && b.in_flight == in_flight)
    };
    let (Some(fan_out), Some(sequence)) = (run("fan-out-10", 64), run("sequence-10", 64)) else {
        return;
    };
    let verdict = |met: bool| if met { "met" } else { "missed" };
    if let Some(p) = best("fan-out-10") {
        let ratio = fan_out.executions_per_s / p.executions_per_s;
        println!(
            "fan-out at 64 in flight >= 2x {system}'s best: {ratio:.2}x, {}",
            verdict(ratio >= 2.0)
        );
    }
    let steps = sequence.steps_per_s / fan_out.steps_per_s;
    println!(
        "fan-out steps/s at 64 in flight within 1.5x of the sequence's: the sequence runs {steps:.2}x the fan-out's, {}",
        verdict(steps <= 1.5)
    );
    for b in baton
        .iter()
        .filter(|b| b.workload == "fan-out-10" && b.workers == 1)
    {
        if let Some(c) = b.conflicts_per_execution {
            println!(
                "version conflicts per fan-out execution at {} in flight (one worker) <= 1: {c:.3}, {}",
                b.in_flight,
                verdict(c <= 1.0)
            );
        }
    }
}
