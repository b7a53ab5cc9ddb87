//! Health endpoints against a real redis-server: the coordinator's `/health/live`,
//! `/health/ready` and cluster view `/health` through a Redis outage, a worker killed with
//! `kill -9` leaving the view, and the worker's own listener (`--health-addr`): ready, then
//! unready while Redis is away, frozen (its claim loop stalls) or the worker drains.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{cluster, os, Cluster, Options};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const HELLO: &str = r#"
name: hello
steps:
  - name: hi
    command: echo hi
"#;

const NAP: &str = r#"
name: nap
steps:
  - name: nap
    command: sleep 30
"#;

/// GETs `url`: its status (0 when nothing answered) and JSON body.
async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    match http.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `url` until `pred(status, body)` holds; fails naming `what` after `limit`.
async fn until(
    http: &reqwest::Client,
    url: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = get(http, url).await;
        if pred(status, &body) {
            return (status, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never {what} within {limit:?}: last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn codes(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_redis_outage_turns_ready_and_the_cluster_view_down_and_back() {
    let mut c = Cluster::start(&[("hello.yaml", HELLO)]).await;
    let id = c.submit("hello", json!({})).await;
    c.wait(&id).await;

    assert_eq!(c.get_status("/health/live").await, 200);
    assert_eq!(c.get_status("/health/ready").await, 200);
    let (status, view) = until(
        &c.http,
        &c.url("/health"),
        Duration::from_secs(10),
        "showed two workers",
        |s, v| s == 200 && v["workers"]["alive"] == 2,
    )
    .await;
    assert_eq!(view["status"], "ok", "{view}");
    assert_eq!(status, 200);
    assert_eq!(view["redis"]["reachable"], true);
    assert!(view["redis"]["version"].as_str().is_some(), "{view}");
    assert!(view["redis"]["ping_ms"].as_f64().is_some(), "{view}");
    assert_eq!(view["redis"]["maxmemory_policy"], "noeviction");
    assert_eq!(view["workers"]["slots_total"], 4);
    assert_eq!(view["levels"].as_array().map(Vec::len), Some(10));
    let w = &view["workers"]["list"][0];
    assert_eq!(w["healthy"], true, "{view}");
    assert_eq!(w["stalled"], false);
    assert!(w["heartbeat_age_ms"].as_u64().is_some());
    assert!(w["claim_age_ms"].as_u64().is_some(), "{view}");
    // Workers apply their own reports, so the results stream may not have been read yet.
    assert!(view["results"]["consumers"].is_u64(), "{view}");

    c.stop_redis().await;
    until(
        &c.http,
        &c.url("/health/ready"),
        Duration::from_secs(2),
        "turned 503",
        |s, v| s == 503 && v["failing"] == "redis",
    )
    .await;
    assert_eq!(c.get_status("/health/live").await, 200);
    let (status, view) = get(&c.http, &c.url("/health")).await;
    assert_eq!(status, 503, "{view}");
    assert_eq!(view["status"], "down");
    assert_eq!(codes(&view), vec!["redis_unreachable"]);
    assert_eq!(view["redis"]["reachable"], false);
    assert!(view["workers"].is_null());

    c.start_redis(false).await;
    until(
        &c.http,
        &c.url("/health/ready"),
        Duration::from_secs(10),
        "turned 200 again",
        |s, _| s == 200,
    )
    .await;
    let (_, view) = until(
        &c.http,
        &c.url("/health"),
        Duration::from_secs(10),
        "came back ok with both workers",
        |s, v| s == 200 && v["status"] == "ok" && v["workers"]["alive"] == 2,
    )
    .await;
    assert_eq!(view["redis"]["reachable"], true);
    // And the cluster works again.
    let id = c.submit("hello", json!({})).await;
    assert_eq!(c.wait(&id).await["status"], "succeeded");
    c.stop().await;
}

#[tokio::test]
async fn ready_steps_without_a_worker_degrade_the_cluster_view() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            workers: 0,
            queues: vec![("lane", 1)],
            ..Options::default()
        },
    )
    .await;
    let (_, view) = get(&c.http, &c.url("/health")).await;
    assert_eq!(view["status"], "ok", "{view}");
    assert_eq!(view["warnings"][0]["code"], "no_worker", "{view}");
    assert_eq!(view["queues"][0]["name"], "lane", "{view}");
    c.submit("hello", json!({})).await;
    let (status, view) = until(
        &c.http,
        &c.url("/health"),
        Duration::from_secs(10),
        "said no_live_worker",
        |_, v| v["status"] == "degraded",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(codes(&view), vec!["no_live_worker"]);
    let ready: u64 = view["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ready"].as_u64().unwrap())
        .sum();
    assert_eq!(ready, 1, "{view}");
    assert!(
        view["levels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["oldest_ready_ms"].as_u64().is_some()),
        "{view}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_leaves_the_cluster_view_within_its_heartbeat_expiry() {
    let mut c = cluster::Cluster::start(
        &[],
        cluster::Settings {
            heartbeat: Some(Duration::from_millis(200)),
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let url = format!("{}/health", c.api);
    let (_, view) = until(
        &c.http,
        &url,
        Duration::from_secs(10),
        "showed two workers",
        |_, v| v["workers"]["alive"] == 2,
    )
    .await;
    assert_eq!(view["workers"]["list"][0]["heartbeat_interval_ms"], 200);
    let ids = c.worker_ids().await;
    let (pid, _, _) = c.kill_worker(0);
    // The heartbeat key lives three intervals (600 ms).
    let (_, view) = until(
        &c.http,
        &url,
        Duration::from_secs(5),
        "dropped the killed worker",
        |_, v| v["workers"]["alive"] == 1,
    )
    .await;
    let left: Vec<&Value> = view["workers"]["list"].as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0]["pid"], pid, "{view}");
    assert!(ids.iter().any(|id| left[0]["id"] == id.as_str()));
    assert_eq!(view["status"], "ok", "{view}");
}

/// A free local port (bound and released; the worker binds it again).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Starts a worker of `c` with its health listener; returns its address and shutdown token.
fn worker_with_listener(
    c: &Cluster,
    tracker: &tokio_util::task::TaskTracker,
    grace: Duration,
) -> (String, CancellationToken) {
    let addr = free_addr();
    let stop = CancellationToken::new();
    let config = dagrid_worker::Config {
        log_dir: c.log_dir.path().to_path_buf(),
        heartbeat_interval: Duration::from_millis(200),
        shutdown_grace: grace,
        worker_id: Some(format!("health-{}", uuid::Uuid::new_v4().simple())),
        health_addr: Some(addr),
        supervisor_program: Some(env!("CARGO_BIN_EXE_dagrid").into()),
        ..Default::default()
    };
    let (r, s) = (c.redis.clone(), stop.clone());
    tracker.spawn(async move { dagrid_worker::run(r, config, s).await.expect("worker runs") });
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn the_worker_listener_is_unready_without_redis_and_while_draining() {
    let mut c = Cluster::start_with(
        &[("hello.yaml", HELLO), ("nap.yaml", NAP)],
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let tracker = tokio_util::task::TaskTracker::new();
    let (base, stop) = worker_with_listener(&c, &tracker, Duration::from_secs(60));
    let ready = format!("{base}/health/ready");
    until(
        &c.http,
        &format!("{base}/health/live"),
        Duration::from_secs(5),
        "answered",
        |s, v| s == 200 && v["status"] == "live",
    )
    .await;
    until(
        &c.http,
        &ready,
        Duration::from_secs(5),
        "turned ready",
        |s, _| s == 200,
    )
    .await;
    let metrics = c
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()["content-type"],
        dagrid_shared::metrics::CONTENT_TYPE
    );

    // Redis away: the heartbeat writes fail, and past the heartbeat TTL (600 ms) it is unready.
    c.stop_redis().await;
    let (_, body) = until(
        &c.http,
        &ready,
        Duration::from_secs(5),
        "turned 503",
        |s, _| s == 503,
    )
    .await;
    assert_eq!(body["failing"], json!(["redis"]), "{body}");
    assert_eq!(get(&c.http, &format!("{base}/health/live")).await.0, 200);
    c.start_redis(false).await;
    until(
        &c.http,
        &ready,
        Duration::from_secs(10),
        "turned ready again",
        |s, _| s == 200,
    )
    .await;

    // Draining with a step running (grace 60 s): unready at once, still answering.
    let id = c.submit("nap", json!({})).await;
    c.wait_for(&id, "started", |r| r["status"] == "running")
        .await;
    stop.cancel();
    let (_, body) = until(
        &c.http,
        &ready,
        Duration::from_secs(5),
        "turned 503 while draining",
        |s, _| s == 503,
    )
    .await;
    assert_eq!(body["failing"], json!(["draining"]), "{body}");
    let (_, view) = until(
        &c.http,
        &c.url("/health"),
        Duration::from_secs(5),
        "showed the draining worker",
        |_, v| v["workers"]["list"][0]["draining"] == true,
    )
    .await;
    assert_eq!(codes(&view), Vec::<String>::new(), "{view}");
    c.post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    tracker.close();
    tokio::time::timeout(Duration::from_secs(30), tracker.wait())
        .await
        .expect("the worker stops");
    // The listener closed last, with the worker.
    assert_eq!(get(&c.http, &ready).await.0, 0);
    c.stop().await;
}

/// Redis frozen with SIGSTOP: connections stay open but nothing answers, so the worker's
/// blocking read hangs (as on a dead connection after a network fault) and, past the stall
/// limit (10 s), its claim loop counts as stalled; once Redis runs again it recovers.
#[tokio::test]
async fn a_claim_loop_hung_on_a_frozen_redis_is_reported_stalled() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let tracker = tokio_util::task::TaskTracker::new();
    let (base, stop) = worker_with_listener(&c, &tracker, Duration::from_secs(5));
    let ready = format!("{base}/health/ready");
    until(
        &c.http,
        &ready,
        Duration::from_secs(5),
        "turned ready",
        |s, _| s == 200,
    )
    .await;
    let pid: i64 = {
        let mut conn = c.redis.conn().await.expect("conn");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut *conn)
            .await
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("process_id")
    };
    assert!(os::send_signal(pid, "STOP"));
    let frozen = until(
        &c.http,
        &ready,
        Duration::from_secs(20),
        "reported the claim loop",
        |_, v| {
            v["failing"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "claim_loop"))
        },
    )
    .await;
    assert!(os::send_signal(pid, "CONT"));
    assert_eq!(frozen.0, 503);
    assert!(frozen.1["failing"]
        .as_array()
        .unwrap()
        .contains(&json!("redis")));
    until(
        &c.http,
        &ready,
        Duration::from_secs(20),
        "recovered",
        |s, _| s == 200,
    )
    .await;
    let id = c.submit("hello", json!({})).await;
    assert_eq!(c.wait(&id).await["status"], "succeeded");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    c.stop().await;
}
