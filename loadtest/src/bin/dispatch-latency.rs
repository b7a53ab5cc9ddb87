//! `dispatch-latency`: step queued → process started on an idle cluster (1 worker, 2 slots),
//! one run at a time, 500 samples, in µs. The step is queued when the submit script adds its
//! entry to a ready stream (an `XADD` inside the script; a worker's blocking `XREADGROUP` is
//! served once the script ends): t0 is the timestamp Redis gives that `XADD` on a `MONITOR`
//! connection this program holds (µs of the same CLOCK_REALTIME; a command inside a script is
//! stamped as it runs; the monitor costs Redis a little per command, which counts against
//! dagrid). t1 is the clock the step's process reads as its first action (the
//! `stamp` program, which writes it to a file per sample). Beside it, from the same samples:
//! submit sent (this program's clock just before `POST /api/v1/runs`) → its answer, and
//! submit sent → process started, which adds the HTTP request and the submit to the figure.
//! The reference, interleaved sample by sample: the same `stamp` spawned by this program (t0
//! just before the spawn); the difference is the engine's own latency. The end of each run is
//! awaited on the event stream, then a pause (20 ms) lets the worker go back to its blocking
//! read.
//!
//! The probe (`--stamp`): `static` (default), loadtest/src/stamp.c built as a static
//! executable by loadtest/build.rs, which reads the clock before anything else runs; or
//! `rust`, the `stamp` program next to this one (`cargo build --release -p dagrid-loadtest`
//! builds both), whose dynamic loading and runtime start add about 0.6 ms here to both
//! columns. Without either, this program stamps itself (`dispatch-latency --stamp-to FILE`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::events::Events;
use dagrid_loadtest::stats::{percentile, summary};
use dagrid_loadtest::until_signal;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Step queued → process started, µs.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Samples (after 5 warm-up ones).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Slots of the one worker.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Pause between samples, ms.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// The probe the step runs: `static` (the C stamp, no loader or runtime before the clock
    /// is read) or `rust` (the `stamp` program).
    #[arg(long, value_enum, default_value = "static")]
    stamp: Probe,
    /// Internal: write CLOCK_REALTIME (ns) to this file and exit (the stamp, when the `stamp`
    /// program is not built).
    #[arg(long, hide = true)]
    stamp_to: Option<PathBuf>,
}

