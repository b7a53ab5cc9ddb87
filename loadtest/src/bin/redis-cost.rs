//! `redis-cost`: the Redis work of a run. 10,000 one-step runs of `/bin/true`, then 3,000
//! runs of a chain of three, on 2 workers × 1 slot, submitted and followed by `dagrid batch`;
//! per run: the redis-server's CPU (`INFO cpu` `used_cpu_sys + used_cpu_user`, and the main
//! thread's when the server reports it, before → after; and of it `used_cpu_sys`, the time in
//! system calls) and the commands of `INFO commandstats` (after `CONFIG RESETSTAT`); and the
//! ceiling that implies for one Redis:
//! steps/s = 1 / (Redis CPU per step). The idle cost (heartbeats, blocking reads that time
//! out) is measured first and shown, not subtracted. Beside them, the reads and writes of
//! client sockets per run (`INFO stats`): each is a system call of the server, whatever it
//! carries, so fewer of them (pipelining) is less Redis CPU for the same commands. The services reach Redis over loopback
//! TCP unless `--redis-over unix`: the figure stands for one Redis serving a whole cluster.

use std::time::{Duration, Instant};

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs, Transport};
use dagrid_loadtest::redis_info::{command_stats, print_command_table, reset_stats, Cpu};
use dagrid_loadtest::stats::summary;
use dagrid_loadtest::{chain_dag, until_signal};

/// Redis CPU and commands per run.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// One-step runs.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Runs of three steps (0: skip).
    #[arg(long, default_value_t = 3_000)]
    runs_3: usize,
    /// Workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of idle cluster over which the idle Redis CPU is measured first.
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

/// What one batch cost Redis.
struct Cost {
    /// Redis CPU per run, ms.
    per_run_ms: f64,
}

async fn measure(
    cluster: &Cluster,
    dag: &str,
    runs: usize,
    steps: usize,
    idle_ms_per_s: f64,
) -> anyhow::Result<Cost> {
    let files = cluster.make_files(&format!("files-{dag}"), runs)?;
    let mut conn = cluster.redis();
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_stats(&mut conn).await?;
    let before = Cpu::read(&mut conn).await?;
    let io_before = io_counts(&mut conn).await?;
    let started = Instant::now();
    let (took, _) = cluster.batch(dag, &files, &[]).await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = Cpu::read(&mut conn).await?.since(before);
    let io_after = io_counts(&mut conn).await?;
    let stats = command_stats(&mut conn).await?;
    let n = runs as f64;
    let per_run_ms = cpu.total * 1000.0 / n;
    println!(
        "{dag} ({steps} step{}): {runs} runs in {:.2} s ({:.0} runs/s); Redis CPU {:.2} s = {per_run_ms:.3} ms/run, {:.3} ms/step{}, of which system calls {:.3} ms/run; idle share ≈ {:.3} ms/run",
        if steps == 1 { "" } else { "s" },
        took.as_secs_f64(),
        n / took.as_secs_f64(),
        cpu.total,
        per_run_ms / steps as f64,
        match cpu.main_thread {
            Some(m) => format!(" (main thread {:.3} ms/run)", m * 1000.0 / n),
            None => String::new(),
        },
        cpu.sys * 1000.0 / n,
        idle_ms_per_s * wall / n,
    );
    print_command_table(&stats, n, "run");
    println!(
        "  request cycles: {:.2} reads and {:.2} writes of client sockets per run (`INFO stats` total_reads_processed, total_writes_processed: each costs Redis a system call, whatever it carries)",
        io_after.0.saturating_sub(io_before.0) as f64 / n,
        io_after.1.saturating_sub(io_before.1) as f64 / n,
    );
    println!(
        "  implied ceiling of one Redis: {:.0} runs/s = {:.0} steps/s (1 / Redis CPU per step)",
        1000.0 / per_run_ms,
        1000.0 * steps as f64 / per_run_ms
    );
    Ok(Cost { per_run_ms })
}

/// `INFO stats` `total_reads_processed` and `total_writes_processed`: the reads from and
/// writes to client sockets the server made so far.
async fn io_counts(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, u64)> {
    let stats = dagrid_loadtest::redis_info::info(conn, "stats").await?;
    let get = |name: &str| {
        stats
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((get("total_reads_processed"), get("total_writes_processed")))
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    args.cluster.redis_over.get_or_insert(Transport::Tcp);
    let mut cluster = Cluster::start(
        &args.cluster,
        &[
            ("one", chain_dag("one", 1, "/bin/true")),
            ("three", chain_dag("three", 3, "/bin/true")),
        ],
    )
    .await?;
    cluster
        .add_workers(args.workers, args.concurrency, &[])
        .await?;
    let mut conn = cluster.redis();
    let redis_version = dagrid_loadtest::redis_info::info(&mut conn, "server")
        .await?
        .remove("redis_version")
        .unwrap_or_default();
    println!(
        "redis-cost: {} workers × {} slots, redis-server {redis_version}, appendonly {}, services over {:?}",
        args.workers, args.concurrency, args.cluster.appendonly, args.cluster.redis_over.unwrap_or(Transport::Tcp)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_before = Cpu::read(&mut conn).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    let idle = Cpu::read(&mut conn).await?.since(idle_before);
    let idle_ms_per_s = idle.total * 1000.0 / args.idle;
    println!("idle cluster: Redis CPU {idle_ms_per_s:.2} ms/s");
    let one = measure(&cluster, "one", args.runs, 1, idle_ms_per_s).await?;
    let mut three_text = String::new();
    if args.runs_3 > 0 {
        let three = measure(&cluster, "three", args.runs_3, 3, idle_ms_per_s).await?;
        let marginal = (three.per_run_ms - one.per_run_ms) / 2.0;
        println!(
            "growth with steps: 3-step run {:.3} ms vs one-step {:.3} ms: each step after the first adds {marginal:.3} ms (ceiling for long chains ≈ {:.0} steps/s)",
            three.per_run_ms,
            one.per_run_ms,
            1000.0 / marginal
        );
        three_text = format!(
            ", 3-step run {:.3} ms ({:.0} steps/s)",
            three.per_run_ms,
            3000.0 / three.per_run_ms
        );
    }
    summary(
        "redis-cost",
        &format!(
            "{:.3} ms Redis CPU per one-step run (ceiling {:.0} steps/s){three_text}",
            one.per_run_ms,
            1000.0 / one.per_run_ms
        ),
        "target 0.150 ms/run",
        Some(one.per_run_ms / 0.150),
    );
    Ok(())
}
