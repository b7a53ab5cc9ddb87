//! Handlers (Dagu `handlerOn` / `handler_on`) end to end: a real redis-server, a coordinator
//! and two workers; each handler writes `$DAG_RUN_STATUS` into a marker file named after
//! itself, and the tests check which markers exist and the runs' final states.

use crate::common;

use std::path::Path;

use common::{step, Cluster};
use serde_json::{json, Value};

/// A DAG whose main step runs `main`; every handler writes its marker into `dir`.
/// `style` is `v1` (`handlerOn`, `cancel`) or `v2` (`handler_on`, `abort`).
fn dag(name: &str, main: &str, dir: &Path, style: &str, success: &str) -> String {
    let dir = dir.display();
    let (key, abort) = match style {
        "v1" => ("handlerOn", "cancel"),
        _ => ("handler_on", "abort"),
    };
    format!(
        r#"
name: {name}
steps:
  - name: main
    command: {main}
{key}:
  success:
    command: sh -c 'echo $DAG_RUN_STATUS > {dir}/success; {success}'
  failure:
    command: sh -c 'echo $DAG_RUN_STATUS > {dir}/failure'
  {abort}:
    command: sh -c 'echo $DAG_RUN_STATUS > {dir}/abort'
  exit:
    name: cleanup
    command: sh -c 'echo $DAG_RUN_STATUS > {dir}/exit'
"#
    )
}

/// The marker a handler wrote (its `DAG_RUN_STATUS`), or `None` when it did not run.
fn marker(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The names of the run's steps as the API lists them.
fn step_names(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_runs_the_success_handler_then_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dag("ok", "'true'", dir.path(), "v1", "true");
    let c = Cluster::start(&[("ok.yaml", &yaml)]).await;
    let id = c.submit("ok", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(marker(dir.path(), "success").as_deref(), Some("succeeded"));
    assert_eq!(marker(dir.path(), "exit").as_deref(), Some("succeeded"));
    assert_eq!(marker(dir.path(), "failure"), None);
    assert_eq!(marker(dir.path(), "abort"), None);
    assert_eq!(step_names(&run), ["main", "onSuccess", "cleanup"]);
    assert_eq!(step(&run, "onSuccess")["handler"], "success");
    assert_eq!(step(&run, "onSuccess")["status"], "succeeded");
    assert_eq!(step(&run, "cleanup")["handler"], "exit");
    assert_eq!(step(&run, "cleanup")["dag_run_status"], "succeeded");
    assert!(step(&run, "main").get("handler").is_none(), "{run}");
    let exit_started = step(&run, "cleanup")["started_ms"].as_u64().unwrap();
    let success_finished = step(&run, "onSuccess")["finished_ms"].as_u64().unwrap();
    assert!(success_finished <= exit_started, "exit runs after success");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_runs_the_failure_handler_then_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dag("bad", "'false'", dir.path(), "v2", "true");
    let c = Cluster::start(&[("bad.yaml", &yaml)]).await;
    let id = c.submit("bad", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["failed_step"], "main", "{run}");
    assert_eq!(marker(dir.path(), "failure").as_deref(), Some("failed"));
    assert_eq!(marker(dir.path(), "exit").as_deref(), Some("failed"));
    assert_eq!(marker(dir.path(), "success"), None);
    assert_eq!(marker(dir.path(), "abort"), None);
    assert_eq!(step(&run, "onFailure")["handler"], "failure");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_success_handler_fails_the_run_and_exit_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dag("hfail", "'true'", dir.path(), "v1", "exit 3");
    let c = Cluster::start(&[("hfail.yaml", &yaml)]).await;
    let id = c.submit("hfail", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "main")["status"], "succeeded");
    assert_eq!(step(&run, "onSuccess")["status"], "failed");
    assert_eq!(step(&run, "onSuccess")["exit_code"], 3);
    assert_eq!(marker(dir.path(), "exit").as_deref(), Some("succeeded"));
    c.stop().await;
}

async fn stop_a_running_run(style: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dag("long", "sleep 60", dir.path(), style, "true");
    let c = Cluster::start(&[("long.yaml", &yaml)]).await;
    let id = c.submit("long", json!({})).await;
    c.wait_for(&id, "started its step", |r| {
        r["steps"][0]["status"] == "running"
    })
    .await;
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let run = c
        .wait_for(&id, "ended", |r| {
            matches!(
                r["status"].as_str(),
                Some("aborted" | "failed" | "succeeded")
            )
        })
        .await;
    assert_eq!(run["status"], "aborted", "{run}");
    assert_eq!(step(&run, "main")["status"], "aborted");
    assert_eq!(marker(dir.path(), "abort").as_deref(), Some("aborted"));
    assert_eq!(marker(dir.path(), "exit").as_deref(), Some("aborted"));
    assert_eq!(marker(dir.path(), "success"), None);
    assert_eq!(marker(dir.path(), "failure"), None);
    assert_eq!(step(&run, "onCancel")["handler"], "abort");
    assert_eq!(step(&run, "cleanup")["status"], "succeeded");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_runs_the_cancel_handler_then_exit_v1() {
    stop_a_running_run("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_runs_the_abort_handler_then_exit_v2() {
    stop_a_running_run("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_kills_the_exit_handler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "name: stubborn\nsteps:\n  - name: main\n    command: sleep 60\nhandlerOn:\n  exit:\n    \
         command: sh -c 'touch {d}/exit-started; sleep 60; touch {d}/exit-done'\n",
        d = dir.path().display()
    );
    let c = Cluster::start(&[("stubborn.yaml", &yaml)]).await;
    let id = c.submit("stubborn", json!({})).await;
    c.wait_for(&id, "started its step", |r| {
        r["steps"][0]["status"] == "running"
    })
    .await;
    let path = format!("/api/v1/runs/{id}/stop");
    let (code, first) = c.post_to(0, &path, json!({})).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["status"], "running", "the exit handler runs: {first}");
    c.wait_for(&id, "started its exit handler", |r| {
        r["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "onExit" && s["status"] == "running")
        })
    })
    .await;
    let (code, second) = c.post_to(0, &path, json!({})).await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(second["status"], "aborted", "{second}");
    assert_eq!(step(&second, "onExit")["status"], "aborted");
    assert!(dir.path().join("exit-started").exists());
    let (code, _) = c.post_to(0, &path, json!({})).await;
    assert_eq!(code, 409, "a finished run cannot be stopped");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_timeout_runs_the_abort_handler_then_exit_and_the_run_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "timeoutSec: 1\n{}",
        dag("slow", "sleep 60", dir.path(), "v2", "true")
    );
    let c = Cluster::start(&[("slow.yaml", &yaml)]).await;
    let id = c.submit("slow", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "main")["status"], "aborted");
    assert_eq!(marker(dir.path(), "abort").as_deref(), Some("failed"));
    assert_eq!(marker(dir.path(), "exit").as_deref(), Some("failed"));
    assert_eq!(marker(dir.path(), "failure"), None);
    assert_eq!(marker(dir.path(), "success"), None);
    c.stop().await;
}