/// Which stamp program the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Probe {
    /// The static C stamp.
    Static,
    /// The Rust `stamp`.
    Rust,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() -> anyhow::Result<()> {
    // First action, for the self-stamp mode: read the clock.
    let started = now_ns();
    let args = Args::parse();
    if let Some(file) = &args.stamp_to {
        std::fs::write(file, format!("{started}\n"))?;
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(until_signal(run(args)))
}

fn read_stamp(file: &Path) -> anyhow::Result<u128> {
    let text = std::fs::read_to_string(file)?;
    Ok(text.trim().parse()?)
}

/// The stamp program and its leading args (before the output file).
fn stamp_command(probe: Probe) -> anyhow::Result<(PathBuf, Vec<String>)> {
    if probe == Probe::Static {
        match option_env!("DAGRID_STAMP_STATIC").map(PathBuf::from) {
            Some(p) if p.is_file() => return Ok((p, vec![])),
            _ => println!("(no static stamp was built: using the Rust one)"),
        }
    }
    let me = std::env::current_exe()?;
    let stamp = me.with_file_name("stamp");
    if stamp.is_file() {
        Ok((stamp, vec![]))
    } else {
        println!(
            "(no `stamp` next to {}: this program stamps itself; build it with `cargo build --release -p dagrid-loadtest`)",
            me.display()
        );
        Ok((me, vec!["--stamp-to".into()]))
    }
}

/// Starts a `MONITOR` connection to `port` on a task of `tasks`: every `XADD` to a ready stream
/// (`…:ready:…`) is sent on the returned channel as (Redis' timestamp in ns, the line).
async fn ready_xadds(
    port: u16,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<mpsc::UnboundedReceiver<(u128, String)>> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(b"MONITOR\r\n").await?;
    let mut lines = BufReader::new(conn).lines();
    let ok = lines.next_line().await?.unwrap_or_default();
    anyhow::ensure!(ok == "+OK", "MONITOR answered {ok:?}");
    let (tx, rx) = mpsc::unbounded_channel();
    tasks.spawn(async move {
        while let Some(line) = lines.next_line().await? {
            // `+<s>.<µs> [<db> <client>] "XADD" "<key>" …`
            if !line.contains("\"XADD\" \"") || !line.contains(":ready:") {
                continue;
            }
            let stamp = line
                .trim_start_matches('+')
                .split_once(' ')
                .and_then(|(t, _)| t.split_once('.'))
                .and_then(|(s, us)| Some((s.parse::<u128>().ok()?, us.parse::<u128>().ok()?)));
            if let Some((s, us)) = stamp {
                if tx.send((s * 1_000_000_000 + us * 1_000, line)).is_err() {
                    break;
                }
            }
        }
        Ok(())
    });
    Ok(rx)
}

fn print_row(what: &str, sorted: &[f64]) {
    println!(
        "  {what:<44} p50 {:>7.0}  p90 {:>7.0}  p99 {:>7.0}  max {:>7.0} µs",
        percentile(sorted, 50.0),
        percentile(sorted, 90.0),
        percentile(sorted, 99.0),
        percentile(sorted, 100.0)
    );
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (stamp, lead) = stamp_command(args.stamp)?;
    println!("probe: {}", stamp.display());
    let mut command = stamp.display().to_string();
    for a in &lead {
        command.push(' ');
        command.push_str(a);
    }
    let dag = format!(
        "name: stamp\nparams:\n  - OUT: \"\"\nsteps:\n  - name: stamp\n    command: {command} ${{OUT}}\n"
    );
    let mut cluster = Cluster::start(&args.cluster, &[("stamp", dag)]).await?;
    cluster.add_workers(1, args.concurrency, &[]).await?;
    let out = cluster.root().join("stamps");
    std::fs::create_dir_all(&out)?;
    let mut events = Events::open(&cluster.api, "dag=stamp").await?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut xadds = ready_xadds(cluster.redis_port(), &mut tasks).await?;
    println!(
        "dispatch-latency: idle cluster, 1 worker × {} slots, one run at a time, {} samples (+5 warm-up), {} ms apart",
        args.concurrency, args.samples, args.pause_ms
    );
    let (mut ours, mut upper, mut direct, mut rtt) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.samples + 5 {
        // The reference: the same program spawned from here.
        let file = out.join(format!("direct-{i}"));
        let t0 = now_ns();
        let status = tokio::process::Command::new(&stamp)
            .args(&lead)
            .arg(&file)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "{} exited {status}", stamp.display());
        let d_direct = read_stamp(&file)? as f64 - t0 as f64;
        // The engine: submit, wait for the run's end, read what its step stamped.
        let file = out.join(format!("step-{i}"));
        let body = serde_json::to_vec(
            &json!({"dag": "stamp", "params": {"OUT": file.display().to_string()}}),
        )?;
        while xadds.try_recv().is_ok() {}
        let t0 = now_ns();
        let answer = cluster.post("/api/v1/runs", body).await?;
        let t_ans = now_ns();
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("submit answered {answer}"))?
            .to_string();
        let status = events.run_final(&id).await?;
        anyhow::ensure!(status == "succeeded", "run {id} {status}");
        let queued = loop {
            let (at, line) = tokio::time::timeout(Duration::from_secs(5), xadds.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no XADD of run {id} on MONITOR within 5 s"))?
                .ok_or_else(|| anyhow::anyhow!("the MONITOR connection closed"))?;
            if line.contains(&id) {
                break at;
            }
        };
        let started = read_stamp(&file)? as f64;
        if i >= 5 {
            rtt.push((t_ans - t0) as f64 / 1000.0);
            upper.push((started - t0 as f64) / 1000.0);
            ours.push((started - queued as f64) / 1000.0);
            direct.push(d_direct / 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    for v in [&mut ours, &mut upper, &mut direct, &mut rtt] {
        v.sort_by(f64::total_cmp);
    }
    tasks.abort_all();
    print_row("submit sent → its answer received", &rtt);
    print_row("submit sent → step process started", &upper);
    print_row("dagrid: step queued → step process started", &ours);
    print_row("reference: spawn → the same process started", &direct);
    let p = |v: &[f64], q| percentile(v, q);
    println!(
        "  {:<44} p50 {:>7.0}  p90 {:>7.0}  p99 {:>7.0}  max {:>7.0} µs (percentile minus percentile)",
        "difference: the engine's own latency",
        p(&ours, 50.0) - p(&direct, 50.0),
        p(&ours, 90.0) - p(&direct, 90.0),
        p(&ours, 99.0) - p(&direct, 99.0),
        p(&ours, 100.0) - p(&direct, 100.0)
    );
    summary(
        "dispatch-latency",
        &format!("p50 {:.0} µs, p99 {:.0} µs", p(&ours, 50.0), p(&ours, 99.0)),
        &format!(
            "direct spawn p50 {:.0} µs, p99 {:.0} µs; target p50 ≤ 1000 µs, p99 ≤ 5000 µs",
            p(&direct, 50.0),
            p(&direct, 99.0)
        ),
        Some(p(&ours, 50.0) / p(&direct, 50.0)),
    );
    Ok(())
}
