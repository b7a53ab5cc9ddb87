//! Sub-DAG fan-out under `kill -9` (real processes): the coordinator that creates a `parallel`
//! step's child runs, and a worker running them, are killed mid-way, repeatedly. Afterwards the
//! parent run succeeded, it waited for every item, no child run was created twice (the
//! children are created under the attempt's Idempotency-Key, so a coordinator taking over
//! creates none again), and each child ran to its end (the marker lines of [`one_step_dag`]),
//! more than once only after its worker was killed.

use crate::common;

use std::time::Duration;

use common::cluster::{Cluster, Settings};
use common::dags::one_step_dag;
use common::output;
use serde_json::{json, Value};

const ITEMS: usize = 400;

fn parent() -> String {
    format!(
        r#"
name: fan
steps:
  - name: list
    command: seq 1 {ITEMS}
    output: LIST
  - name: map
    call: child
    parallel:
      items: ${{LIST}}
      max_concurrent: {ITEMS}
    params: "SLEEP=0.05 RESLEEP=0.05"
    output: OUT
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_survives_kill_9_of_the_coordinator_and_a_worker() {
    let mut c = Cluster::start(
        &[
            ("child.yaml", one_step_dag("child")),
            ("fan.yaml", parent()),
        ],
        Settings {
            workers: 2,
            concurrency: 4,
            ..Settings::default()
        },
    )
    .await;
    let id = c.submit("fan", json!({})).await;
    for (i, wait_ms) in [150u64, 400, 700].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        c.kill_coordinator();
        if i == 1 {
            // A worker too, while it runs children.
            c.kill_worker(0);
        }
        c.start_coordinator().await;
        if i == 1 {
            c.start_worker().await;
        }
    }
    let run = c.wait_final(&id, Duration::from_secs(180)).await;
    if run["status"] != "succeeded" {
        c.dump_logs(40);
    }
    assert_eq!(run["status"], "succeeded", "{run}");
    let out: Value = serde_json::from_str(&output(&run, "map")).expect("JSON output");
    assert_eq!(out["summary"]["total"], ITEMS, "{}", out["summary"]);
    assert_eq!(out["summary"]["succeeded"], ITEMS, "{}", out["summary"]);
    let children: Vec<String> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["dagRunId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(children.len(), ITEMS);
    // Each child ran to its end; more than once only when its worker was killed after the
    // step's end and before its report (steps run at least once, and count once).
    let mut wrong = Vec::new();
    for child in &children {
        let lines = c.marker(child).len();
        if lines == 1 {
            continue;
        }
        let run = c.run(child).await;
        let lost = common::step(&run, "work")["lost"].as_u64().unwrap_or(0);
        if lines == 0 || lost == 0 {
            wrong.push((child.clone(), lines, lost));
        }
    }
    assert!(
        wrong.is_empty(),
        "children not run once (id, runs, lost): {wrong:?}"
    );
    // No child beyond the items: every run of the child DAG is one of them.
    let listed = c.get_json("/api/v1/runs?dag=child&limit=1000").await;
    assert_eq!(
        listed["runs"].as_array().map_or(0, Vec::len),
        ITEMS,
        "child runs created twice?"
    );
}
