//! Sub-DAG steps end to end (Dagu `call:` / `run:`, `params:`, `parallel:`, local DAGs of a
//! multi-document file): a real redis-server, a coordinator and two workers. Each child is a
//! real run through the queues; the parent's step gets Dagu's output shapes and follows its
//! children's outcome; a stop takes the children with it; a call loop ends at the depth limit.

use crate::common;

use std::time::Duration;

use common::{output, step, Cluster};
use serde_json::{json, Value};

/// A registered child DAG: prints `X` and `Y`, captures `X-Y` as `PAIR`, fails when `X` is
/// `bad`, sleeps `SLEEP` seconds.
const CHILD: &str = r#"
name: child
params:
  - X: ""
  - Y: "y0"
  - SLEEP: "0"
steps:
  - name: pair
    script: |
      sleep "$SLEEP"
      [ "$X" != bad ] || exit 3
      echo "$X-$Y"
    output: PAIR
"#;

/// The JSON of a step's `output`.
fn json_output(run: &Value, name: &str) -> Value {
    serde_json::from_str(&output(run, name))
        .unwrap_or_else(|e| panic!("step {name}: output is not JSON ({e}): {run}"))
}

/// The run `id` once final (within 60 s).
async fn finished(c: &Cluster, id: &str) -> Value {
    c.wait_final(id, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_runs_the_child_as_a_run_and_passes_its_outputs_back() {
    let parent = r#"
name: parent
params:
  - WHO: "w"
steps:
  - name: make
    command: echo made
    output: MADE
  - name: sub
    call: child
    params: "X=${WHO} Y=${MADE}"
    output: SUB
  - name: after
    command: echo "${SUB}"
"#;
    let c = Cluster::start(&[("child.yaml", CHILD), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({"WHO": "me"})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let sub = json_output(&run, "sub");
    assert_eq!(sub["name"], "child", "{sub}");
    assert_eq!(sub["status"], "succeeded", "{sub}");
    assert_eq!(sub["outputs"]["PAIR"], "me-made", "{sub}");
    assert_eq!(sub["params"], "X=me Y=made SLEEP=0", "{sub}");
    // The child is a real run of its own, created by the call.
    let child_id = sub["dagRunId"]
        .as_str()
        .expect("a child run id")
        .to_string();
    let child = c.run(&child_id).await;
    assert_eq!(child["dag"], "child", "{child}");
    assert_eq!(child["status"], "succeeded", "{child}");
    assert_eq!(child["trigger"], "call", "{child}");
    assert_eq!(output(&child, "pair"), "me-made");
    assert_eq!(step(&run, "sub")["children"], 1, "{run}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_fails_the_step_unless_continue_on_covers_it() {
    let parent = r#"
name: parent
type: graph
steps:
  - name: strict
    call: child
    params: "X=bad"
  - name: lenient
    run: child
    params:
      X: bad
      Y: other
    continueOn:
      failure: true
  - name: after
    depends: [lenient]
    command: echo ran
    output: AFTER
"#;
    let c = Cluster::start(&[("child.yaml", CHILD), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "strict")["status"], "failed", "{run}");
    let why = step(&run, "strict")["error"].as_str().unwrap_or_default();
    assert!(why.contains("1 of 1 child runs did not succeed"), "{why}");
    assert_eq!(step(&run, "after")["status"], "succeeded", "{run}");
    assert_eq!(output(&run, "after"), "ran");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fans_out_over_an_earlier_output_with_max_concurrent_in_redis() {
    let parent = r#"
name: fan
steps:
  - name: list
    script: printf 'a\nb\nc\nd\ne\na\n'
    output: ITEMS
  - name: map
    call: child
    parallel:
      items: ${ITEMS}
      max_concurrent: 2
    params: "X=${ITEM} SLEEP=0.3"
    output: MAPPED
  - name: reduce
    command: echo "${MAPPED}"
"#;
    let c = Cluster::start(&[("child.yaml", CHILD), ("fan.yaml", parent)]).await;
    let id = c.submit("fan", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let mapped = json_output(&run, "map");
    // Six items, two with the same params: five child runs, as Dagu dedups them.
    assert_eq!(mapped["summary"]["total"], 5, "{mapped}");
    assert_eq!(mapped["summary"]["succeeded"], 5, "{mapped}");
    assert_eq!(mapped["summary"]["failed"], 0, "{mapped}");
    let pairs: Vec<&str> = mapped["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["PAIR"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(pairs, ["a-y0", "b-y0", "c-y0", "d-y0", "e-y0"], "{mapped}");
    // max_concurrent: 2 held in Redis: never more than two children running at once.
    let mut spans = Vec::new();
    for r in mapped["results"].as_array().expect("results") {
        let child = c.run(r["dagRunId"].as_str().expect("id")).await;
        let s = step(&child, "pair");
        spans.push((
            s["started_ms"].as_u64().expect("started"),
            s["finished_ms"].as_u64().expect("finished"),
        ));
    }
    for (start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(overlapping <= 2, "more than 2 children at once: {spans:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_dag_of_the_same_file_is_called_by_its_name() {
    let file = r#"
name: main
steps:
  - name: sub
    call: helper
    params: "N=4"
    output: OUT
---
name: helper
params:
  - N: "1"
steps:
  - name: double
    command: echo $((N * 2))
    output: TWICE
"#;
    let c = Cluster::start(&[("main.yaml", file)]).await;
    let id = c.submit("main", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = json_output(&run, "sub");
    assert_eq!(out["name"], "main.helper", "{out}");
    assert_eq!(out["outputs"]["TWICE"], "8", "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_parent_stops_its_children() {
    let parent = r#"
name: parent
steps:
  - name: sub
    call: child
    parallel: [one, two, three]
    params: "X=${ITEM} SLEEP=30"
"#;
    let c = Cluster::start(&[("child.yaml", CHILD), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({})).await;
    let run = c
        .wait_run(
            &id,
            Duration::from_secs(20),
            "waiting for 3 children",
            |r| step(r, "sub")["children"] == 3,
        )
        .await;
    assert_eq!(step(&run, "sub")["status"], "running", "{run}");
    let (status, _) = c.stop_run(&id).await.expect("the API answers");
    assert_eq!(status, 200);
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "aborted", "{run}");
    let listed = c.get_json("/api/v1/runs?dag=child").await;
    let children: Vec<String> = listed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(children.len(), 3, "{listed}");
    for child in &children {
        let run = finished(&c, child).await;
        assert_eq!(run["status"], "aborted", "{run}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_loop_through_a_variable_ends_at_the_depth_limit() {
    // The name comes from a param, so registration cannot see the loop.
    let looping = r#"
name: looping
params:
  - NEXT: looping
steps:
  - name: again
    call: ${NEXT}
"#;
    let c = Cluster::start(&[("looping.yaml", looping)]).await;
    let id = c.submit("looping", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    // Depths 0 to 10 ran; the run at depth 10 could not call deeper.
    let listed = c.get_json("/api/v1/runs?dag=looping&limit=100").await;
    let runs = listed["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 11, "{listed}");
    let mut stopped_by_depth = 0;
    for r in &runs {
        let r = c.run(r["id"].as_str().unwrap_or_default()).await;
        assert_eq!(r["status"], "failed", "{r}");
        let why = step(&r, "again")["error"].as_str().unwrap_or_default();
        if why.contains("calls deep, over the limit of 10") {
            stopped_by_depth += 1;
        }
    }
    assert_eq!(stopped_by_depth, 1, "{listed}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_child_lets_its_waiting_parent_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Fails the first time for each X (leaving a mark), succeeds after.
    let flaky = format!(
        r#"
name: flaky
params:
  - X: ""
  - SLEEP: "0"
steps:
  - name: try
    script: |
      sleep "$SLEEP"
      if [ -e "{dir}/$X" ]; then echo "ok-$X"; else touch "{dir}/$X"; exit 3; fi
    output: RESULT
"#,
        dir = dir.path().display()
    );
    // The slow item is marked beforehand, so only the fast one fails first.
    std::fs::write(dir.path().join("slow"), "").expect("mark");
    let parent = r#"
name: parent
steps:
  - name: map
    call: flaky
    parallel:
      items:
        - {X: fast, SLEEP: "0"}
        - {X: slow, SLEEP: "5"}
    output: OUT
"#;
    let c = Cluster::start(&[("flaky.yaml", &flaky), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({})).await;
    // The fast child fails while its sibling still sleeps: the parent's step still waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let listed = c.get_json("/api/v1/runs?dag=flaky&status=failed").await;
        if let Some(r) = listed["runs"].as_array().and_then(|r| r.first()) {
            break r["id"].as_str().unwrap_or_default().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no failed child");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(c.run(&id).await["status"], "running");
    let (status, body) = c
        .post(&format!("/api/v1/runs/{failed}/retry"), json!({}))
        .await;
    assert!(status < 300, "{status} {body}");
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = json_output(&run, "map");
    assert_eq!(out["summary"]["succeeded"], 2, "{out}");
    assert_eq!(out["outputs"][0]["RESULT"], "ok-fast", "{out}");
    assert_eq!(out["outputs"][1]["RESULT"], "ok-slow", "{out}");
    c.stop().await;
}

/// A child DAG that appends its `X` to `<dir>/runs` each time it runs, with `dedup` as given.
fn counting_child(dir: &std::path::Path, dedup: &str) -> String {
    format!(
        r#"
name: counted
dedup: {dedup}
params:
  - X: ""
steps:
  - name: count
    script: |
      echo "$X" >> "{dir}/runs"
      echo "done-$X"
    output: DONE
"#,
        dir = dir.display()
    )
}

/// The lines of `<dir>/runs`: one per child execution.
fn executions(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

const COUNTING_PARENT: &str = r#"
name: parent
steps:
  - name: map
    call: counted
    parallel: [a, b]
    params: "X=${ITEM}"
    output: OUT
"#;

/// Runs [`COUNTING_PARENT`] over a child whose `dedup` is as given, then retries its `map`
/// step once both are final; returns the dir of the child's execution lines, the cluster and
/// the parent run after each.
async fn run_then_retry_map(dedup: &str) -> (tempfile::TempDir, Cluster, Value, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = counting_child(dir.path(), dedup);
    let c = Cluster::start(&[("counted.yaml", &child), ("parent.yaml", COUNTING_PARENT)]).await;
    let id = c.submit("parent", json!({})).await;
    let first = finished(&c, &id).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(executions(dir.path()), 2);
    let (status, body) = c
        .post(&format!("/api/v1/runs/{id}/retry"), json!({"step": "map"}))
        .await;
    assert!(status < 300, "{status} {body}");
    let again = c
        .wait_run(&id, Duration::from_secs(60), "retried and final", |r| {
            r["status"] == "succeeded" && step(r, "map")["attempt"] == 2
        })
        .await;
    (dir, c, first, again)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_the_call_step_runs_new_children() {
    let (dir, c, first, again) = run_then_retry_map("active").await;
    assert_eq!(executions(dir.path()), 4, "a retry runs new children");
    let (before, after) = (json_output(&first, "map"), json_output(&again, "map"));
    assert_ne!(
        before["results"][0]["dagRunId"], after["results"][0]["dagRunId"],
        "{before} {after}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_skips_children_that_succeeded_within_their_dedup_window() {
    let (dir, c, first, again) = run_then_retry_map("window:1h").await;
    assert_eq!(executions(dir.path()), 2, "the children did not run again");
    let (before, after) = (json_output(&first, "map"), json_output(&again, "map"));
    assert_eq!(
        before["results"], after["results"],
        "the same children count"
    );
    assert_eq!(after["outputs"][1]["DONE"], "done-b", "{after}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manpage_mapreduce_example_totals_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [("a.1", "one two\nthree\n"), ("b.1", "four\n"), ("c.1", "")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let ok = std::process::Command::new("gzip")
            .arg(&path)
            .status()
            .expect("gzip runs");
        assert!(ok.success());
    }
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manpage-mapreduce.yaml"),
    )
    .expect("the example");
    let c = Cluster::start(&[("manpage-mapreduce.yaml", &example)]).await;
    let files = format!("{}/*.gz", dir.path().display());
    let id = c
        .submit("manpage-mapreduce", json!({ "FILES": files }))
        .await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(output(&run, "reduce"), "3 files, 3 lines, 4 words");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_be_a_call_step() {
    let parent = r#"
name: parent
steps:
  - name: main
    command: "true"
handlerOn:
  success:
    call: child
    params: "X=handled"
    output: HANDLED
"#;
    let c = Cluster::start(&[("child.yaml", CHILD), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = json_output(&run, "onSuccess");
    assert_eq!(out["outputs"]["PAIR"], "handled-y0", "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_inherits_the_parent_run_priority_unless_its_dag_sets_one() {
    let parent = r#"
name: parent
type: graph
steps:
  - name: plain
    call: child
    output: PLAIN
  - name: own
    call: low-child
    output: OWN
"#;
    let low = CHILD
        .replace("name: child", "name: low-child")
        .replace("params:", "priority: low\nparams:");
    let c = Cluster::start(&[
        ("child.yaml", CHILD),
        ("low.yaml", &low),
        ("parent.yaml", parent),
    ])
    .await;
    let (status, body) = c
        .post("/api/v1/runs", json!({"dag": "parent", "priority": "high"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let plain = c
        .run(json_output(&run, "plain")["dagRunId"].as_str().unwrap())
        .await;
    let own = c
        .run(json_output(&run, "own")["dagRunId"].as_str().unwrap())
        .await;
    assert_eq!(plain["priority"], 8, "{plain}");
    assert_eq!(own["priority"], 2, "{own}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_calls_go_through_the_child_dag_queue_and_its_limit() {
    let parent = r#"
name: parent
type: graph
steps:
  - name: first
    call: one-at-a-time
    params: "X=1 SLEEP=0.5"
    output: A
  - name: second
    call: one-at-a-time
    params: "X=2 SLEEP=0.5"
    output: B
"#;
    let limited = CHILD
        .replace("name: child", "name: one-at-a-time")
        .replace("params:", "maxActiveRuns: 1\nparams:");
    let c = Cluster::start(&[("limited.yaml", &limited), ("parent.yaml", parent)]).await;
    let id = c.submit("parent", json!({})).await;
    let run = finished(&c, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let mut spans = Vec::new();
    for name in ["first", "second"] {
        let child = c
            .run(json_output(&run, name)["dagRunId"].as_str().unwrap())
            .await;
        assert_eq!(child["queue"], "one-at-a-time", "{child}");
        let s = step(&child, "pair");
        spans.push((
            s["started_ms"].as_u64().unwrap(),
            s["finished_ms"].as_u64().unwrap(),
        ));
    }
    spans.sort();
    assert!(
        spans[0].1 <= spans[1].0,
        "the child DAG's maxActiveRuns: 1 held: {spans:?}"
    );
    c.stop().await;
}
