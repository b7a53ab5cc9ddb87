//! A process-level test cluster for chaos tests: a real redis-server (append-only, fsync on
//! every write) and `dagrid coordinator` / `dagrid worker` processes started from the built
//! binary, so that `kill -9`, SIGTERM, SIGSTOP and a Redis restart are the real thing. Its
//! API helpers are those of the in-process cluster ([`super::api::Client`], through `Deref`).
//!
//! Everything lives in one temp dir: `dags/` (DAG files), `marks/` (files the test steps
//! write), `logs/` (step logs), `redis/` (the append-only file), `procs/` (each process's
//! stdout and stderr). Every process is killed when the cluster is dropped; when the test is
//! panicking, the tail of every process log is printed first and the temp dir is kept (also
//! kept, for a look at the logs, when `DAGRID_CHAOS_KEEP` is set).
//!
//! The command lines are built in [`Cluster::coordinator_args`] and [`Cluster::worker_args`]:
//! a renamed flag is a one-line change there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};

use super::api::Client;
use super::dags::MARKS;
use super::os::{lines_of, step_processes_of, tail_of, worker_pid};
use super::proc::Proc;

/// How often the wait helpers poll the API.
const POLL: Duration = Duration::from_millis(150);

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
    /// The API helpers ([`Client`]; the cluster derefs to it), with a 10 s timeout so that a
    /// hung server fails a request instead of a test.
    pub client: Client,
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
        if let Some(token) = &settings.api_token {
            std::fs::write(root.join("tokens"), format!("admin {token} test\n"))
                .expect("write the token file");
        }
        let api = format!("http://127.0.0.1:{port}");
        let client = Client::new(
            &api,
            settings.api_token.as_deref(),
            Duration::from_secs(10),
            POLL,
        );
        let mut c = Cluster {
            coordinator: None,
            workers: Vec::new(),
            retired: Vec::new(),
            redis,
            ns: format!("chaos{}", std::process::id()),
            port,
            api,
            client,
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

impl std::ops::Deref for Cluster {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
