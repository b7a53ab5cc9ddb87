//! How runs are stored: the hash of a queued run is a listpack (every value within Redis's
//! `hash-max-listpack-value`), and the API shows the same run as before.

mod common;

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
    assert_eq!(first["token"].as_str().map(str::len), Some(16));
    assert!(first["queued_ms"].as_u64().is_some());
    assert_eq!(common::step(&run, "second")["status"], "pending");
    c.stop().await;
}
