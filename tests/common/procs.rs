//! A process-level test cluster for chaos tests: a real redis-server (append-only, fsync on
//! every write) and `dagrid coordinator` / `dagrid worker` processes started from the built
//! binary, so that `kill -9`, SIGTERM, SIGSTOP and a Redis restart are the real thing.
//!
//! Everything lives in one temp dir: `dags/` (DAG files), `marks/` (files the test steps
//! write), `logs/` (step logs), `redis/` (the append-only file), `procs/` (each process's
//! stdout and stderr). Every process is killed when the cluster is dropped; when the test is
//! panicking, the tail of every process log is printed first and the temp dir is kept (also
//! kept, for a look at the logs, when `DAGRID_CHAOS_KEEP` is set).
//!
//! The command lines are built in [`Cluster::coordinator_args`] and [`Cluster::worker_args`]:
//! a renamed flag is a one-line change there.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dagrid_shared::embedded::{EmbeddedOptions, EmbeddedRedis};
use serde_json::{json, Value};

/// How often the wait helpers poll the API.
const POLL: Duration = Duration::from_millis(150);

/// Milliseconds since the Unix epoch (the clock the workers stamp `started_ms` with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// xorshift64*: a fixed seed gives the same sequence on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Sends `sig` (a name: `TERM`, `KILL`, `STOP`, `CONT`, `0`) to a process, or to a process
/// group when `target` is negative, with `kill(1)`; true when it was delivered.
pub fn send_signal(target: i64, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, "--", &target.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True while some process of the group `pgid` exists (zombies included).
pub fn group_exists(pgid: u32) -> bool {
    send_signal(-(pgid as i64), "0")
}

/// The processes of group `pgid` that still run (zombies, which only wait to be reaped, left
/// out), from `/proc/*/stat`.
pub fn group_running(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
        if fields.len() == 3
            && !matches!(fields[0], "Z" | "X")
            && fields[2].parse::<u32>().ok() == Some(pgid)
        {
            out.push(pid);
        }
    }
    out
}

/// The step processes of worker `pid` (the children of its step supervisor, or its own
/// children when it has none) and its step supervisor.
pub fn step_processes_of(pid: u32) -> (Vec<u32>, Option<u32>) {
    let children = children_of(pid);
    let supervisor = children.iter().copied().find(|c| {
        std::fs::read(format!("/proc/{c}/cmdline"))
            .is_ok_and(|l| l.split(|&b| b == 0).any(|a| a == b"__step-supervisor"))
    });
    match supervisor {
        Some(s) => (children_of(s), Some(s)),
        None => (children, None),
    }
}

/// True while the process `pid` exists and is not a zombie.
pub fn pid_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The pids whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The last `n` lines of a file.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines of a file; none when it does not exist.
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Median and max of some durations in ms (`None` when empty).
pub fn median_max(values: &[u64]) -> Option<(u64, u64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    Some((*v.get(v.len() / 2)?, *v.last()?))
}

