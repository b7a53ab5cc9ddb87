//! `scale`: many slots on one coordinator. Steps of `sleep 2`, 8 workers × 50 slots, 4,000
//! one-step runs submitted and followed by `dagrid batch`; throughput = runs / (spawn of
//! `dagrid batch` → its exit after the last run finished), against the ideal of
//! slots / 2 s = 200 steps/s (20 s of work). For what this machine itself allows, the
//! reference `xargs -P 400 -n 1 sleep 2` over as many arguments follows (`--no-xargs`: skip).

use std::time::Duration;

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::stats::summary;
use dagrid_loadtest::{chain_dag, until_signal, xargs};

/// Throughput of many slots against the ideal.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Runs (default: 20 s of work at the ideal rate).
    #[arg(long, default_value_t = 4000)]
    runs: usize,
    /// Seconds each step sleeps.
    #[arg(long, default_value_t = 2.0)]
    sleep: f64,
    /// Skip the xargs reference.
    #[arg(long)]
    no_xargs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let slots = args.workers * args.concurrency;
    let ideal = slots as f64 / args.sleep;
    let command = format!("sleep {}", args.sleep);
    let mut cluster =
        Cluster::start(&args.cluster, &[("nap", chain_dag("nap", 1, &command))]).await?;
    cluster
        .add_workers(args.workers, args.concurrency, &[])
        .await?;
    let files = cluster.make_files("files", args.runs)?;
    println!(
        "scale: {} runs of `{command}`, {} workers × {} slots = {slots} slots, one coordinator; ideal {ideal:.0} steps/s ({:.1} s)",
        args.runs,
        args.workers,
        args.concurrency,
        args.runs as f64 / ideal
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (took, _) = cluster.batch("nap", &files, &[]).await?;
    let rate = args.runs as f64 / took.as_secs_f64();
    println!(
        "  dagrid: {:.2} s, {rate:.1} steps/s = {:.3} of ideal",
        took.as_secs_f64(),
        rate / ideal
    );
    drop(cluster);
    if !args.no_xargs {
        let words: Vec<&str> = command.split(' ').collect();
        let took = xargs(args.runs, slots, &words).await?;
        let r = args.runs as f64 / took.as_secs_f64();
        println!(
            "  xargs -P {slots} {command}: {:.2} s, {r:.1} steps/s = {:.3} of ideal",
            took.as_secs_f64(),
            r / ideal
        );
    }
    summary(
        "scale",
        &format!("{rate:.1} steps/s"),
        &format!("ideal {ideal:.0} steps/s (target ≥ 0.95 of it)"),
        Some(rate / ideal),
    );
    Ok(())
}
