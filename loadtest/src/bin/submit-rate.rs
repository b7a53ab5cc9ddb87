//! `submit-rate`: how fast runs are accepted. (a) One `POST /api/v1/runs/batch` of 10,000
//! one-step runs (`{"runs": [{"dag": "one", "params": {"FILE": "<i>"}}, …]}`), timed from
//! sending the (already serialized) body to the end of the response, on a fresh redis-server
//! and coordinator each time (no workers; one small request first, so scripts are loaded and
//! the connection is open), median of 5. (b) `dagrid batch --no-wait` over 100,000 empty
//! files, timed from its spawn to its exit (listing the files included). For scale, the rate
//! of a plain pipelined `XADD` of as many 200-byte entries into the same redis-server. Beside
//! each request's rate, Redis' CPU per run (`INFO cpu`, main thread) and its `EVALSHA` time
//! per run (`INFO commandstats`), which a busy machine changes less than the wall time.

use std::time::{Duration, Instant};

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::redis_info::{command_stats, reset_stats, Cpu};
use dagrid_loadtest::stats::{median, summary};
use dagrid_loadtest::{chain_dag, until_signal};
use serde_json::json;

/// Runs accepted per second.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Runs per batch request (the API takes at most 10,000).
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Batch requests, each on a fresh cluster; the median is reported.
    #[arg(long, default_value_t = 5)]
    requests: usize,
    /// Files for `dagrid batch --no-wait` (0: skip).
    #[arg(long, default_value_t = 100_000)]
    files: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

fn dags() -> Vec<(&'static str, String)> {
    vec![("one", chain_dag("one", 1, "/bin/true"))]
}

/// A plain `XADD` of `n` entries of one 200-byte field in one pipeline; entries/s.
async fn xadd_rate(cluster: &Cluster, n: usize) -> anyhow::Result<f64> {
    let mut conn = cluster.redis();
    let value = "x".repeat(200);
    let mut pipe = redis::pipe();
    for _ in 0..n {
        pipe.cmd("XADD")
            .arg("loadtest:xadd")
            .arg("*")
            .arg("t")
            .arg(&value)
            .ignore();
    }
    let started = Instant::now();
    pipe.query_async::<()>(&mut conn).await?;
    let took = started.elapsed();
    redis::cmd("DEL")
        .arg("loadtest:xadd")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(n as f64 / took.as_secs_f64())
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs >= 1 && args.requests >= 1,
        "--runs and --requests: at least 1"
    );
    println!(
        "submit-rate: (a) POST /api/v1/runs/batch of {} one-step runs, fresh redis-server + coordinator per request, no workers, {} requests",
        args.runs, args.requests
    );
    let body = serde_json::to_vec(&json!({
        "runs": (0..args.runs)
            .map(|i| json!({"dag": "one", "params": {"FILE": format!("{i}")}}))
            .collect::<Vec<_>>()
    }))?;
    let warm =
        serde_json::to_vec(&json!({"runs": [{"dag": "one", "params": {"FILE": "warm-up"}}]}))?;
    let mut rates = Vec::new();
    let mut xadds = Vec::new();
    let mut cpus = Vec::new();
    let mut scripts = Vec::new();
    for i in 0..args.requests {
        let cluster = Cluster::start(&args.cluster, &dags()).await?;
        cluster.post("/api/v1/runs/batch", warm.clone()).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut conn = cluster.redis();
        reset_stats(&mut conn).await?;
        let cpu_before = Cpu::read(&mut conn).await?;
        let started = Instant::now();
        let answer = cluster.post("/api/v1/runs/batch", body.clone()).await?;
        let took = started.elapsed();
        let cpu = Cpu::read(&mut conn).await?.since(cpu_before);
        let cpu_us = cpu.main_thread.unwrap_or(cpu.total) * 1e6 / args.runs as f64;
        let script_us = command_stats(&mut conn)
            .await?
            .iter()
            .filter(|s| s.name == "evalsha" || s.name == "eval")
            .map(|s| s.usec)
            .sum::<u64>() as f64
            / args.runs as f64;
        let created = answer["created"].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(
            created == args.runs,
            "request {i}: {created} of {} runs created",
            args.runs
        );
        let rate = args.runs as f64 / took.as_secs_f64();
        let xadd = xadd_rate(&cluster, args.runs).await?;
        println!(
            "  request {}: {:.3} s, {rate:.0} runs/s; Redis {cpu_us:.1} µs CPU/run, EVALSHA {script_us:.1} µs/run (plain XADD pipeline of {} entries: {xadd:.0}/s)",
            i + 1,
            took.as_secs_f64(),
            args.runs
        );
        rates.push(rate);
        xadds.push(xadd);
        cpus.push(cpu_us);
        scripts.push(script_us);
    }
    let (rate, xadd) = (median(&rates), median(&xadds));
    println!("  for scale: a plain pipelined XADD of as many 200-byte entries, median {xadd:.0}/s");
    println!(
        "  Redis per run, median: {:.1} µs CPU (main thread), {:.1} µs in EVALSHA",
        median(&cpus),
        median(&scripts)
    );
    summary(
        &format!("submit-rate (one request of {} runs)", args.runs),
        &format!("{rate:.0} runs/s"),
        "target 50000 runs/s",
        Some(rate / 50_000.0),
    );
    if args.files > 0 {
        let cluster = Cluster::start(&args.cluster, &dags()).await?;
        let files = cluster.make_files("files", args.files)?;
        println!(
            "submit-rate: (b) dagrid batch --no-wait over {} files (chunks of 1,000 runs per request)",
            args.files
        );
        let (took, out) = cluster.batch("one", &files, &["--no-wait"]).await?;
        let rate = args.files as f64 / took.as_secs_f64();
        println!(
            "  {:.2} s, {rate:.0} runs/s; it said: {}",
            took.as_secs_f64(),
            out.trim()
        );
        summary(
            &format!("submit-rate (dagrid batch, {} files)", args.files),
            &format!("{rate:.0} runs/s"),
            "target 50000 runs/s",
            Some(rate / 50_000.0),
        );
    }
    Ok(())
}
