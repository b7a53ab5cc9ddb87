//! `step-throughput`: one-step runs of `/bin/true` (default 2,000), 2 workers × 1 slot with
//! the default worker settings, submitted by `dagrid batch` (one run per empty file) which
//! then follows them to the end; runs/s = runs / (spawn of `dagrid batch` → its exit, after
//! the last run finished). The reference, in the same process run, before and after:
//! `xargs -P <workers × slots> -n 1 /bin/true` over as many arguments.

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::stats::{median, summary};
use dagrid_loadtest::{chain_dag, until_signal, xargs};

/// One-step runs of /bin/true per second, against xargs -P.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Runs per measurement.
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker (`dagrid worker --concurrency`).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// dagrid measurements, each followed by a reference one (after a first reference).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// An extra worker flag, repeatable (e.g. `--worker-arg=--steps-die-with-worker=false`).
    #[arg(long, allow_hyphen_values = true)]
    worker_arg: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let slots = args.workers * args.concurrency;
    let mut cluster =
        Cluster::start(&args.cluster, &[("one", chain_dag("one", 1, "/bin/true"))]).await?;
    let extra: Vec<&str> = args.worker_arg.iter().map(String::as_str).collect();
    cluster
        .add_workers(args.workers, args.concurrency, &extra)
        .await?;
    let files = cluster.make_files("files", args.runs)?;
    println!(
        "step-throughput: {} one-step runs of /bin/true, {} workers × {} slots (dagrid batch), reference xargs -P {slots}",
        args.runs, args.workers, args.concurrency
    );
    let n = args.runs as f64;
    let mut ours = Vec::new();
    let mut refs = Vec::new();
    let reference = |took: std::time::Duration| {
        let rate = n / took.as_secs_f64();
        println!(
            "  xargs -P {slots} /bin/true: {:.3} s, {rate:.0} runs/s",
            took.as_secs_f64()
        );
        rate
    };
    refs.push(reference(xargs(args.runs, slots, &["/bin/true"]).await?));
    for _ in 0..args.rounds.max(1) {
        // Let the workers settle into their blocking reads (an idle cluster at the start).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (took, _) = cluster.batch("one", &files, &[]).await?;
        let rate = n / took.as_secs_f64();
        println!("  dagrid: {:.3} s, {rate:.0} runs/s", took.as_secs_f64());
        ours.push(rate);
        refs.push(reference(xargs(args.runs, slots, &["/bin/true"]).await?));
    }
    let (o, r) = (median(&ours), median(&refs));
    summary(
        "step-throughput",
        &format!("{o:.0} runs/s"),
        &format!("{r:.0} runs/s (xargs -P {slots})"),
        Some(o / r),
    );
    Ok(())
}
