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
    Ok(())
}
