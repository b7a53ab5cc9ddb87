//! Redis going away and coming back: the coordinator answers 503 meanwhile (readiness and
//! writes), and afterwards it and the workers carry on without a restart, with the data kept
//! (a restart with its append-only file) or lost (a restart without persistence: consumer
//! groups and the DAGs of `--dags` are made again).

use crate::common;

use std::time::Duration;

use common::Cluster;
use serde_json::json;

const HELLO: &str = r#"
name: hello
steps:
  - name: hi
    command: echo hi
"#;

const PAUSE: &str = r#"
name: pause
steps:
  - name: nap
    command: sleep 3
  - name: after
    depends: [nap]
    command: echo woke
"#;

const DAGS: &[(&str, &str)] = &[("hello.yaml", HELLO), ("pause.yaml", PAUSE)];

/// Polls `GET path` until it answers `want`.
async fn until_status(c: &Cluster, path: &str, want: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = c.get_status(path).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} answered {got}, not {want}, within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits until the coordinator takes it (201); returns the run id.
async fn submit_eventually(c: &Cluster, dag: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = c
            .post_to(0, "/api/v1/runs", json!({ "dag": dag, "dedup": "none" }))
            .await;
        if status == 201 {
            return body["id"].as_str().expect("id").to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "submit of {dag} still answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_workers_carry_on_after_redis_restarts() {
    let mut c = Cluster::start(DAGS).await;
    let before = c.submit("hello", json!({})).await;
    assert_eq!(c.wait(&before).await["status"], "succeeded");

    // A step runs while Redis is away; its reports wait for Redis to come back.
    let napping = c.submit("pause", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.run(&napping).await["status"] != "running" {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    c.stop_redis().await;
    until_status(&c, "/health/ready", 503, Duration::from_secs(5)).await;
    let (status, body) = c
        .post_to(
            0,
            "/api/v1/runs",
            json!({ "dag": "hello", "dedup": "none" }),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "redis_unavailable", "{body}");
    assert_eq!(c.get_status("/health/live").await, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;

    c.start_redis(false).await;
    until_status(&c, "/health/ready", 200, Duration::from_secs(20)).await;
    let run = c.wait(&napping).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let after = submit_eventually(&c, "hello", Duration::from_secs(20)).await;
    assert_eq!(c.wait(&after).await["status"], "succeeded");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_workers_recover_after_redis_loses_its_data() {
    let mut c = Cluster::start(DAGS).await;
    let before = c.submit("hello", json!({})).await;
    assert_eq!(c.wait(&before).await["status"], "succeeded");

    c.stop_redis().await;
    c.start_redis(true).await;
    until_status(&c, "/health/ready", 200, Duration::from_secs(20)).await;
    // The registry is empty until the coordinator registers its --dags again.
    let after = submit_eventually(&c, "pause", Duration::from_secs(30)).await;
    let run = c.wait(&after).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let again = c.submit("hello", json!({})).await;
    assert_eq!(c.wait(&again).await["status"], "succeeded");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_started_before_redis_waits_for_it() {
    use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
    let mut server = EmbeddedRedis::start(EmbeddedOptions::default())
        .await
        .expect("redis-server starts");
    let redis = dagrid_shared::Redis::open(&server.url(), "test").expect("url");
    server.stop().await;

    let dags = tempfile::tempdir().expect("tempdir");
    std::fs::write(dags.path().join("hello.yaml"), HELLO).expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = dagrid_coordinator::Config {
        dags_dir: Some(dags.path().to_path_buf()),
        ..Default::default()
    };
    let coordinator = tokio::spawn(dagrid_coordinator::serve(
        listener,
        redis,
        config,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !coordinator.is_finished(),
        "the coordinator must wait for Redis, not exit"
    );

    server.restart().await.expect("redis-server starts");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http.get(format!("{api}/api/v1/dags/hello")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator never came up once Redis did"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    coordinator
        .await
        .expect("task")
        .expect("the coordinator stops cleanly");
}
