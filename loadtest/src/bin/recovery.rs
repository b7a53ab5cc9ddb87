//! `recovery [kill|partition|both] [trials] [lease]`: how long a step takes to run again
//! elsewhere after its worker dies (`kill`: SIGKILL) or is cut off from Redis (`partition`: a
//! TCP proxy between the worker and Redis stops forwarding, sockets left open). Starts its own
//! redis-server (on a free port, in a temp dir), a `dagrid coordinator` (`--lease-timeout`,
//! default 10s) and `dagrid worker`s (default 1 s heartbeat, one slot each), runs `trials`
//! (default 20 kills, 10 partitions) one after the other, and prints p50/p99/max of fault →
//! the next attempt's process started on another worker (its `started_ms`), in ms.
//!
//! The `dagrid` binary is `$DAGRID_BIN`, else the one next to this program (build both with
//! `cargo build --release -p dagrid -p dagrid-loadtest`).

#[path = "../../../tests/it/common/proxy.rs"]
mod proxy;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
use serde_json::{json, Value};

/// The first attempt of each run's step sleeps a minute (it is the one the fault hits); the
/// next one ends at once.
const DAG: &str = r#"name: recovery
dedup: none
steps:
  - name: work
    script: |
      m="@MARKS@/$DAG_RUN_ID"
      if [ ! -e "$m" ]; then touch "$m"; sleep 60; fi
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `dagrid` process, SIGKILLed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bench {
    bin: PathBuf,
    root: PathBuf,
    redis: EmbeddedRedis,
    api: String,
    http: reqwest::Client,
    lease: Duration,
    coordinator: Option<Proc>,
    spawned: usize,
}

impl Bench {
    fn log_of(&self, n: usize) -> PathBuf {
        self.root.join(format!("proc-{n}.log"))
    }

    fn spawn(&mut self, args: &[String]) -> anyhow::Result<Proc> {
        self.spawned += 1;
        let log = std::fs::File::create(self.log_of(self.spawned))?;
        let child = Command::new(&self.bin)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        Ok(Proc(child))
    }

