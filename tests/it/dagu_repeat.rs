//! Dagu's step `repeatPolicy` and DAG `maxOutputSize` on a real cluster: what the
//! `examples/dagu/repeat-*.yaml` table cannot say (each execution's record in the step's
//! history, the wait as a `retrying` step with its due time, a stop during the wait, the
//! condition reading the step's own output, the error of an output over the limit).

use crate::common;

use common::{step, Cluster};
use serde_json::{json, Value};

/// Counts its executions in `$WORKDIR/n` and prints the count into `N`; repeats until its own
/// output is 3, one second apart.
const UNTIL_OWN_OUTPUT: &str = r#"
name: until_own_output
params:
  - WORKDIR: /tmp
steps:
  - name: count
    script: |
      n=$(cat "$WORKDIR/n" 2>/dev/null || echo 0)
      n=$((n + 1))
      echo "$n" > "$WORKDIR/n"
      echo "$n"
    output: N
    repeat_policy:
      repeat: until
      condition: "$N"
      expected: "3"
      interval_sec: 1
"#;

/// Creates `$WORKDIR/done` on its second execution; repeats until that file exists (a command
/// check, no `expected`).
const UNTIL_COMMAND: &str = r#"
name: until_command
params:
  - WORKDIR: /tmp
steps:
  - name: make
    script: |
      if [ -f "$WORKDIR/first" ]; then touch "$WORKDIR/done"; else touch "$WORKDIR/first"; fi
    repeatPolicy:
      repeat: until
      condition: test -f "$WORKDIR/done"
"#;

/// Repeats for ever, a minute apart.
const FOREVER: &str = r#"
name: forever
steps:
  - name: tick
    command: echo tick
    repeat_policy:
      repeat: true
      interval_sec: 60
"#;

const BIG_OUTPUT: &str = r#"
name: big_output
max_output_size: 64
steps:
  - name: big
    command: sh -c 'head -c 100 /dev/zero | tr "\0" x'
    output: BIG
"#;

fn workdir(dir: &tempfile::TempDir) -> Value {
    json!({ "WORKDIR": dir.path().display().to_string() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_execution_is_an_attempt_in_the_history_and_the_wait_is_kept() {
    let c = Cluster::start(&[
        ("until_own_output.yaml", UNTIL_OWN_OUTPUT),
        ("until_command.yaml", UNTIL_COMMAND),
    ])
    .await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let own = c.submit("until_own_output", workdir(&d1)).await;
    let cmd = c.submit("until_command", workdir(&d2)).await;

    // Between executions the step waits as `retrying`, with the due time of the next one.
    let mid = c
        .wait_for(&own, "waited to repeat", |r| {
            step(r, "count")["status"] == "retrying"
        })
        .await;
    let count = step(&mid, "count");
    assert!(count["retry_at_ms"].as_u64().is_some(), "{count}");
    assert_eq!(mid["status"], "running");

    let run = c.wait(&own).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let count = step(&run, "count");
    assert_eq!(count["attempt"], 3, "{count}");
    assert_eq!(
        count["output"][1], "3",
        "the check read the step's own output"
    );
    assert_eq!(count["repeats"], 2, "{count}");
    let history = count["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{count}");
    for (i, h) in history.iter().enumerate() {
        assert_eq!(h["attempt"], i + 1);
        assert_eq!(h["status"], "succeeded");
        assert_eq!(h["exit_code"], 0);
    }
    // intervalSec: 1 without backoff: each execution starts a second after the previous one
    // ended (a loose bound: the timer loop wakes at least once a second).
    let starts: Vec<u64> = history
        .iter()
        .chain([count])
        .map(|h| h["started_ms"].as_u64().unwrap())
        .collect();
    let ends: Vec<u64> = history
        .iter()
        .map(|h| h["finished_ms"].as_u64().unwrap())
        .collect();
    for i in 0..2 {
        let gap = starts[i + 1].saturating_sub(ends[i]);
        assert!((900..10_000).contains(&gap), "wait {i}: {gap} ms");
    }

    let run = c.wait(&cmd).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "make")["attempt"], 2, "{run}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_wait_aborts_the_step_and_nothing_runs_again() {
    let c = Cluster::start(&[("forever.yaml", FOREVER)]).await;
    let id = c.submit("forever", json!({})).await;
    c.wait_for(&id, "waited to repeat", |r| {
        step(r, "tick")["status"] == "retrying"
    })
    .await;
    let (status, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "aborted", "{run}");
    let tick = step(&run, "tick");
    assert_eq!(tick["status"], "aborted");
    assert_eq!(
        tick["attempt"], 2,
        "the waiting repetition, never started: {tick}"
    );
    assert!(tick["started_ms"].is_null(), "{tick}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_max_output_size_fails_with_daguss_message() {
    let c = Cluster::start(&[("big_output.yaml", BIG_OUTPUT)]).await;
    let id = c.submit("big_output", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let big = step(&run, "big");
    assert_eq!(big["status"], "failed");
    assert_eq!(big["exit_code"], 0);
    let error = big["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("output exceeded maximum size limit of 64 bytes"),
        "{error}"
    );
    assert!(big["output"].is_null(), "{big}");
    c.stop().await;
}
