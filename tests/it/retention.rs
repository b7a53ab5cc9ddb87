//! Retention: finished runs beyond the age or count bound disappear with their log tails, their
//! index entries and the dedup key they hold, while queued and running runs stay.

use crate::common;

use std::time::Duration;

use common::{Cluster, Options};
use serde_json::{json, Value};

const QUICK: &str = r#"
name: quick
steps:
  - name: first
    command: echo one
  - name: second
    depends: [first]
    command: echo two
"#;

const SLOW: &str = r#"
name: slow
steps:
  - name: wait
    command: sleep 12
"#;

const DAGS: &[(&str, &str)] = &[("quick.yaml", QUICK), ("slow.yaml", SLOW)];

async fn exists(c: &Cluster, key: &str) -> bool {
    let mut conn = c.redis.conn().await.expect("redis");
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut *conn)
        .await
        .expect("EXISTS")
        == 1
}

async fn hget(c: &Cluster, id: &str, field: &str) -> Option<String> {
    let mut conn = c.redis.conn().await.expect("redis");
    redis::cmd("HGET")
        .arg(c.redis.keys().run(id))
        .arg(field)
        .query_async(&mut *conn)
        .await
        .expect("HGET")
}

/// Whether the run, its two index entries and (for a finished `quick` run) its two log tails
/// are all there (`true`) or all gone (`false`); panics on a mix.
async fn kept(c: &Cluster, id: &str, dag: &str, status: &str) -> bool {
    let k = c.redis.keys();
    // One MULTI, so a sweep deleting the run (one script) is seen before or after, never in
    // the middle of the reads.
    let mut conn = c.redis.conn().await.expect("redis");
    let (run, by_dag, by_status, first, second): (i64, Option<f64>, Option<f64>, i64, i64) =
        redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(k.run(id))
            .cmd("ZSCORE")
            .arg(k.runs_by_dag(dag))
            .arg(id)
            .cmd("ZSCORE")
            .arg(k.runs_by_status(status))
            .arg(id)
            .cmd("EXISTS")
            .arg(k.log_tail(id, "first"))
            .cmd("EXISTS")
            .arg(k.log_tail(id, "second"))
            .query_async(&mut *conn)
            .await
            .expect("MULTI");
    let mut all = vec![run == 1, by_dag.is_some(), by_status.is_some()];
    if dag == "quick" && status == "succeeded" {
        all.push(first == 1);
        all.push(second == 1);
    }
    assert!(
        all.iter().all(|p| *p) || all.iter().all(|p| !*p),
        "run {id}: partly deleted: {all:?}"
    );
    all[0]
}