    /// Starts a worker reaching Redis at `url` and waits for its heartbeat; returns it and its
    /// id.
    async fn worker(&mut self, url: &str) -> anyhow::Result<(Proc, String)> {
        let args: Vec<String> = [
            "worker",
            "--redis-url",
            url,
            "--namespace",
            "bench",
            "--concurrency",
            "1",
            "--log-dir",
            &self.root.join("logs").display().to_string(),
            "--lease-timeout",
            &format!("{}ms", self.lease.as_millis()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = self.spawn(&args)?;
        let pid = p.0.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = self.get("/api/v1/workers").await.unwrap_or(Value::Null);
            let id = v["workers"].as_array().into_iter().flatten().find_map(|w| {
                let id = w["worker_id"].as_str()?;
                (id.rsplit('-').nth(1) == Some(pid.as_str())).then(|| id.to_string())
            });
            if let Some(id) = id {
                return Ok((p, id));
            }
            if Instant::now() > deadline {
                bail!("worker {pid} never heartbeat");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn submit(&self) -> anyhow::Result<String> {
        let r: Value = self
            .http
            .post(format!("{}/api/v1/runs", self.api))
            .json(&json!({ "dag": "recovery" }))
            .send()
            .await?
            .json()
            .await?;
        r["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("submit answered {r}"))
    }

    /// Polls the run every 10 ms until `pred` holds on its `work` step; returns the step.
    async fn wait_step(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + self.lease * 3 + Duration::from_secs(30);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await?;
            let step = run["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "work"))
                .cloned()
                .unwrap_or(Value::Null);
            if pred(&step) {
                return Ok(step);
            }
            if Instant::now() > deadline {
                bail!("run {id}: not {what}: {run}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Submits a run and waits until its first attempt runs on worker `on`.
    async fn running_on(&self, on: &str) -> anyhow::Result<String> {
        let id = self.submit().await?;
        let step = self
            .wait_step(&id, "running", |s| {
                s["status"] == "running" && s["started_ms"].is_u64()
            })
            .await?;
        if step["worker"] != on {
            bail!("the step runs on {} instead of {on}", step["worker"]);
        }
        Ok(id)
    }

    /// Waits for the second attempt's start; returns fault → start (ms), and when it started.
    async fn restarted(&self, id: &str, fault_ms: u64) -> anyhow::Result<(u64, u64)> {
        let s = self
            .wait_step(id, "running again", |s| {
                s["attempt"].as_u64() == Some(2) && s["started_ms"].is_u64()
            })
            .await?;
        self.wait_step(id, "succeeded", |s| s["status"] == "succeeded")
            .await?;
        let started = s["started_ms"].as_u64().unwrap_or(0);
        Ok((started.saturating_sub(fault_ms), started))
    }
}

/// Waits 0–1 s (spread over the trials): a fresh victim sent its first heartbeat just before
/// the step started, so without this every fault would come right after a heartbeat (the
/// slowest case of the 1 s cycle).
async fn phase(trial: usize) {
    tokio::time::sleep(Duration::from_millis((trial as u64 * 379) % 1000)).await;
}

/// When a worker's log says it fenced a step (the timestamp of its `step fenced` line, ms).
fn fenced_ms(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("step fenced"))?;
    let stamp = line.split_whitespace().next()?;
    let t = humantime::parse_rfc3339_weak(stamp).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

fn report(what: &str, mut ms: Vec<u64>) {
    ms.sort_unstable();
    let pct = |p: f64| -> u64 {
        let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[i.clamp(1, ms.len()) - 1]
    };
    if ms.is_empty() {
        println!("{what}: no trials");
        return;
    }
    println!(
        "{what}: {} trials, fault → running elsewhere ms: p50 {}  p99 {}  max {}  (min {})",
        ms.len(),
        pct(50.0),
        pct(99.0),
        pct(100.0),
        ms[0]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: recovery [kill|partition|both] [trials] [lease, default 10s]";
    let mode = args.first().map_or("both", String::as_str);
    if !matches!(mode, "kill" | "partition" | "both") {
        bail!("{usage}");
    }
    let trials: Option<usize> = match args.get(1) {
        Some(t) => Some(
            t.parse()
                .with_context(|| format!("trials {t:?}; {usage}"))?,
        ),
        None => None,
    };
    let lease = match args.get(2) {
        Some(l) => humantime::parse_duration(l).with_context(|| format!("lease {l:?}; {usage}"))?,
        None => Duration::from_secs(10),
    };
    let bin = match std::env::var_os("DAGRID_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()?.with_file_name("dagrid"),
    };
    if !bin.exists() {
        bail!(
            "no dagrid binary at {}: build it (cargo build --release -p dagrid) or set DAGRID_BIN",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("dagrid-recovery-")
        .tempdir()?;
    let root = dir.path().to_path_buf();
    for d in ["dags", "marks", "logs"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(
        root.join("dags/recovery.yaml"),
        DAG.replace("@MARKS@", &root.join("marks").display().to_string()),
    )?;
    let redis = EmbeddedRedis::start(EmbeddedOptions {
        dir: Some(root.join("redis")),
        ..Default::default()
    })
    .await?;
    let up = Instant::now();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut bench = Bench {
        bin,
        root: root.clone(),
        api: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        lease,
        coordinator: None,
        spawned: 0,
        redis,
    };
    let coordinator: Vec<String> = [
        "coordinator",
        "--redis-url",
        &bench.redis.url(),
        "--namespace",
        "bench",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--dags",
        &root.join("dags").display().to_string(),
        "--lease-timeout",
        &format!("{}ms", lease.as_millis()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    bench.coordinator = Some(bench.spawn(&coordinator)?);
    let ready = Instant::now() + Duration::from_secs(30);
    while bench.get("/health/ready").await.is_err() {
        if Instant::now() > ready {
            bail!(
                "the coordinator never got ready; logs in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The reaper takes nothing back until Redis has been up for a lease.
    tokio::time::sleep_until((up + lease).into()).await;
    println!(
        "lease {lease:?}, worker heartbeat 1s, one slot per worker; logs in {}",
        root.display()
    );
    let url = bench.redis.url();
    let run = async {
        if mode != "partition" {
            let mut took = Vec::new();
            for trial in 0..trials.unwrap_or(20) {
                // Only the victim runs when the step is claimed; its successor is then ready.
                let (mut victim, victim_id) = bench.worker(&url).await?;
                let id = bench.running_on(&victim_id).await?;
                let (_next, _) = bench.worker(&url).await?;
                phase(trial).await;
                let fault_ms = now_ms();
                victim.0.kill()?;
                let _ = victim.0.wait();
                took.push(bench.restarted(&id, fault_ms).await?.0);
            }
            report("kill -9", took);
        }
        if mode != "kill" {
            let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], bench.redis.port()));
            let mut took = Vec::new();
            let mut leads = Vec::new();
            for trial in 0..trials.unwrap_or(10) {
                let cut = proxy::Proxy::start(upstream).await?;
                let (_victim, victim_id) = bench.worker(&format!("redis://{}", cut.addr())).await?;
                let victim_log = bench.log_of(bench.spawned);
                let id = bench.running_on(&victim_id).await?;
                let (_next, _) = bench.worker(&url).await?;
                phase(trial).await;
                let fault_ms = now_ms();
                cut.set_cut(true);
                let (ms, started) = bench.restarted(&id, fault_ms).await?;
                took.push(ms);
                // The cut-off worker's `step fenced` line: before the next attempt started?
                let fenced = fenced_ms(&std::fs::read_to_string(&victim_log)?);
                leads.push(fenced.map(|f| started as i64 - f as i64));
            }
            report("partition", took);
            let before = leads.iter().flatten().filter(|l| **l > 0).count();
            println!(
                "partition: the cut-off worker fenced its step before the next attempt started in {before} of {} trials; next start − fence, ms: {leads:?}",
                leads.len()
            );
        }
        anyhow::Ok(())
    };
    let result = run.await;
    drop(bench.coordinator.take());
    if result.is_err() {
        // Keep the logs of a failed measurement.
        let kept = dir.keep();
        eprintln!("logs kept in {}", kept.display());
    }
    result
}
