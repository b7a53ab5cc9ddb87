//! A private dagrid cluster for one measurement: a redis-server on a free loopback port, a
//! `dagrid coordinator` (`--insecure-no-auth`, its DAG files in `<temp>/dags`) and any number
//! of `dagrid worker`s, all started from the binary given by `--dagrid`, with their logs and
//! the Redis data in one temp dir. Dropping the [`Cluster`] stops every process it started
//! (SIGTERM, SIGKILL after 5 s) and then removes the temp dir (unless `--keep`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a process gets after SIGTERM before SIGKILL, when the cluster is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The flags every load-test binary takes to start its cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The dagrid binary whose coordinator, workers and `dagrid batch` are measured. A relative
    /// path is looked up from the current directory, then next to this program.
    #[arg(long, env = "DAGRID_BIN", default_value = "target/release/dagrid")]
    pub dagrid: PathBuf,
    /// Keep the temp dir (process logs, Redis data) instead of removing it at the end.
    #[arg(long)]
    pub keep: bool,
    /// Redis persistence: `yes` (append-only file, `appendfsync everysec`: what dagrid asks of
    /// a production Redis, and what `dagrid start-all` runs) or `no` (memory only).
    #[arg(long, default_value = "yes", value_parser = ["yes", "no"])]
    pub appendonly: String,
    /// How the coordinator and the workers reach Redis: `unix` (its unix socket, as `dagrid
    /// start-all` connects to its private redis-server) or `tcp` (loopback TCP, as workers on
    /// other machines would, over a network). Default: `unix`, except for `redis-cost`, whose
    /// figure is the ceiling of one Redis for a whole cluster (`tcp`).
    #[arg(long, value_enum)]
    pub redis_over: Option<Transport>,
}

/// How the cluster's services connect to its redis-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The server's unix socket.
    Unix,
    /// Loopback TCP.
    Tcp,
}

impl ClusterArgs {
    /// The dagrid binary, resolved (see [`ClusterArgs::dagrid`]).
    ///
    /// # Errors
    /// When no such file exists, with how to build it.
    pub fn binary(&self) -> anyhow::Result<PathBuf> {
        let given = &self.dagrid;
        let mut tries = vec![given.clone()];
        if given.is_relative() {
            if let Ok(me) = std::env::current_exe() {
                if let Some(dir) = me.parent() {
                    tries.push(dir.join(given.file_name().unwrap_or(given.as_os_str())));
                }
            }
        }
        for t in &tries {
            if t.is_file() {
                return Ok(std::fs::canonicalize(t)?);
            }
        }
        bail!(
            "no dagrid binary at {}: build it with `cargo build --release -p dagrid` or pass --dagrid <path>",
            given.display()
        )
    }
}