/// A `dagrid` process with its output in a file.
#[derive(Debug)]
pub struct Proc {
    /// `coordinator-1`, `worker-3`, …
    pub name: String,
    /// Its process id (for a worker, also the middle part of its id `<host>-<pid>-<hex>`).
    pub pid: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// When it was spawned (ms).
    pub started_ms: u64,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `dagrid <args>` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, args: &[String], log: PathBuf) -> Proc {
        Self::spawn_with_env(name, args, &[], log)
    }

    /// [`Proc::spawn`] with more environment variables.
    pub fn spawn_with_env(name: &str, args: &[String], env: &[(&str, &str)], log: PathBuf) -> Proc {
        let out = File::create(&log).expect("create process log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_dagrid"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn dagrid");
        eprintln!(
            "[procs] {name}: pid {} `dagrid {}`",
            child.id(),
            args.join(" ")
        );
        Proc {
            name: name.to_string(),
            pid: child.id(),
            log,
            started_ms: now_ms(),
            child,
            exit: None,
        }
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// True until it has exited.
    pub fn alive(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&mut self, sig: &str) {
        assert!(self.alive(), "{} exited before {sig}", self.name);
        assert!(
            send_signal(self.pid as i64, sig),
            "kill -{sig} {}",
            self.pid
        );
    }

    /// `kill -9` of this process alone (the step processes a worker started live on, each in
    /// its own process group). Returns when it was killed (ms).
    pub fn kill9(&mut self) -> u64 {
        let at = now_ms();
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        at
    }

    /// A crash of the worker's whole machine or container: freezes the process (so it starts
    /// nothing more), then `kill -9`s it and the process group of each of its children (the
    /// steps it runs). Returns when it was killed (ms) and how many step groups died with it.
    pub fn crash(&mut self) -> (u64, usize) {
        if !self.alive() {
            return (now_ms(), 0);
        }
        send_signal(self.pid as i64, "STOP");
        let (children, supervisor) = step_processes_of(self.pid);
        if let Some(s) = supervisor {
            send_signal(s as i64, "KILL");
        }
        let at = self.kill9();
        for c in &children {
            send_signal(-(*c as i64), "KILL");
        }
        (at, children.len())
    }

    /// Waits (at most `timeout`) for it to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of its output.
    pub fn tail(&self, n: usize) -> String {
        tail_of(&self.log, n)
    }

    /// The first line of its output that contains every one of `needles` (case-insensitive).
    pub fn find_line(&self, needles: &[&str]) -> Option<String> {
        lines_of(&self.log).into_iter().find(|l| {
            let l = l.to_lowercase();
            needles.iter().all(|n| l.contains(&n.to_lowercase()))
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            send_signal(self.pid as i64, "CONT");
            self.crash();
        }
    }
}

/// Settings of a cluster's services; `None` leaves a flag out (the service's default).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Coordinator `--lease-timeout`: how long a dead worker's step waits before it is
    /// reclaimed.
    pub lease_timeout: Option<Duration>,
    /// Worker `--heartbeat-interval`.
    pub heartbeat: Option<Duration>,
    /// Worker `--shutdown-grace`: how long a SIGTERMed worker lets running steps finish.
    pub shutdown_grace: Option<Duration>,
    /// Worker `--concurrency`.
    pub concurrency: u32,
    /// Workers started with the cluster.
    pub workers: usize,
    /// An admin API token: the coordinator gets it through `--token-file` and the cluster's
    /// HTTP client sends it; `None`: no token (an open API on loopback).
    pub api_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease_timeout: None,
            heartbeat: Some(Duration::from_millis(500)),
            shutdown_grace: None,
            concurrency: 2,
            workers: 2,
            api_token: None,
        }
    }
}

/// A duration as a flag value (`1500ms`; humantime reads it).
fn flag_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Written into DAG files in place of the cluster's `marks/` directory.
pub const MARKS: &str = "@MARKS@";

/// The pid of the worker that runs a step, in shell: the step's parent, or its parent's parent
/// when the parent is the worker's step supervisor (`dagrid __step-supervisor`).
pub const WORKER_PID_SH: &str = r#"w=$PPID; case "$(tr '\0' ' ' < /proc/$w/cmdline 2>/dev/null)" in *__step-supervisor*) w=$(cut -d' ' -f4 /proc/$w/stat);; esac"#;