async fn submit(c: &Cluster, body: Value) -> String {
    let (status, v) = c.post_to(0, "/api/v1/runs", body).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

async fn wait_status(c: &Cluster, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.run(id).await["status"] != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_beyond_the_count_go_with_their_log_tails_and_index_entries() {
    // Two replicas sweep at once: together they still keep exactly the newest 3.
    let c = Cluster::start_with(
        DAGS,
        Options {
            coordinators: 2,
            configure: Some(|config| {
                config.retention_age = Duration::ZERO;
                config.retention_count = 3;
                config.retention_interval = Duration::from_millis(200);
            }),
            ..Options::default()
        },
    )
    .await;
    // The oldest run of all is still running: the count bound must pass over it.
    let slow = c.submit("slow", json!({})).await;
    wait_status(&c, &slow, "running").await;
    let mut quick = Vec::new();
    for _ in 0..6 {
        let id = c.submit("quick", json!({})).await;
        assert_eq!(c.wait(&id).await["status"], "succeeded");
        quick.push(id);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while kept(&c, &quick[2], "quick", "succeeded").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the oldest finished runs were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, id) in quick.iter().enumerate() {
        assert_eq!(
            kept(&c, id, "quick", "succeeded").await,
            i >= 3,
            "quick run {i} ({id}): the newest 3 stay, the others go"
        );
    }
    let gone = c
        .http
        .get(c.url(&format!("/api/v1/runs/{}", quick[0])))
        .send()
        .await
        .expect("GET");
    assert_eq!(gone.status(), 404);
    assert!(kept(&c, &slow, "slow", "running").await);
    assert_eq!(c.run(&slow).await["status"], "running");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_past_the_age_go_and_active_runs_stay() {
    let c = Cluster::start_with(
        DAGS,
        Options {
            configure: Some(|config| {
                config.retention_age = Duration::from_secs(2);
                config.retention_count = 0;
                config.retention_interval = Duration::from_millis(200);
            }),
            ..Options::default()
        },
    )
    .await;
    let slow = c.submit("slow", json!({})).await;
    let delayed = submit(
        &c,
        json!({ "dag": "quick", "delay": "1h", "dedup": "none" }),
    )
    .await;
    let held = submit(
        &c,
        json!({ "dag": "quick", "dedup": "window:1h", "dedup_key": "held" }),
    )
    .await;
    let plain = submit(&c, json!({ "dag": "quick", "dedup": "none" })).await;
    for id in [&held, &plain] {
        assert_eq!(c.wait(id).await["status"], "succeeded");
    }
    let dedup_key = c.redis.keys().dedup_named(
        &hget(&c, &held, "dedup")
            .await
            .expect("the run holds a dedup key"),
    );
    assert!(exists(&c, &dedup_key).await, "held for the dedup window");
    // Just finished: younger than the age bound.
    assert!(kept(&c, &held, "quick", "succeeded").await);
    assert!(kept(&c, &plain, "quick", "succeeded").await);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while kept(&c, &held, "quick", "succeeded").await
        || kept(&c, &plain, "quick", "succeeded").await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "finished runs older than the age bound were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !exists(&c, &dedup_key).await,
        "the dedup key of a deleted run goes with it"
    );
    // A new submit with the same dedup key makes a new run instead of naming the deleted one.
    let again = submit(
        &c,
        json!({ "dag": "quick", "dedup": "window:1h", "dedup_key": "held" }),
    )
    .await;
    assert_ne!(again, held);

    assert!(kept(&c, &slow, "slow", "running").await);
    assert!(kept(&c, &delayed, "quick", "queued").await);
    assert_eq!(c.run(&delayed).await["status"], "queued");
    c.stop().await;
}

/// A finished run as a version that named runs by a UUID's text form left it: its hash and its
/// two index entries, created and finished `age` ago. Returns its id.
async fn legacy_run(c: &Cluster, age: Duration) -> String {
    use uuid::{NoContext, Timestamp, Uuid};
    let at = common::os::now_ms() - u64::try_from(age.as_millis()).expect("ms");
    let id = Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        at / 1000,
        (at % 1000) as u32 * 1_000_000,
    ))
    .to_string();
    let k = c.redis.keys();
    let mut conn = c.redis.conn().await.expect("redis");
    redis::pipe()
        .atomic()
        .hset_multiple(
            k.run(&id),
            &[
                ("dag", "quick".to_string()),
                ("status", "succeeded".to_string()),
                ("created", at.to_string()),
                ("finished", at.to_string()),
            ],
        )
        .zadd(k.runs_by_dag("quick"), &id, 0)
        .zadd(k.runs_by_status("succeeded"), &id, 0)
        .query_async::<()>(&mut *conn)
        .await
        .expect("the legacy run is written");
    id
}

/// Whether the run's hash is there and its two index entries; panics on a mix.
async fn indexed(c: &Cluster, id: &str) -> bool {
    let k = c.redis.keys();
    let mut conn = c.redis.conn().await.expect("redis");
    let (run, by_dag, by_status): (i64, Option<f64>, Option<f64>) = redis::pipe()
        .atomic()
        .exists(k.run(id))
        .zscore(k.runs_by_dag("quick"), id)
        .zscore(k.runs_by_status("succeeded"), id)
        .query_async(&mut *conn)
        .await
        .expect("reads");
    let all = [run == 1, by_dag.is_some(), by_status.is_some()];
    assert!(all.iter().all(|b| *b == all[0]), "{id}: {all:?}");
    all[0]
}

/// Runs named by a UUID's text form (made by earlier versions) sort below this version's ids;
/// the age bound reaches them by their own time prefix, and keeps the young ones of both forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_earlier_versions_go_by_their_own_age() {
    let c = Cluster::start_with(
        DAGS,
        Options {
            configure: Some(|config| {
                config.retention_age = Duration::from_secs(3600);
                config.retention_count = 0;
                config.retention_interval = Duration::from_millis(200);
            }),
            ..Options::default()
        },
    )
    .await;
    let old = legacy_run(&c, Duration::from_secs(2 * 3600)).await;
    let young = legacy_run(&c, Duration::from_secs(600)).await;
    let new = submit(&c, json!({ "dag": "quick", "dedup": "none" })).await;
    assert_eq!(new.len(), dagrid_shared::run_id::LEN, "{new}");
    assert!(new > young && young > old, "{old} {young} {new}");
    assert_eq!(c.wait(&new).await["status"], "succeeded");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while indexed(&c, &old).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run of an earlier version older than the age bound was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(indexed(&c, &young).await, "younger than the age bound");
    assert!(kept(&c, &new, "quick", "succeeded").await);
    c.stop().await;
}
