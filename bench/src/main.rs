//! `baton-bench`: prints Baton's throughput, overhead, memory and cost figures.
//! Timings are printed, never asserted; `bench/run.sh` runs every part.

mod compare;
mod cost;
mod disk;
mod embedded;
mod logs;
mod meter;
mod sys;
mod workloads;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton-bench", about = "Baton's benchmarks (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The machine, and the disk's durable-commit rate.
    Machine {
        /// Seconds per journal mode.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The two workloads end to end on the embedded backend.
    Embedded(embedded::EmbeddedArgs),
    /// A worker's memory with many executions waiting on timers.
    Timers(embedded::TimersArgs),
    /// Requests, units and cost per step on AWS, counted on moto server.
    Cost(cost::CostArgs),
    /// Baton's executions per second beside the peers'.
    Compare(compare::CompareArgs),
    /// (internal) A worker on an existing database; prints its memory.
    #[command(hide = true)]
    WorkerMemory(embedded::WorkerMemoryArgs),
    /// (internal) The AWS coordinator loop alone; prints its memory.
    #[command(hide = true)]
    CoordinatorMemory(cost::CoordinatorMemoryArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Machine { seconds, dir, json } => {
                let machine = sys::machine();
                println!(
                    "{} x {}, {:.1} GB; load average {:.2}",
                    machine.cores,
                    machine.cpu,
                    machine.memory_gb,
                    sys::load_average()
                );
                let rates =
                    disk::commit_rates(&dir.unwrap_or_else(std::env::temp_dir), seconds)?;
                rates.print();
                if let Some(path) = json {
                    let value = serde_json::json!({ "machine": machine, "commit_rates": rates, "load_average": sys::load_average() });
                    std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
                }
                Ok(())
            }
            Command::Embedded(args) => embedded::run(&args).await.map(drop),
            Command::Timers(args) => embedded::timers(&args).await.map(drop),
            Command::Cost(args) => {
                logs::install();
                cost::run(&args).await.map(drop)
            }
            Command::Compare(args) => compare::run(&args),
            Command::WorkerMemory(args) => embedded::worker_memory(&args).await,
            Command::CoordinatorMemory(args) => cost::coordinator_process(&args).await,
        }
    })
}
