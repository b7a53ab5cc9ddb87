//! `dispatch-latency`: step queued → process started on an idle cluster (1 worker, 2 slots),
//! one run at a time, 500 samples, in µs. A step is queued when the submit script that adds
//! its ready-stream entry commits: its writes become visible together, and a worker's
//! blocking `XREADGROUP` is served only then. t0 is that moment as Redis stamps it: this
//! program holds a `MONITOR` connection, on which each command a script runs is stamped as it
//! runs (µs of the same CLOCK_REALTIME), and takes the last command of the run's submit script
//! (whose ready-stream `XADD` must be among them). A monitor slows every command Redis runs
//! (the submit script takes about twice as long): taking the script's last command keeps
//! that out of the figure, but not from the work that follows. t1 is the clock the step's
//! process reads as its first action (the `stamp` program, which writes it to a file per
//! sample). Beside it, from the same samples: submit sent (this program's clock just before
//! `POST /api/v1/runs`) → its answer, and submit sent → process started, which adds the HTTP
//! request and the submit to the figure. The reference, interleaved sample by sample: the
//! same `stamp` spawned by this program (t0 just before the spawn); the difference is the
//! engine's own latency. After each submit's answer this program sleeps the pause (20 ms),
//! then reads the run's end (`GET /api/v1/runs/<id>`) and the monitor's lines: nothing of it
//! runs while a step is dispatched but the answer's receipt.
//!
//! The probe (`--stamp`): `bare` (default), loadtest/src/stamp-bare.c built without a C
//! library by loadtest/build.rs (x86_64 Linux), whose entry point reads the clock, so the
//! process has started when it does; `static`, loadtest/src/stamp.c built as a static glibc
//! executable, which reads it first thing in `main`, after glibc's start-up (its CPUID probes
//! of the CPU and caches add about 0.55 ms here to both columns, as they do to every
//! program's start); or `rust`, the `stamp` program next to this one (`cargo build --release
//! -p dagrid-loadtest` builds all three), whose dynamic loading and runtime start add about
//! 0.6 ms more. Without any, this program stamps itself (`dispatch-latency --stamp-to FILE`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use dagrid_loadtest::cluster::{Cluster, ClusterArgs};
use dagrid_loadtest::events::FINAL;
use dagrid_loadtest::stats::{percentile, summary};
use dagrid_loadtest::until_signal;
use serde_json::json;

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
    /// The probe the step runs: `bare` (the clock read at the entry point, no C library),
    /// `static` (a static glibc program, the clock read first thing in `main`) or `rust` (the
    /// `stamp` program).
    #[arg(long, value_enum, default_value = "bare")]
    stamp: Probe,
    /// Internal: write CLOCK_REALTIME (ns) to this file and exit (the stamp, when the `stamp`
    /// program is not built).
    #[arg(long, hide = true)]
    stamp_to: Option<PathBuf>,
}

/// Which stamp program the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Probe {
    /// The C stamp without a C library.
    Bare,
    /// The static glibc C stamp.
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
    if probe == Probe::Bare {
        match option_env!("DAGRID_STAMP_BARE").map(PathBuf::from) {
            Some(p) if p.is_file() => return Ok((p, vec![])),
            _ => println!("(no bare stamp was built (x86_64 Linux only): using the static one)"),
        }
    }
    if probe != Probe::Rust {
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

/// A `MONITOR` connection to the cluster's redis-server, read only between samples (its lines
/// wait in the socket meanwhile, so reading them costs nothing while a step is dispatched).
struct Monitor {
    lines: std::io::BufReader<std::net::TcpStream>,
}

impl Monitor {
    /// Connects to `port` on 127.0.0.1 and sends `MONITOR`.
    fn open(port: u16) -> anyhow::Result<Self> {
        use std::io::{BufRead, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"MONITOR\r\n")?;
        let mut lines = std::io::BufReader::new(conn);
        let mut ok = String::new();
        lines.read_line(&mut ok)?;
        anyhow::ensure!(ok.trim_end() == "+OK", "MONITOR answered {ok:?}");
        Ok(Monitor { lines })
    }

    /// When the submit script that queued run `id` committed (ns): the timestamp of the last
    /// command it ran, the lines before its `EVALSHA` being skipped. A line reads
    /// `+<s>.<µs> [<db> <client>] "<COMMAND>" …`, with `lua` as the client of the commands a
    /// script runs, which follow its own line. Its ready-stream `XADD` must be among them.
    fn committed(&mut self, id: &str) -> anyhow::Result<u128> {
        use std::io::BufRead;
        let run_key = format!(":run:{id}\"");
        let (mut last, mut queued) = (None, false);
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .lines
                .read_line(&mut line)
                .map_err(|e| anyhow::anyhow!("no submit of run {id} on MONITOR: {e}"))?;
            anyhow::ensure!(n > 0, "the MONITOR connection closed");
            let stamp = line
                .trim_start_matches('+')
                .split_once(' ')
                .and_then(|(t, _)| t.split_once('.'))
                .and_then(|(s, us)| Some((s.parse::<u128>().ok()?, us.parse::<u128>().ok()?)))
                .map(|(s, us)| s * 1_000_000_000 + us * 1_000);
            let in_script = line.contains(" lua] ");
            match last {
                None if !in_script
                    && line.to_ascii_uppercase().contains("\"EVALSHA\"")
                    && line.contains(&run_key) =>
                {
                    last = stamp;
                }
                Some(_) if in_script => {
                    last = stamp.or(last);
                    queued |= line.contains("\"XADD\"") && line.contains(":ready:");
                }
                Some(at) => {
                    anyhow::ensure!(queued, "the submit of run {id} queued no step");
                    return Ok(at);
                }
                None => {}
            }
        }
    }
}

/// Waits until run `id` is final (`GET /api/v1/runs/<id>` every 5 ms) and returns its status.
async fn run_final(cluster: &Cluster, id: &str) -> anyhow::Result<String> {
    for _ in 0..2_000 {
        let run = cluster.get(&format!("/api/v1/runs/{id}")).await?;
        let status = run["status"].as_str().unwrap_or_default();
        if FINAL.contains(&status) {
            return Ok(status.to_string());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("run {id} did not finish within 10 s")
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
    let mut monitor = Monitor::open(cluster.redis_port())?;
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
        let t0 = now_ns();
        let answer = cluster.post("/api/v1/runs", body).await?;
        let t_ans = now_ns();
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("submit answered {answer}"))?
            .to_string();
        // Nothing of this program runs while the step is dispatched: it sleeps, then reads the
        // run's end and the MONITOR lines.
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let status = run_final(&cluster, &id).await?;
        anyhow::ensure!(status == "succeeded", "run {id} {status}");
        let queued = tokio::task::block_in_place(|| monitor.committed(&id))?;
        let started = read_stamp(&file)? as f64;
        if i >= 5 {
            rtt.push((t_ans - t0) as f64 / 1000.0);
            upper.push((started - t0 as f64) / 1000.0);
            ours.push((started - queued as f64) / 1000.0);
            direct.push(d_direct / 1000.0);
        }
    }
    for v in [&mut ours, &mut upper, &mut direct, &mut rtt] {
        v.sort_by(f64::total_cmp);
    }
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
