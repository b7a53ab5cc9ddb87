//! `fanout`: a `parallel` call step over N items (default 10,000) beside the same N runs
//! submitted by `dagrid batch`, on the same cluster (2 workers × 4 slots by default), the child
//! being a one-step DAG of `/bin/true` with a `FILE` param.
//! (a) One run of DAG `fan`: step `list` prints N names (`seq -f f%07g 1 N`, its `output`
//! `LIST`), step `map` is `call: child` with `parallel: {items: ${LIST}, max_concurrent: M}`
//! (M = 10,000 by default: no limit in effect) and `params: "FILE=${ITEM}"`, and no `output`
//! (so no aggregate JSON against `maxOutputSize`). Items/s = N / (submit of the run → its
//! `finished_ms`). Also shown: when `map` started on a worker, and when its `children` count
//! was first seen (every child created: the coordinator sets it after the last one), from the
//! parent's run view read every 50 ms. (b) `dagrid batch child --files <N empty files>`, from
//! its spawn to its exit after the last run finished (as `step-throughput`); runs/s. The rounds
//! alternate (a), (b); medians are reported. Beside each: the redis-server's CPU per item
//! (`INFO cpu`, main thread) and its script calls per item (`INFO commandstats`, `evalsha`),
//! which tell where the two paths differ in Redis.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::events::FINAL;
use dagrid_loadtest::redis_info::{command_stats, print_command_table, reset_stats, Cpu};
use dagrid_loadtest::stats::{median, summary};
use dagrid_loadtest::{chain_dag, until_signal};
use serde_json::{json, Value};

/// Items/s of a `parallel` call step against runs/s of `dagrid batch`.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Items of the parallel step, and files of `dagrid batch` (Dagu's limit is 1,000 items,
    /// dagrid's 100,000).
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker (`dagrid worker --concurrency`).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The `max_concurrent` of the parallel step (default: as many as the items could need,
    /// so only the workers' slots limit the children).
    #[arg(long, default_value_t = 10_000)]
    max_concurrent: u32,
    /// Rounds, each a fan-out then a batch.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also print Redis' command table (`INFO commandstats`) per item after each measurement.
    #[arg(long)]
    commands: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

/// The parent DAG: list N names, fan `child` out over them.
fn fan_dag(items: usize, max_concurrent: u32) -> String {
    format!(
        "name: fan\nsteps:\n  - name: list\n    command: seq -f f%07g 1 {items}\n    output: LIST\n  \
         - name: map\n    depends: [list]\n    call: child\n    parallel:\n      items: ${{LIST}}\n      \
         max_concurrent: {max_concurrent}\n    params: \"FILE=${{ITEM}}\"\n"
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one fan-out took, in s from its submit: the `map` step's start on a worker, its
/// children all created (first seen), the parent run's end.
struct Fanout {
    map_started: f64,
    created: f64,
    finished: f64,
}

/// Submits one run of `fan` and follows its run view until it is final.
async fn fanout(cluster: &Cluster, items: usize) -> anyhow::Result<Fanout> {
    let body = serde_json::to_vec(&json!({"dag": "fan"}))?;
    let submitted_ms = now_ms();
    let answer = cluster.post("/api/v1/runs", body).await?;
    let id = answer["id"]
        .as_str()
        .with_context(|| format!("POST /api/v1/runs answered {answer}"))?
        .to_string();
    let secs = |ms: u64| ms.saturating_sub(submitted_ms) as f64 / 1000.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut created = None;
    loop {
        let run = cluster.get(&format!("/api/v1/runs/{id}")).await?;
        let map = run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "map"))
            .cloned()
            .unwrap_or(Value::Null);
        if created.is_none() && map["children"].as_u64().unwrap_or(0) > 0 {
            created = Some(now_ms());
            let n = map["children"].as_u64().unwrap_or(0);
            anyhow::ensure!(n as usize == items, "{n} children for {items} items");
        }
        let status = run["status"].as_str().unwrap_or_default();
        if FINAL.contains(&status) {
            anyhow::ensure!(status == "succeeded", "the fan run ended {status}: {run}");
            let finished = run["finished_ms"].as_u64().unwrap_or_else(now_ms);
            return Ok(Fanout {
                map_started: secs(map["started_ms"].as_u64().unwrap_or(0)),
                created: secs(created.unwrap_or(finished)),
                finished: secs(finished),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fan run is not final after 600 s: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis' cost since `before` (and the last `CONFIG RESETSTAT`), per item: `<µs> µs CPU,
/// <calls> scripts`.
async fn redis_cost(
    cluster: &Cluster,
    before: Cpu,
    items: f64,
    table: bool,
) -> anyhow::Result<String> {
    let mut conn = cluster.redis();
    let cpu = Cpu::read(&mut conn).await?.since(before);
    let stats = command_stats(&mut conn).await?;
    if table {
        print_command_table(&stats, items, "item");
    }
    let scripts: u64 = stats
        .iter()
        .filter(|s| s.name == "evalsha" || s.name == "eval")
        .map(|s| s.calls)
        .sum();
    Ok(format!(
        "Redis {:.0} µs CPU and {:.2} script calls per item",
        cpu.main_thread.unwrap_or(cpu.total) * 1e6 / items,
        scripts as f64 / items
    ))
}

/// `CONFIG RESETSTAT`, then the CPU counters.
async fn redis_mark(cluster: &Cluster) -> anyhow::Result<Cpu> {
    let mut conn = cluster.redis();
    reset_stats(&mut conn).await?;
    Cpu::read(&mut conn).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.items >= 1, "--items: at least 1");
    let dags = [
        ("child", chain_dag("child", 1, "/bin/true")),
        ("fan", fan_dag(args.items, args.max_concurrent)),
    ];
    let mut cluster = Cluster::start(&args.cluster, &dags).await?;
    cluster
        .add_workers(args.workers, args.concurrency, &[])
        .await?;
    let files = cluster.make_files("files", args.items)?;
    println!(
        "fanout: {} items of a one-step child DAG (/bin/true), {} workers × {} slots; (a) one run of a parallel call step (max_concurrent {}), (b) dagrid batch over {} files",
        args.items, args.workers, args.concurrency, args.max_concurrent, args.items
    );
    let n = args.items as f64;
    let (mut fans, mut batches) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        // An idle cluster at the start of each measurement.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = redis_mark(&cluster).await?;
        let f = fanout(&cluster, args.items).await?;
        let rate = n / f.finished;
        println!(
            "  parallel: {:.3} s, {rate:.0} items/s (map started at {:.3} s, all {} children created by {:.3} s: {:.0} children/s); {}",
            f.finished,
            f.map_started,
            args.items,
            f.created,
            n / (f.created - f.map_started).max(0.001),
            redis_cost(&cluster, before, n, args.commands).await?
        );
        fans.push(rate);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = redis_mark(&cluster).await?;
        let (took, _) = cluster.batch("child", &files, &[]).await?;
        let rate = n / took.as_secs_f64();
        println!(
            "  batch: {:.3} s, {rate:.0} runs/s; {}",
            took.as_secs_f64(),
            redis_cost(&cluster, before, n, args.commands).await?
        );
        batches.push(rate);
    }
    let (f, b) = (median(&fans), median(&batches));
    summary(
        "fanout",
        &format!("parallel {f:.0} items/s"),
        &format!("dagrid batch {b:.0} runs/s"),
        Some(f / b),
    );
    Ok(())
}
