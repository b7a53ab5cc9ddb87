//! `memory`: (1) Redis memory per queued run: `used_memory` (`INFO memory`) before and after
//! `dagrid batch --no-wait` queued 100,000 one-step runs, then 30,000 runs of a chain of
//! three, each on a fresh redis-server with no worker (so every run stays queued), with a
//! breakdown by kind of key from `MEMORY USAGE … SAMPLES 0` of up to 200 keys of each kind;
//! (2) worker memory: VmHWM (peak) and VmRSS of `/proc/<pid>/status` of one worker after it
//! ran 2,000 one-step runs of `/bin/true` with `--concurrency 2`, and 2,000 of `sleep 0.2`
//! with `--concurrency 200` (so that the slots fill); its child processes left once the
//! steps are done (a step supervisor, if the worker has one) are reported on their own lines.

use std::time::Duration;

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::redis_info::{usage_by_kind, used_memory};
use dagrid_loadtest::stats::summary;
use dagrid_loadtest::{chain_dag, until_signal};

/// Redis bytes per queued run, and worker RSS.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Queued one-step runs (0: skip).
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// Queued 3-step runs (0: skip).
    #[arg(long, default_value_t = 30_000)]
    runs_3: usize,
    /// Keys measured per kind of key.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// Steps each worker runs before its memory is read (0: skip the worker part).
    #[arg(long, default_value_t = 2000)]
    steps: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    until_signal(run(args)).await
}

/// Bytes of Redis per queued run of `dag` (`steps` steps of `/bin/true`).
async fn per_queued_run(args: &Args, steps: usize, runs: usize) -> anyhow::Result<f64> {
    let dag = if steps == 1 { "one" } else { "three" };
    let cluster =
        Cluster::start(&args.cluster, &[(dag, chain_dag(dag, steps, "/bin/true"))]).await?;
    let files = cluster.make_files("files", runs)?;
    let mut conn = cluster.redis();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = used_memory(&mut conn).await?;
    let (took, _) = cluster.batch(dag, &files, &["--no-wait"]).await?;
    // Let the append-only file's buffer drain and lazy frees finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = used_memory(&mut conn).await?;
    let n = runs as f64;
    let per_run = (after as f64 - before as f64) / n;
    println!(
        "{runs} queued {steps}-step runs (submitted in {:.1} s): used_memory {:.1} MiB → {:.1} MiB, {per_run:.0} bytes/run",
        took.as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "  {:<52} {:>7} {:>8} {:>12} {:>9}",
        "key kind", "type", "keys", "bytes", "bytes/run"
    );
    let kinds = usage_by_kind(&mut conn, args.sample).await?;
    let mut sum = 0.0;
    let (mut small_kinds, mut small_keys, mut small_bytes) = (0, 0, 0.0);
    for k in &kinds {
        sum += k.bytes;
        if k.bytes / n < 1.0 {
            (small_kinds, small_keys, small_bytes) =
                (small_kinds + 1, small_keys + k.keys, small_bytes + k.bytes);
            continue;
        }
        println!(
            "  {:<52} {:>7} {:>8} {:>12.0} {:>9.1}",
            k.kind,
            k.kind_type,
            k.keys,
            k.bytes,
            k.bytes / n
        );
    }
    if small_kinds > 0 {
        println!(
            "  {:<52} {:>7} {:>8} {:>12.0} {:>9.1}",
            format!("({small_kinds} other kinds, < 1 byte/run each)"),
            "",
            small_keys,
            small_bytes,
            small_bytes / n
        );
    }
    println!(
        "  {:<52} {:>7} {:>8} {:>12.0} {:>9.1}   (MEMORY USAGE; the rest of used_memory is Redis' own tables and buffers)",
        "all keys",
        "",
        kinds.iter().map(|k| k.keys).sum::<u64>(),
        sum,
        sum / n
    );
    Ok(per_run)
}

/// `VmHWM`, `VmRSS`, `RssAnon` and `RssFile` of `/proc/<pid>/status`, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Vm {
    hwm: u64,
    rss: u64,
    anon: u64,
    file: u64,
}

/// The [`Vm`] figures of `pid`; `None` when it is gone.
fn vm(pid: u32) -> Option<Vm> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Vm {
        hwm: field("VmHWM:")?,
        rss: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

/// The pids and names of the processes whose parent is `pid`.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((child, stat[open + 1..close].to_string()));
        }
    }
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `steps` one-step runs of `command` on one worker of `slots` slots; prints and returns
/// its VmHWM, MiB.
async fn worker_rss(args: &Args, slots: usize, command: &str) -> anyhow::Result<f64> {
    let mut cluster =
        Cluster::start(&args.cluster, &[("one", chain_dag("one", 1, command))]).await?;
    let pid = cluster.add_workers(1, slots, &[]).await?[0];
    let idle = vm(pid).unwrap_or_default();
    let files = cluster.make_files("files", args.steps)?;
    let (took, _) = cluster.batch("one", &files, &[]).await?;
    let after = vm(pid).ok_or_else(|| anyhow::anyhow!("worker {pid} is gone"))?;
    println!(
        "worker --concurrency {slots}, {} steps of `{command}` in {:.1} s: VmHWM {:.1} MiB, VmRSS {:.1} MiB = RssAnon {:.1} + RssFile {:.1} (idle before: VmHWM {:.1}, VmRSS {:.1} = {:.1} + {:.1})",
        args.steps,
        took.as_secs_f64(),
        mib(after.hwm),
        mib(after.rss),
        mib(after.anon),
        mib(after.file),
        mib(idle.hwm),
        mib(idle.rss),
        mib(idle.anon),
        mib(idle.file)
    );
    for (child, name) in children(pid) {
        if let Some(c) = vm(child) {
            println!(
                "  child of the worker: pid {child} ({name}): VmHWM {:.1} MiB, VmRSS {:.1} MiB",
                mib(c.hwm),
                mib(c.rss)
            );
        }
    }
    Ok(mib(after.hwm))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "memory: Redis bytes per queued run (no workers; `dagrid batch --no-wait`), then worker RSS; appendonly {}",
        args.cluster.appendonly
    );
    if args.runs > 0 {
        let b = per_queued_run(&args, 1, args.runs).await?;
        summary(
            "memory (Redis per queued one-step run)",
            &format!("{b:.0} bytes"),
            "target 1024 bytes",
            Some(b / 1024.0),
        );
    }
    if args.runs_3 > 0 {
        let b = per_queued_run(&args, 3, args.runs_3).await?;
        summary(
            "memory (Redis per queued 3-step run)",
            &format!("{b:.0} bytes"),
            "target 1536 bytes",
            Some(b / 1536.0),
        );
    }
    if args.steps > 0 {
        let two = worker_rss(&args, 2, "/bin/true").await?;
        summary(
            "memory (worker VmHWM, 2 slots)",
            &format!("{two:.1} MiB"),
            "target 8 MiB",
            Some(two / 8.0),
        );
        let many = worker_rss(&args, 200, "sleep 0.2").await?;
        summary(
            "memory (worker VmHWM, 200 slots)",
            &format!("{many:.1} MiB"),
            "target 16 MiB",
            Some(many / 16.0),
        );
    }
    Ok(())
}