/// The one-step DAG of the chaos tests, named `name`. Its step `work` appends `<worker pid>
/// <pid>` ([`WORKER_PID_SH`]; the step's pid is its process group) to `marks/<run>.starts`
/// when it starts, sleeps
/// `SLEEP` seconds (`RESLEEP` instead when it is not the run's first start and `RESLEEP` is
/// set), and only then appends the run id to `marks/<run>`: an attempt killed mid-way writes
/// no marker line, and each line of `marks/<run>` is one execution that ran to its end.
pub fn one_step_dag(name: &str) -> String {
    format!(
        r#"name: {name}
dedup: none
params:
  - SLEEP: "0.3"
  - RESLEEP: ""
env:
  - MARKS: "@MARKS@"
steps:
  - name: work
    script: |
      {WORKER_PID_SH}
      echo "$w $$" >> "$MARKS/$DAG_RUN_ID.starts"
      if [ -n "$RESLEEP" ] && [ "$(wc -l < "$MARKS/$DAG_RUN_ID.starts")" -gt 1 ]; then
        sleep "$RESLEEP"
      else
        sleep "$SLEEP"
      fi
      echo "$DAG_RUN_ID" >> "$MARKS/$DAG_RUN_ID"
"#
    )
}

/// A two-step chain (`prepare` sleeps `SLEEP` and records its start, then `work` writes the
/// marker as in [`one_step_dag`]): the coordinator must queue the second step of each run.
pub fn chain_dag(name: &str) -> String {
    format!(
        r#"name: {name}
type: chain
dedup: none
params:
  - SLEEP: "0.2"
env:
  - MARKS: "@MARKS@"
steps:
  - name: prepare
    script: |
      {WORKER_PID_SH}
      echo "$w $$" >> "$MARKS/$DAG_RUN_ID.starts"
      sleep "$SLEEP"
  - name: work
    script: |
      sleep 0.05
      echo "$DAG_RUN_ID" >> "$MARKS/$DAG_RUN_ID"
"#
    )
}

