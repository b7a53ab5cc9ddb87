//! A whole cluster per test: its own redis-server on a free port, a coordinator on port 0 and
//! two workers, all in this process, each test's files in temp dirs. Its API helpers are those
//! of the process-level cluster ([`super::api::Client`], through `Deref`).

use std::path::PathBuf;
use std::time::Duration;

use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
use dagrid_shared::Redis;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::Client;

/// How often the wait helpers poll the API.
const POLL: Duration = Duration::from_millis(20);

/// How to build a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Coordinator replicas, each with its own API (all share the namespace).
    pub coordinators: usize,
    /// Workers.
    pub workers: usize,
    /// Slots per worker.
    pub concurrency: usize,
    /// Named queues → maxConcurrency, for every coordinator.
    pub queues: Vec<(&'static str, u32)>,
    /// The coordinators' lease timeout; `None`: their default.
    pub lease_timeout: Option<Duration>,
    /// The coordinators' reconciler interval; `None`: their default.
    pub reconcile_interval: Option<Duration>,
    /// Changes every coordinator's config before it starts (retention bounds, …).
    pub configure: Option<fn(&mut dagrid_coordinator::Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coordinators: 1,
            workers: 2,
            concurrency: 2,
            queues: Vec::new(),
            lease_timeout: None,
            reconcile_interval: None,
            configure: None,
        }
    }
}

pub struct Cluster {
    pub redis_server: EmbeddedRedis,
    pub redis: Redis,
    /// The first coordinator's API.
    pub api: String,
    /// Every coordinator's API.
    pub apis: Vec<String>,
    /// The API helpers of every coordinator ([`Client`]); the cluster derefs to the first.
    pub clients: Vec<Client>,
    pub dags_dir: tempfile::TempDir,
    pub log_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    /// One child token per coordinator, to stop it alone.
    coordinator_stops: Vec<CancellationToken>,
    tracker: TaskTracker,
}

impl Cluster {
    /// Starts a cluster with these DAG files (file name, YAML) registered from a DAG directory.
    pub async fn start(dags: &[(&str, &str)]) -> Cluster {
        Self::start_with(dags, Options::default()).await
    }

    /// Starts a cluster shaped by `options`.
    pub async fn start_with(dags: &[(&str, &str)], options: Options) -> Cluster {
        let redis_server = EmbeddedRedis::start(EmbeddedOptions::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&redis_server.url(), "test").expect("redis url");
        let dags_dir = tempfile::tempdir().expect("tempdir");
        for (name, yaml) in dags {
            std::fs::write(dags_dir.path().join(name), yaml).expect("write dag");
        }
        let log_dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut apis = Vec::new();
        let mut coordinator_stops = Vec::new();
        for _ in 0..options.coordinators {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            apis.push(format!("http://{}", listener.local_addr().expect("addr")));
            let mut config = dagrid_coordinator::Config {
                dags_dir: Some(dags_dir.path().to_path_buf()),
                coordinator_id: None,
                queues: options
                    .queues
                    .iter()
                    .map(|(q, n)| (q.to_string(), *n))
                    .collect(),
                lease_timeout: options.lease_timeout,
                reconcile_interval: options.reconcile_interval,
                ..Default::default()
            };
            if let Some(configure) = options.configure {
                configure(&mut config);
            }
            let (r, s) = (redis.clone(), shutdown.child_token());
            coordinator_stops.push(s.clone());
            tracker.spawn(async move {
                dagrid_coordinator::serve(listener, r, config, s)
                    .await
                    .expect("coordinator runs")
            });
        }
        let api = apis[0].clone();
        for _ in 0..options.workers {
            let config = dagrid_worker::Config {
                concurrency: options.concurrency,
                log_dir: log_dir.path().to_path_buf(),
                heartbeat_interval: Duration::from_millis(500),
                // Several workers per test process: each needs an id of its own.
                worker_id: Some(format!("test-{}", uuid::Uuid::new_v4().simple())),
                supervisor_program: Some(env!("CARGO_BIN_EXE_dagrid").into()),
                ..Default::default()
            };
            let (r, s) = (redis.clone(), shutdown.clone());
            tracker
                .spawn(async move { dagrid_worker::run(r, config, s).await.expect("worker runs") });
        }
        tracker.close();
        let clients = apis
            .iter()
            .map(|a| Client::new(a, None, Duration::from_secs(120), POLL))
            .collect();
        let cluster = Cluster {
            redis_server,
            redis,
            api,
            apis,
            clients,
            dags_dir,
            log_dir,
            shutdown,
            coordinator_stops,
            tracker,
        };
        cluster.wait_ready().await;
        cluster
    }

    async fn wait_ready(&self) {
        'apis: for api in &self.apis {
            for _ in 0..200 {
                if let Ok(r) = self.http.get(format!("{api}/health/ready")).send().await {
                    if r.status().is_success() {
                        continue 'apis;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("coordinator {api} never became ready");
        }
    }

    /// POSTs JSON to a path of coordinator `i`'s API; returns the status and the JSON body.
    pub async fn post_to(&self, i: usize, path: &str, body: Value) -> (u16, Value) {
        self.clients[i].post(path, body).await
    }

    /// Polls run `id` until `pred` holds; fails after 30 s saying the run never did `what`.
    pub async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.clients[0]
            .wait_run(id, Duration::from_secs(30), what, pred)
            .await
    }

    /// GET a path of coordinator `i`'s API and parse its JSON body.
    pub async fn get_json_from(&self, i: usize, path: &str) -> Value {
        self.clients[i].get_json(path).await
    }

    /// Waits on coordinator `i` until the run is final (at most 90 s) and returns it.
    pub async fn wait_on(&self, i: usize, id: &str) -> Value {
        self.clients[i]
            .wait_final(id, Duration::from_secs(90))
            .await
    }

    /// Waits until the run is final (succeeded, failed or aborted; at most 90 s) and returns
    /// it.
    pub async fn wait(&self, id: &str) -> Value {
        self.wait_on(0, id).await
    }

    /// Stops coordinator `i` alone (its API goes away; the others go on).
    pub fn stop_coordinator(&self, i: usize) {
        self.coordinator_stops[i].cancel();
    }

    /// Stops the test's redis-server (SIGTERM: it writes its append-only file and exits).
    pub async fn stop_redis(&mut self) {
        self.redis_server.stop().await;
    }

    /// Starts the test's redis-server again on the same port, after [`Cluster::stop_redis`];
    /// with `lose_data`, from an empty data directory, as a server without persistence would.
    pub async fn start_redis(&mut self, lose_data: bool) {
        if lose_data {
            for entry in std::fs::read_dir(self.redis_server.dir()).expect("data dir") {
                let path = entry.expect("entry").path();
                if path.file_name().is_some_and(|n| n == "redis.log") {
                    continue;
                }
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).expect("remove AOF dir");
                } else {
                    std::fs::remove_file(&path).expect("remove data file");
                }
            }
        }
        self.redis_server
            .restart()
            .await
            .expect("redis-server restarts");
    }

    /// Stops every coordinator and worker (at most 30 s).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .expect("cluster stops in time");
    }
}

impl std::ops::Deref for Cluster {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.clients[0]
    }
}

/// Path of the `dagrid` binary built for the tests.
pub fn dagrid_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dagrid"))
}
