//! Manual retry (`POST /api/v1/runs/{id}/retry`, `dagrid retry`) on real workers: a failed run
//! runs its failed step and its downstream again as a new attempt of the same run, succeeded
//! steps are not run again, each attempt's log stays readable; the refusals (active run,
//! unknown run or step, `downstream` without `step`).

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{cluster, dagrid_bin, step, Cluster};
use serde_json::{json, Value};

/// `up` succeeds (output UP), `mid` fails until the file `$DIR/ok` exists, `down` after it.
/// Each step appends a line to `$DIR/<step>` each time it runs.
const FLAKY: &str = r#"name: flaky
params:
  - DIR: none
steps:
  - name: up
    script: |
      echo run >> "$DIR/up"
      echo hello
    output: UP
  - name: mid
    depends: [up]
    script: |
      echo run >> "$DIR/mid"
      echo "mid sees $UP"
      if [ -f "$DIR/ok" ]; then echo ok-now; else echo no-ok-yet; exit 3; fi
  - name: down
    depends: [mid]
    script: |
      echo run >> "$DIR/down"
      echo "down sees $UP"
"#;

fn runs_of(dir: &std::path::Path, step: &str) -> usize {
    std::fs::read_to_string(dir.join(step))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn failed_flaky_run(c: &Cluster, dir: &std::path::Path) -> String {
    let id = c
        .submit("flaky", json!({ "DIR": dir.display().to_string() }))
        .await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "down")["status"], "skipped");
    id
}