/// The pid in a worker id `<host>-<pid>-<hex>`.
pub fn worker_pid(worker_id: &str) -> Option<u32> {
    let mut parts = worker_id.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// The step named `name` of a run as the API shows it.
pub fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

/// A redis-server, coordinator and workers as OS processes, with the temp dir they share.
pub struct Cluster {
    /// The coordinator (none while it is down).
    pub coordinator: Option<Proc>,
    /// Live workers, oldest first.
    pub workers: Vec<Proc>,
    /// Processes that were killed or exited, kept for their logs.
    pub retired: Vec<Proc>,
    /// redis-server with `appendonly yes`, `appendfsync always`, `save ""`.
    pub redis: EmbeddedRedis,
    /// Namespace of the keys.
    pub ns: String,
    /// Port of the coordinator's API (the same across restarts).
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub api: String,
    /// HTTP client, with timeouts so that a hung server fails a request instead of a test.
    pub http: reqwest::Client,
    /// The flags the services get.
    pub settings: Settings,
    spawned: usize,
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts redis-server, writes `dags` (file name, YAML; [`MARKS`] becomes the path of
    /// `marks/`) and starts a coordinator and
    /// `settings.workers` workers; returns once the API is ready and every worker heartbeats.
    pub async fn start(dags: &[(&str, String)], settings: Settings) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dagrid-chaos-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        for d in ["dags", "marks", "logs", "procs"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for (file, yaml) in dags {
            let yaml = yaml.replace(MARKS, &root.join("marks").display().to_string());
            std::fs::write(root.join("dags").join(file), yaml).expect("write DAG");
        }
        let redis = EmbeddedRedis::start(EmbeddedOptions {
            dir: Some(root.join("redis")),
            appendfsync: "always",
            ..Default::default()
        })
        .await
        .expect("redis-server starts");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &settings.api_token {
            std::fs::write(root.join("tokens"), format!("admin {token} test\n"))
                .expect("write the token file");
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("token header"),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let mut c = Cluster {
            coordinator: None,
            workers: Vec::new(),
            retired: Vec::new(),
            redis,
            ns: format!("chaos{}", std::process::id()),
            port,
            api: format!("http://127.0.0.1:{port}"),
            http,
            settings,
            spawned: 0,
            root,
            dir: Some(dir),
        };
        eprintln!("[procs] cluster in {}", c.root.display());
        c.start_coordinator().await;
        for _ in 0..c.settings.workers {
            c.start_worker().await;
        }
        c
    }

    /// The temp dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the steps write their markers.
    pub fn marks(&self) -> PathBuf {
        self.root.join("marks")
    }

    /// The lines of a run's marker: one per execution of `work` that ran to its end.
    pub fn marker(&self, run_id: &str) -> Vec<String> {
        lines_of(&self.marks().join(run_id))
    }

    /// The starts of a run's first step: (worker pid, step pid), in order.
    pub fn starts(&self, run_id: &str) -> Vec<(u32, u32)> {
        lines_of(&self.marks().join(format!("{run_id}.starts")))
            .iter()
            .filter_map(|l| {
                let (a, b) = l.split_once(' ')?;
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
            })
            .collect()
    }

    /// `dagrid coordinator …` flags.
    pub fn coordinator_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "coordinator".into(),
            "--redis-url".into(),
            self.redis.url(),
            "--namespace".into(),
            self.ns.clone(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
            "--dags".into(),
            self.root.join("dags").display().to_string(),
        ];
        if let Some(d) = self.settings.lease_timeout {
            a.extend(["--lease-timeout".into(), flag_duration(d)]);
        }
        if self.settings.api_token.is_some() {
            a.extend([
                "--token-file".into(),
                self.root.join("tokens").display().to_string(),
            ]);
        }
        a
    }

    /// `dagrid worker …` flags.
    pub fn worker_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "worker".into(),
            "--redis-url".into(),
            self.redis.url(),
            "--namespace".into(),
            self.ns.clone(),
            "--concurrency".into(),
            self.settings.concurrency.to_string(),
            "--log-dir".into(),
            self.root.join("logs").display().to_string(),
        ];
        if let Some(d) = self.settings.heartbeat {
            a.extend(["--heartbeat-interval".into(), flag_duration(d)]);
        }
        if let Some(d) = self.settings.lease_timeout {
            a.extend(["--lease-timeout".into(), flag_duration(d)]);
        }
        if let Some(d) = self.settings.shutdown_grace {
            a.extend(["--shutdown-grace".into(), flag_duration(d)]);
        }
        a
    }

    fn log_path(&mut self, kind: &str) -> (String, PathBuf) {
        self.spawned += 1;
        let name = format!("{kind}-{}", self.spawned);
        let path = self.root.join("procs").join(format!("{name}.log"));
        (name, path)
    }

    /// Starts the coordinator (on the same port as before) and waits until it is ready.
    pub async fn start_coordinator(&mut self) {
        assert!(self.coordinator.is_none(), "a coordinator runs already");
        let (name, log) = self.log_path("coordinator");
        let args = self.coordinator_args();
        self.coordinator = Some(Proc::spawn(&name, &args, log));
        self.wait_ready(Duration::from_secs(30)).await;
    }

    /// `kill -9` of the coordinator; returns when (ms).
    pub fn kill_coordinator(&mut self) -> u64 {
        let mut p = self.coordinator.take().expect("a coordinator runs");
        let at = p.kill9();
        self.retired.push(p);
        at
    }

    /// Waits until `/health/ready` answers 200; panics with the coordinator's log if it exits.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/health/ready", self.api);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(c) = self.coordinator.as_mut() {
                if let Some(status) = c.exit_status() {
                    panic!(
                        "{} exited ({status}) before it was ready:\n{}",
                        c.name,
                        c.tail(30)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the API was not ready in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns a worker without waiting for it; returns its index in [`Cluster::workers`].
    pub fn spawn_worker(&mut self) -> usize {
        let (name, log) = self.log_path("worker");
        let args = self.worker_args();
        self.workers.push(Proc::spawn(&name, &args, log));
        self.workers.len() - 1
    }

    /// Spawns a worker and waits until its heartbeat shows in `/api/v1/workers`; returns its
    /// index in [`Cluster::workers`].
    pub async fn start_worker(&mut self) -> usize {
        let i = self.spawn_worker();
        self.wait_worker(i).await
    }

    /// As [`Cluster::start_worker`], the worker reaching Redis at `redis_url` (a proxy).
    pub async fn start_worker_via(&mut self, redis_url: &str) -> usize {
        let (name, log) = self.log_path("worker");
        let mut args = self.worker_args();
        let at = args.iter().position(|a| a == "--redis-url").expect("flag") + 1;
        args[at] = redis_url.to_string();
        self.workers.push(Proc::spawn(&name, &args, log));
        let i = self.workers.len() - 1;
        self.wait_worker(i).await
    }

    async fn wait_worker(&mut self, i: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pid = self.workers[i].pid;
            if self
                .worker_ids()
                .await
                .iter()
                .any(|w| worker_pid(w) == Some(pid))
            {
                return i;
            }
            let w = &mut self.workers[i];
            if let Some(status) = w.exit_status() {
                panic!("{} exited ({status}) at start:\n{}", w.name, w.tail(30));
            }
            assert!(
                Instant::now() < deadline,
                "{} never heartbeat:\n{}",
                w.name,
                w.tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ids of the workers whose heartbeat is live.
    pub async fn worker_ids(&self) -> Vec<String> {
        let Some(v) = self.get("/api/v1/workers").await else {
            return Vec::new();
        };
        v["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w["worker_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `kill -9` of worker `i` alone, and retires it; returns its pid, when it died (ms) and
    /// the pids of its step processes just before (the children of its step supervisor, or
    /// its own; they should die with it).
    pub fn kill_worker(&mut self, i: usize) -> (u32, u64, Vec<u32>) {
        let mut w = self.workers.remove(i);
        let steps = step_processes_of(w.pid).0;
        let at = w.kill9();
        let pid = w.pid;
        self.retired.push(w);
        (pid, at, steps)
    }

    /// Crashes worker `i` ([`Proc::crash`]) and retires it; returns its pid, when it died
    /// (ms) and how many step process groups died with it.
    pub fn crash_worker(&mut self, i: usize) -> (u32, u64, usize) {
        let mut w = self.workers.remove(i);
        let (at, groups) = w.crash();
        let pid = w.pid;
        self.retired.push(w);
        (pid, at, groups)
    }

    /// Moves worker `i` (after it exited) to the retired ones and returns it.
    pub fn retire_worker(&mut self, i: usize) -> &mut Proc {
        let w = self.workers.remove(i);
        self.retired.push(w);
        self.retired.last_mut().expect("just pushed")
    }

    /// GET an API path; `None` on any error (a server down or restarting).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// GET `/api/v1/runs/{id}` and its HTTP status; `None` when the API did not answer.
    pub async fn try_run(&self, id: &str) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}/api/v1/runs/{id}", self.api))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// A run, retrying for up to 20 s while the API does not answer 200.
    pub async fn run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.try_run(id).await;
            if let Some((200, v)) = &last {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "GET run {id} kept failing: {last:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// POST `/api/v1/runs/batch` with one run of `dag` per params object; the ids in order,
    /// or why the request failed.
    pub async fn submit_batch(&self, dag: &str, params: &[Value]) -> Result<Vec<String>, String> {
        let runs: Vec<Value> = params
            .iter()
            .map(|p| json!({ "dag": dag, "params": p }))
            .collect();
        let r = self
            .http
            .post(format!("{}/api/v1/runs/batch", self.api))
            .json(&json!({ "runs": runs }))
            .send()
            .await
            .map_err(|e| format!("POST batch: {e}"))?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 201 {
            return Err(format!("POST batch: {status} {body}"));
        }
        let ids: Vec<String> = body["runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() != params.len() {
            return Err(format!(
                "POST batch: {} ids for {} runs: {body}",
                ids.len(),
                params.len()
            ));
        }
        Ok(ids)
    }

    /// `POST /api/v1/runs/{id}/stop`: the HTTP status and body; `None` when the API did not
    /// answer.
    pub async fn stop_run(&self, id: &str) -> Option<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}/api/v1/runs/{id}/stop", self.api))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Submits one run; its id.
    pub async fn submit(&self, dag: &str, params: Value) -> String {
        self.submit_batch(dag, &[params])
            .await
            .expect("submit")
            .remove(0)
    }

    /// The status of each run (`None`: unknown id) via `/api/v1/runs/lookup`; `None` when the
    /// API did not answer.
    pub async fn statuses(&self, ids: &[String]) -> Option<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(5_000) {
            let r = self
                .http
                .post(format!("{}/api/v1/runs/lookup", self.api))
                .json(&json!({ "ids": chunk }))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            let runs = v["runs"].as_array()?;
            out.extend(
                runs.iter()
                    .map(|r| r["status"].as_str().map(str::to_string)),
            );
        }
        Some(out)
    }

    /// How many of `ids` are in each status (`unknown` for ids the API does not know).
    pub async fn census(&self, ids: &[String]) -> Option<BTreeMap<String, usize>> {
        let mut m = BTreeMap::new();
        for s in self.statuses(ids).await? {
            *m.entry(s.unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
        }
        Some(m)
    }

    /// How many of `ids` are final (succeeded, failed or aborted); 0 when the API is down.
    pub async fn final_count(&self, ids: &[String]) -> usize {
        self.statuses(ids)
            .await
            .map(|s| s.iter().filter(|s| is_final(s.as_deref())).count())
            .unwrap_or(0)
    }

    /// Waits until at least `n` runs of `ids` are final; returns how many are. Panics after
    /// `timeout`.
    pub async fn wait_final_count(&self, ids: &[String], n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.final_count(ids).await;
            if done >= n {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} runs final after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every run of `ids` is final; panics with the census after `timeout`.
    pub async fn wait_all_final(&self, ids: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.statuses(ids).await {
                if s.iter().all(|s| is_final(s.as_deref())) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let census = self.census(ids).await;
                let stuck: Vec<&String> = match self.statuses(ids).await {
                    Some(s) => ids
                        .iter()
                        .zip(s)
                        .filter(|(_, s)| !is_final(s.as_deref()))
                        .map(|(id, _)| id)
                        .take(3)
                        .collect(),
                    None => Vec::new(),
                };
                let mut detail = String::new();
                for id in stuck {
                    detail.push_str(&format!("\n  {id}: {:?}", self.try_run(id).await));
                }
                panic!("runs not final after {timeout:?}: {census:?}; some of them:{detail}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `pred` holds for the run; returns it. Panics after `timeout`.
    pub async fn wait_run(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_run(id).await;
            if let Some((200, run)) = &last {
                if pred(run) {
                    return run.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "run {id}: not {what} after {timeout:?}: {last:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the run is final; returns it.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        self.wait_run(id, timeout, "final", |r| is_final(r["status"].as_str()))
            .await
    }

    /// Every process (live and retired) with the tail of its log, and redis-server's log.
    pub fn dump_logs(&self, lines: usize) {
        let live = self.coordinator.iter().chain(&self.workers);
        for p in live.chain(&self.retired) {
            eprintln!(
                "----- {} (pid {}) {} -----\n{}",
                p.name,
                p.pid,
                p.log.display(),
                p.tail(lines)
            );
        }
        eprintln!(
            "----- redis-server -----\n{}",
            tail_of(&self.root.join("redis").join("redis.log"), lines)
        );
    }
}

/// True for a final run status.
pub fn is_final(status: Option<&str>) -> bool {
    matches!(status, Some("succeeded" | "failed" | "aborted"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var_os("DAGRID_CHAOS_KEEP").is_some();
        if std::thread::panicking() {
            self.dump_logs(40);
        }
        if std::thread::panicking() || keep {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "[procs] kept the cluster's files in {}",
                    dir.keep().display()
                );
            }
        }
        // Processes before the temp dir: fields drop in order, but be explicit.
        self.coordinator = None;
        self.workers.clear();
        self.retired.clear();
    }
}
