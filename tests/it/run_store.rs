//! How runs are stored: the hash of a queued run is a listpack (every value within Redis's
//! `hash-max-listpack-value`), and the API shows the same run as before.

use crate::common;

use common::{Cluster, Options};
use serde_json::json;

const THREE: &str = r#"
name: three
params:
  - NAME: world
steps:
  - name: first
    command: echo hello $NAME
  - name: second
    depends: [first]
    command: echo two
  - name: third
    depends: [second]
    command: echo three
"#;

const ONE: &str = r#"
name: one
steps:
  - name: only
    command: "true"
"#;

const DAGS: &[(&str, &str)] = &[("three.yaml", THREE), ("one.yaml", ONE)];

async fn encoding(c: &Cluster, key: &str) -> String {
    let mut conn = c.redis.conn().await.expect("redis");
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(&mut *conn)
        .await
        .expect("OBJECT ENCODING")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_hash_is_a_listpack_and_reads_back_whole() {
    let c = Cluster::start_with(
        DAGS,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let three = c.submit("three", json!({"NAME": "there"})).await;
    let one = c.submit("one", json!({})).await;
    for id in [&three, &one] {
        let key = c.redis.keys().run(id);
        assert_eq!(encoding(&c, &key).await, "listpack", "run {id}");
    }
    let run = c.run(&three).await;
    assert_eq!(run["status"], "queued");
    assert_eq!(run["priority"], 5);
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["params"][0]["name"], "NAME");
    assert_eq!(run["params"][0]["value"], "there");
    let first = common::step(&run, "first");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["token"].as_str().map(str::len), Some(12));
    // Queued with its run, the step keeps no time of its own: it reads as the run's.
    assert!(first["queued_ms"].as_u64().is_some());
    assert_eq!(first["queued_ms"], run["created_ms"]);
    assert_eq!(common::step(&run, "second")["status"], "pending");
    c.stop().await;
}

const OK: &str = "name: ok\ndedup: none\nsteps:\n  - name: a\n    command: 'true'\n";
const BAD: &str = "name: bad\nsteps:\n  - name: a\n    command: 'false'\n";
const SLOW: &str = "name: slow\nsteps:\n  - name: a\n    command: sleep 30\n";

/// Every page of `GET /api/v1/runs?<query>` with page size 2: the run ids, in order.
async fn list_all(c: &Cluster, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("/api/v1/runs?limit=2&{query}");
        if let Some(cur) = &cursor {
            path.push_str(&format!("&cursor={cur}"));
        }
        let page = c.get_json(&path).await;
        for r in page["runs"].as_array().expect("runs") {
            ids.push(r["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
    panic!("more than 20 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_all_by_status_and_by_dag_without_an_all_runs_index() {
    let c = Cluster::start(&[("ok.yaml", OK), ("bad.yaml", BAD), ("slow.yaml", SLOW)]).await;
    let ok1 = c.submit("ok", json!({})).await;
    let bad = c.submit("bad", json!({})).await;
    let ok2 = c.submit("ok", json!({})).await;
    for id in [&ok1, &bad, &ok2] {
        c.wait(id).await;
    }
    let slow = c.submit("slow", json!({})).await;
    c.wait_for(&slow, "running", |r| r["status"] == "running")
        .await;
    let mut newest_first = vec![slow.clone(), ok2.clone(), bad.clone(), ok1.clone()];
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(newest_first[0], slow, "ids are UUIDv7, ordered by creation");
    // All runs: the status indexes merged, paged across statuses.
    assert_eq!(list_all(&c, "").await, newest_first);
    let mut oks = vec![ok1.clone(), ok2.clone()];
    oks.sort_by(|a, b| b.cmp(a));
    assert_eq!(list_all(&c, "status=succeeded").await, oks);
    assert_eq!(list_all(&c, "status=failed").await, vec![bad.clone()]);
    assert_eq!(list_all(&c, "status=running").await, vec![slow.clone()]);
    assert_eq!(list_all(&c, "dag=ok").await, oks);
    assert_eq!(
        list_all(&c, "dag=ok&status=failed").await,
        Vec::<String>::new()
    );
    // No index of all runs is kept.
    let mut conn = c.redis.conn().await.expect("redis");
    let all_key = format!("{}runs", c.redis.keys().prefix());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&all_key)
        .query_async(&mut *conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
    drop(conn);
    let (status, _) = c
        .post_to(0, &format!("/api/v1/runs/{slow}/stop"), json!({}))
        .await;
    assert!(status < 300, "stop answered {status}");
    c.stop().await;
}