async fn log_of(c: &Cluster, id: &str, step: &str, query: &str) -> (u16, String, Option<String>) {
    let r = c
        .http
        .get(c.url(&format!("/api/v1/runs/{id}/steps/{step}/log{query}")))
        .send()
        .await
        .expect("GET log");
    let status = r.status().as_u16();
    let attempt = r
        .headers()
        .get("x-dagrid-log-attempt")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.text().await.unwrap_or_default(), attempt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reruns_the_failed_step_and_its_downstream_keeping_attempts_and_logs() {
    let c = Cluster::start(&[("flaky.yaml", FLAKY)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = failed_flaky_run(&c, dir.path()).await;
    std::fs::write(dir.path().join("ok"), "").expect("ok file");

    let active = c.redis.keys().active("flaky");
    let members = |c: &Cluster| {
        let (redis, key) = (c.redis.clone(), active.clone());
        async move {
            let mut conn = redis.conn().await.expect("redis");
            redis::cmd("SMEMBERS")
                .arg(key)
                .query_async::<Vec<String>>(&mut *conn)
                .await
                .expect("SMEMBERS")
        }
    };
    assert!(members(&c).await.is_empty(), "a failed run is not active");
    let (code, run) = c
        .post_to(0, &format!("/api/v1/runs/{id}/retry"), json!({}))
        .await;
    assert_eq!(code, 200, "{run}");
    let during = members(&c).await;
    if c.run(&id).await["status"] == "running" {
        assert_eq!(
            during,
            std::slice::from_ref(&id),
            "a retried run counts as active again"
        );
    }
    assert!(
        matches!(run["status"].as_str(), Some("running")),
        "the run is active again: {run}"
    );
    assert_eq!(run["finished_ms"], Value::Null);
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["finished_ms"].as_u64().is_some());

    // The succeeded upstream did not run again; the failed step and its downstream did.
    assert_eq!(runs_of(dir.path(), "up"), 1);
    assert_eq!(runs_of(dir.path(), "mid"), 2);
    assert_eq!(runs_of(dir.path(), "down"), 1);
    assert_eq!(step(&run, "up")["attempt"], 1);
    let mid = step(&run, "mid");
    assert_eq!(mid["attempt"], 2);
    assert_eq!(mid["status"], "succeeded");
    let history = mid["history"].as_array().expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["attempt"], 1);
    assert_eq!(history[0]["status"], "failed");
    assert_eq!(history[0]["exit_code"], 3);

    // Both attempts' logs: the current one, and attempt 1 by ?attempt=1; the output of the
    // succeeded upstream reached the retried step.
    let (code, now, attempt) = log_of(&c, &id, "mid", "").await;
    assert_eq!(code, 200);
    assert!(
        now.contains("ok-now") && now.contains("mid sees hello"),
        "{now}"
    );
    assert_eq!(attempt.as_deref(), Some("2"));
    let (code, first, attempt) = log_of(&c, &id, "mid", "?attempt=1").await;
    assert_eq!(code, 200, "{first}");
    assert!(
        first.contains("no-ok-yet") && first.contains("mid sees hello"),
        "{first}"
    );
    assert_eq!(attempt.as_deref(), Some("1"));
    let (code, body, _) = log_of(&c, &id, "mid", "?attempt=7").await;
    assert_eq!(code, 404);
    assert!(body.contains("unknown_attempt"), "{body}");
    let (_, down, _) = log_of(&c, &id, "down", "").await;
    assert!(down.contains("down sees hello"), "{down}");

    // The indexes follow: the run is listed as succeeded, no longer as failed, and its queue
    // holds no active run.
    let failed = c.get_json("/api/v1/runs?status=failed").await;
    assert!(!failed.to_string().contains(&id), "{failed}");
    let ok = c.get_json("/api/v1/runs?status=succeeded").await;
    assert!(ok.to_string().contains(&id), "{ok}");
    assert!(members(&c).await.is_empty(), "it left its queue again");

    // Nothing failed any more: a retry without a step has nothing to do.
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/retry"), json!({}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "nothing_to_retry");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_one_step_and_of_a_step_with_its_downstream() {
    let c = Cluster::start(&[("flaky.yaml", FLAKY)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = failed_flaky_run(&c, dir.path()).await;
    std::fs::write(dir.path().join("ok"), "").expect("ok file");
    let path = format!("/api/v1/runs/{id}/retry");

    // --step mid: only mid runs again; down stays skipped.
    let (code, body) = c.post_to(0, &path, json!({"step": "mid"})).await;
    assert_eq!(code, 200, "{body}");
    let run = c.wait(&id).await;
    assert_eq!(step(&run, "mid")["status"], "succeeded");
    assert_eq!(step(&run, "down")["status"], "skipped");
    assert_eq!(runs_of(dir.path(), "mid"), 2);
    assert_eq!(runs_of(dir.path(), "down"), 0);

    // --step up --downstream: up and everything after it run again, with new attempts.
    let (code, body) = c
        .post_to(0, &path, json!({"step": "up", "downstream": true}))
        .await;
    assert_eq!(code, 200, "{body}");
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(runs_of(dir.path(), "up"), 2);
    assert_eq!(runs_of(dir.path(), "mid"), 3);
    assert_eq!(runs_of(dir.path(), "down"), 1);
    assert_eq!(step(&run, "up")["attempt"], 2);
    assert_eq!(step(&run, "mid")["attempt"], 3);
    let attempts: Vec<u64> = step(&run, "mid")["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, [1, 2]);

    // Refusals: unknown step (404 listing the steps), unknown run, downstream without step,
    // a step whose dependency did not succeed, an unknown field.
    let (code, body) = c.post_to(0, &path, json!({"step": "nope"})).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_step");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"nope\"") && msg.contains("up, mid, down"),
        "{msg}"
    );
    let (code, body) = c
        .post_to(0, "/api/v1/runs/no-such-run/retry", json!({}))
        .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (404, Some("unknown_run"))
    );
    let (code, body) = c.post_to(0, &path, json!({"downstream": true})).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_retry");
    assert_eq!(body["error"]["details"][0]["field"], "downstream");
    let (code, body) = c.post_to(0, &path, json!({"stpe": "mid"})).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_run_is_refused_and_a_stopped_run_can_be_retried() {
    let dag = "name: slow\nsteps:\n  - name: a\n    command: sleep 2\n  - name: b\n    depends: [a]\n    command: echo b\n";
    let c = Cluster::start(&[("slow.yaml", dag)]).await;
    let id = c.submit("slow", json!({})).await;
    c.wait_for(&id, "started", |r| step(r, "a")["status"] == "running")
        .await;
    let path = format!("/api/v1/runs/{id}/retry");
    let (code, body) = c.post_to(0, &path, json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_active");
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    c.wait_for(&id, "aborted", |r| r["status"] == "aborted")
        .await;
    // The aborted steps (the one that ran and the one that never did) run again.
    let (code, body) = c.post_to(0, &path, json!({})).await;
    assert_eq!(code, 200, "{body}");
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "a")["attempt"], 2);
    assert_eq!(step(&run, "a")["history"][0]["status"], "aborted");
    assert_eq!(
        step(&run, "b")["attempt"],
        1,
        "b never ran before: no earlier attempt"
    );
    c.stop().await;
}

/// `dagrid <args>` to its end: exit code, stdout, stderr.
async fn dagrid(args: &[&str]) -> (i32, String, String) {
    let child = tokio::process::Command::new(dagrid_bin())
        .args(args)
        .env_remove("DAGRID_LOG_FORMAT")
        .env_remove("DAGRID_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dagrid");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("dagrid exits")
        .expect("dagrid output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_retries_on_another_worker_and_shows_every_attempt() {
    let dag = FLAKY.replace("  - DIR: none", "  - DIR: \"@MARKS@\"");
    let mut c = cluster::Cluster::start(
        &[("flaky.yaml", dag)],
        cluster::Settings {
            workers: 1,
            concurrency: 1,
            ..Default::default()
        },
    )
    .await;
    let resp: Value = c
        .http
        .post(format!("{}/api/v1/runs", c.api))
        .json(&json!({"dag": "flaky"}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("JSON");
    let id = resp["id"].as_str().expect("id").to_string();
    let get = |c: &cluster::Cluster| {
        let (http, url) = (c.http.clone(), format!("{}/api/v1/runs/{id}", c.api));
        async move {
            http.get(url)
                .send()
                .await
                .expect("GET")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut run = get(&c).await;
    while run["status"] != "failed" {
        assert!(std::time::Instant::now() < deadline, "never failed: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        run = get(&c).await;
    }
    let first_worker = step(&run, "mid")["worker"]
        .as_str()
        .expect("worker")
        .to_string();
    // The worker of the first attempt goes away; a new one takes the retry.
    c.kill_worker(0);
    c.start_worker().await;
    std::fs::write(c.marks().join("ok"), "").expect("ok file");
    let server = c.api.clone();
    let (code, out, err) = dagrid(&["retry", &id, "--server", &server]).await;
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.starts_with(&id), "{out}");
    assert!(err.contains("step mid runs again as attempt 2"), "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut run = get(&c).await;
    while run["status"] != "succeeded" {
        assert!(
            std::time::Instant::now() < deadline,
            "never succeeded: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        run = get(&c).await;
    }
    let mid = step(&run, "mid");
    assert_eq!(mid["history"][0]["worker"], first_worker.as_str());
    assert_ne!(mid["worker"], first_worker.as_str(), "{run}");
    assert_eq!(runs_of(&c.marks(), "up"), 1);

    let (code, out, err) = dagrid(&["status", &id, "--server", &server]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("EARLIER ATTEMPTS"), "{out}");
    let earlier = out
        .lines()
        .find(|l| l.starts_with("mid ") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no earlier attempt of mid in:\n{out}"));
    assert!(earlier.contains(&first_worker), "{earlier}");
    let (code, out, err) =
        dagrid(&["logs", &id, "mid", "--attempt", "1", "--server", &server]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no-ok-yet"), "{out}");
    let (code, out, _) = dagrid(&["logs", &id, "mid", "--server", &server]).await;
    assert_eq!(code, 0);
    assert!(out.contains("ok-now"), "{out}");

    let (code, _, err) = dagrid(&["retry", &id, "--step", "nope", "--server", &server]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no step \"nope\""), "{err}");
    let (code, _, err) = dagrid(&["retry", &id, "--downstream", "--server", &server]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--step"), "{err}");
}

const DIAMOND: &str = r#"name: diamond
params:
  - NAME: world
env:
  - GREETING: hello ${NAME}
steps:
  - name: a
    command: echo ${GREETING}
    output: A
  - name: b
    depends: [a]
    command: echo b got ${A}
  - name: c
    depends: [a]
    script: |
      echo c for $NAME
  - name: d
    depends: [b, c]
    command: touch /nonexistent-dir/never-written
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_prints_the_plan_of_a_file_without_a_coordinator_and_of_a_registered_dag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("diamond.yaml");
    std::fs::write(&file, DIAMOND).expect("write DAG");
    let path = file.display().to_string();
    // No coordinator listens on port 9: the file is planned locally.
    let (code, out, err) = dagrid(&[
        "dry",
        &path,
        "--param",
        "NAME=dagrid",
        "--server",
        "http://127.0.0.1:9",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 step(s) in 3 level(s)"), "{out}");
    assert!(out.contains("level 2: b, c  (in parallel)"), "{out}");
    assert!(
        out.contains("command  echo hello dagrid   (run directly)"),
        "{out}"
    );
    assert!(out.contains("command  echo b got ${A}"), "{out}");
    assert!(out.contains("| echo c for dagrid"), "{out}");
    let (code, _, err) = dagrid(&["dry", &path, "--param", "NOPE=1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("NOPE"), "{err}");

    // A registered DAG by name: its source from the coordinator; nothing runs.
    let c = Cluster::start(&[("diamond.yaml", DIAMOND)]).await;
    let (code, out, err) = dagrid(&["dry", "diamond", "--server", &c.api]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("command  echo hello world"), "{out}");
    let runs = c.get_json("/api/v1/runs").await;
    assert_eq!(runs["runs"], json!([]), "a dry run creates no run");
    let (code, _, err) = dagrid(&["dry", "no-such-dag", "--server", &c.api]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no-such-dag"), "{err}");
    c.stop().await;
}

/// `--ignore-preconditions`: a step skipped by its own precondition is retried with `--step`;
/// without the flag the precondition is checked again and it is skipped again; with it the step
/// runs, and its dependant (skipped before) is queued once it succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_can_ignore_the_steps_preconditions() {
    let dag = r#"name: gated
params:
  - DIR: none
steps:
  - name: gate
    command: touch "$DIR/gate-ran"
    preconditions:
      - condition: test -f "$DIR/go"
  - name: after
    depends: [gate]
    continueOn:
      skipped: true
    command: touch "$DIR/after-ran"
"#;
    let c = Cluster::start(&[("gated.yaml", dag)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = c
        .submit("gated", json!({ "DIR": dir.path().display().to_string() }))
        .await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "gate")["status"], "skipped", "{run}");
    assert!(!dir.path().join("gate-ran").exists());
    let path = format!("/api/v1/runs/{id}/retry");

    // Without the flag: checked again, skipped again.
    let (code, body) = c.post_to(0, &path, json!({ "step": "gate" })).await;
    assert_eq!(code, 200, "{body}");
    let run = c.wait(&id).await;
    assert_eq!(step(&run, "gate")["status"], "skipped", "{run}");
    assert_eq!(step(&run, "gate")["attempt"], 2, "{run}");
    assert!(!dir.path().join("gate-ran").exists());

    // With it: the step runs although its precondition still does not hold.
    let (code, body) = c
        .post_to(
            0,
            &path,
            json!({ "step": "gate", "ignore_preconditions": true }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "gate")["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "gate")["attempt"], 3, "{run}");
    assert!(dir.path().join("gate-ran").exists());
    let history = step(&run, "gate")["history"]
        .as_array()
        .expect("history")
        .len();
    assert_eq!(history, 2, "both skipped attempts are kept: {run}");
    c.stop().await;
}