/// A process of the cluster; SIGKILLed and reaped when dropped, if still running.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        }
    }

    fn wait_until(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running private cluster; see the module doc.
#[derive(Debug)]
pub struct Cluster {
    // Dropped in this order: the dagrid processes, then redis-server, then the temp dir.
    procs: Vec<Proc>,
    redis: EmbeddedRedis,
    conn: redis::aio::MultiplexedConnection,
    /// Base URL of the coordinator's API, `http://127.0.0.1:<port>`.
    pub api: String,
    /// An HTTP client for the API (30 s timeout per request).
    pub http: reqwest::Client,
    bin: PathBuf,
    root: PathBuf,
    keep: bool,
    dir: Option<tempfile::TempDir>,
    workers: usize,
    /// The Redis URL given to the services.
    url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers first (they may hold steps), all at once, then wait for them all.
        for p in self.procs.iter_mut().rev() {
            p.terminate();
        }
        let started = Instant::now();
        let deadline = started + STOP_GRACE;
        for p in &mut self.procs {
            p.wait_until(deadline);
        }
        if std::env::var_os("LOADTEST_DEBUG").is_some() {
            eprintln!("cluster stopped in {:?}", started.elapsed());
        }
        if self.keep {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

impl Cluster {
    /// Starts redis-server and a coordinator serving the DAG files `dags` (`(name, YAML)`:
    /// written to `<temp>/dags/<name>.yaml`), and waits until `/health/ready` answers. No
    /// worker yet: see [`Cluster::add_workers`].
    ///
    /// # Errors
    /// The binary is missing, redis-server is not installed, or the coordinator does not get
    /// ready within 30 s (its log is then quoted).
    pub async fn start(args: &ClusterArgs, dags: &[(&str, String)]) -> anyhow::Result<Self> {
        let bin = args.binary()?;
        let dir = tempfile::Builder::new()
            .prefix("dagrid-loadtest-")
            .tempdir()?;
        let root = dir.path().to_path_buf();
        for d in ["dags", "logs"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for (name, yaml) in dags {
            std::fs::write(root.join(format!("dags/{name}.yaml")), yaml)?;
        }
        let mut extra_args = vec![];
        if args.appendonly == "no" {
            extra_args = vec!["--appendonly".into(), "no".into()];
        }
        let redis = EmbeddedRedis::start(EmbeddedOptions {
            dir: Some(root.join("redis")),
            extra_args,
            ..Default::default()
        })
        .await?;
        let conn = redis::Client::open(redis.url())?
            .get_multiplexed_async_connection()
            .await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cluster = Cluster {
            procs: Vec::new(),
            redis,
            conn,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            bin,
            root: root.clone(),
            keep: args.keep,
            dir: Some(dir),
            workers: 0,
            url: String::new(),
        };
        cluster.url = match args.redis_over.unwrap_or(Transport::Unix) {
            Transport::Unix => cluster.redis.local_url(),
            Transport::Tcp => cluster.redis.url(),
        };
        let url = cluster.url.clone();
        let listen = format!("127.0.0.1:{port}");
        let dags_dir = root.join("dags").display().to_string();
        cluster.spawn(
            "coordinator",
            &[
                "coordinator",
                "--redis-url",
                &url,
                "--listen",
                &listen,
                "--dags",
                &dags_dir,
                "--insecure-no-auth",
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = cluster
                .http
                .get(format!("{}/health/ready", cluster.api))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            cluster.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "the coordinator did not get ready within 30 s; its log: {}",
                    cluster.log_tail("coordinator")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.root.join(format!("{name}.log")))?;
        let child = Command::new(&self.bin)
            .args(args)
            // The services' defaults, whatever this shell has set.
            .env_remove("RUST_LOG")
            .env_remove("DAGRID_LOG_FORMAT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} {}", self.bin.display(), args.join(" ")))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
        });
        Ok(pid)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for i in 0..self.procs.len() {
            if let Some(status) = self.procs[i].child.try_wait()? {
                let name = self.procs[i].name.clone();
                bail!(
                    "{name} exited ({status}); its log: {}",
                    self.log_tail(&name)
                );
            }
        }
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.root.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Starts `n` workers of `concurrency` slots each (`dagrid worker --concurrency`, plus
    /// `extra` flags) and waits until the coordinator lists every worker of the cluster
    /// (`GET /api/v1/workers`). Returns their pids.
    ///
    /// # Errors
    /// A worker exits, or they are not all listed within 30 s.
    pub async fn add_workers(
        &mut self,
        n: usize,
        concurrency: usize,
        extra: &[&str],
    ) -> anyhow::Result<Vec<u32>> {
        let url = self.url.clone();
        let logs = self.root.join("logs").display().to_string();
        let c = concurrency.to_string();
        let mut pids = Vec::new();
        for _ in 0..n {
            self.workers += 1;
            let mut args = vec![
                "worker",
                "--redis-url",
                &url,
                "--concurrency",
                &c,
                "--log-dir",
                &logs,
            ];
            args.extend_from_slice(extra);
            pids.push(self.spawn(&format!("worker-{}", self.workers), &args)?);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self
                .get("/api/v1/workers")
                .await
                .ok()
                .and_then(|v| v["workers"].as_array().map(Vec::len))
                .unwrap_or(0);
            if listed >= self.workers {
                return Ok(pids);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{listed} of {} workers listed after 30 s; the last one's log: {}",
                    self.workers,
                    self.log_tail(&format!("worker-{}", self.workers))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET <api><path>` as JSON.
    ///
    /// # Errors
    /// Transport errors, a non-2xx status, or a body that is not JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.api)).send().await?;
        let status = r.status();
        let body: Value = r.json().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }

    /// `POST <api><path>` with a JSON body already serialized; returns the answer as JSON.
    ///
    /// # Errors
    /// Transport errors, a non-2xx status (its body quoted), or a body that is not JSON.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// The temp dir of this cluster (DAG files, logs, Redis data, and room for inputs).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The TCP port of the cluster's redis-server (on 127.0.0.1, no password).
    pub fn redis_port(&self) -> u16 {
        self.redis.port()
    }

    /// A connection to the cluster's redis-server (multiplexed; clone it freely).
    pub fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.conn.clone()
    }

    /// Creates `n` empty files in `<temp>/<name>/` (`f0000001`…) and returns the directory:
    /// the inputs of `dagrid batch`, one run per file.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn make_files(&self, name: &str, n: usize) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        for i in 0..n {
            std::fs::File::create(dir.join(format!("f{i:07}")))?;
        }
        Ok(dir)
    }

    /// Runs `dagrid batch <dag> --server <api> --files <files> <extra…>` (which submits one
    /// run per file and, without `--no-wait`, follows them until every one is final) and
    /// returns its wall time, from spawning it to its exit, and its stdout.
    ///
    /// # Errors
    /// It cannot be started or exits with a failure (its output is quoted).
    pub async fn batch(
        &self,
        dag: &str,
        files: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        let out = tokio::process::Command::new(&self.bin)
            .args(["batch", dag, "--server", &self.api, "--files"])
            .arg(files)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await?;
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "dagrid batch {dag}: {}; stdout: {stdout}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((took, stdout))
    }
}
