//! Reliability end to end, in one process: a dead worker's step is taken back and run again,
//! stop, and the dead-letter view of failed runs. Each test has its own redis-server,
//! coordinator and workers. The process-level chaos tests (kill -9, Redis restarts) are in
//! `tests/it/chaos.rs`.

use crate::common;

use std::time::Duration;

use common::{step, Cluster, Options};
use dagrid_shared::redis::keys::WORKER_GROUP;
use serde_json::json;

const ONE_STEP: &str = "name: one\nsteps:\n  - name: a\n    command: 'true'\n";

/// Starts one worker on the cluster's Redis, as `dagrid worker` would.
fn start_worker(
    c: &Cluster,
    tracker: &tokio_util::task::TaskTracker,
) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let config = dagrid_worker::Config {
        log_dir: c.log_dir.path().to_path_buf(),
        heartbeat_interval: Duration::from_millis(300),
        worker_id: Some(format!("late-{}", uuid::Uuid::new_v4().simple())),
        supervisor_program: Some(env!("CARGO_BIN_EXE_dagrid").into()),
        ..dagrid_worker::Config::default()
    };
    let (r, s) = (c.redis.clone(), stop.clone());
    tracker.spawn(async move { dagrid_worker::run(r, config, s).await.expect("worker runs") });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_claimed_by_a_dead_worker_runs_again_as_a_new_attempt() {
    let c = Cluster::start_with(
        &[("one.yaml", ONE_STEP)],
        Options {
            workers: 0,
            lease_timeout: Some(Duration::from_secs(1)),
            ..Options::default()
        },
    )
    .await;
    let id = c.submit("one", json!({})).await;
    // A "worker" that claims the step and dies at once: it never sends a heartbeat.
    let ready = c.redis.keys().ready(5);
    let mut conn = c.redis.conn().await.unwrap();
    let claimed: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(WORKER_GROUP)
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&ready)
        .arg(">")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(claimed.keys[0].ids.len(), 1, "the ghost holds the step");
    drop(conn);
    // The reaper takes it back once idle past the lease: a new attempt is queued.
    let run = c
        .wait_for(&id, "re-queued the step", |r| step(r, "a")["attempt"] == 2)
        .await;
    assert_eq!(step(&run, "a")["lost"], 1);
    assert_eq!(step(&run, "a")["status"], "queued");
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = start_worker(&c, &tracker);
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "a")["attempt"], 2);
    // The ghost's consumer is gone from the group once it holds nothing (within a lease).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = c.redis.conn().await.unwrap();
        let consumers: Vec<std::collections::BTreeMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&ready)
            .arg(WORKER_GROUP)
            .query_async(&mut *conn)
            .await
            .unwrap();
        let names: Vec<String> = consumers
            .iter()
            .filter_map(|c| match c.get("name") {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        if !names.iter().any(|n| n == "ghost") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ghost consumer stays: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    c.stop().await;
}

/// A worker whose steps are short claims one step ahead of its busy slot. When the step in
/// the slot turns out long, the one claimed ahead is handed back (within 500 ms) and an idle
/// worker runs it, as its first attempt, while the long step still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_claimed_ahead_of_a_long_step_is_handed_back_for_an_idle_worker() {
    let c = Cluster::start_with(
        &[
            ("one.yaml", ONE_STEP),
            (
                "nap.yaml",
                "name: nap\nparams:\n  - SECONDS: \"0\"\nsteps:\n  - name: a\n    command: sleep ${SECONDS}\n",
            ),
        ],
        Options {
            workers: 1,
            concurrency: 1,
            ..Options::default()
        },
    )
    .await;
    // A short step first: from now on the worker claims one step ahead of its slot.
    let first = c.submit("one", json!({})).await;
    assert_eq!(c.wait(&first).await["status"], "succeeded");
    // The long step, then a short one, which the busy worker claims ahead.
    let ids = c
        .submit_batch("nap", &[json!({"SECONDS": "6"}), json!({"SECONDS": "0"})])
        .await
        .expect("batch");
    let (long, short) = (&ids[0], &ids[1]);
    c.wait_for(long, "the long step running", |r| {
        step(r, "a")["status"] == "running"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = start_worker(&c, &tracker);
    let run = c.wait(short).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "a")["attempt"], 1, "{run}");
    assert_eq!(
        c.run(long).await["status"],
        "running",
        "the short step ran while the long one still ran"
    );
    assert_eq!(c.wait(long).await["status"], "succeeded");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_aborts_a_run_removes_its_queued_steps_and_refuses_a_finished_one() {
    let c = Cluster::start_with(
        &[("one.yaml", ONE_STEP)],
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let id = c.submit("one", json!({})).await;
    let ready = c.redis.keys().ready(5);
    let mut conn = c.redis.conn().await.unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg(&ready)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(len, 1, "the step is queued");
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "aborted");
    assert_eq!(step(&body, "a")["status"], "aborted");
    let len: u64 = redis::cmd("XLEN")
        .arg(&ready)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(len, 0, "the queued step is removed");
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_finished");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("aborted"));
    let (code, _) = c
        .post_to(0, "/api/v1/runs/no-such-run/stop", json!({}))
        .await;
    assert_eq!(code, 404);
    let list = c.get_json("/api/v1/runs?status=aborted").await;
    assert_eq!(list["runs"][0]["failed_step"], "a");
    assert_eq!(list["runs"][0]["error"], "stopped on request");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_runs_are_listed_with_the_error_of_the_step_that_failed() {
    let c = Cluster::start(&[(
        "bad.yaml",
        "name: bad\nsteps:\n  - name: ok\n    command: 'true'\n  - name: boom\n    depends: [ok]\n    command: sh -c 'exit 3'\n  - name: after\n    depends: [boom]\n    command: 'true'\n",
    )])
    .await;
    let id = c.submit("bad", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed");
    let list = c.get_json("/api/v1/runs?status=failed").await;
    let failed = &list["runs"][0];
    assert_eq!(failed["id"], id.as_str());
    assert_eq!(failed["failed_step"], "boom");
    assert!(failed["error"].as_str().unwrap().contains('3'), "{failed}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reconciler_requeues_a_step_whose_ready_entry_vanished() {
    let c = Cluster::start_with(
        &[("one.yaml", ONE_STEP)],
        Options {
            workers: 0,
            reconcile_interval: Some(Duration::from_millis(300)),
            ..Options::default()
        },
    )
    .await;
    let id = c.submit("one", json!({})).await;
    // Drift: the step's entry disappears outside any script (as after a lossy failover).
    let ready = c.redis.keys().ready(5);
    let mut conn = c.redis.conn().await.unwrap();
    let () = redis::cmd("DEL")
        .arg(&ready)
        .query_async(&mut *conn)
        .await
        .unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&ready)
        .arg(WORKER_GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let run = c
        .wait_for(&id, "re-queued the step", |r| step(r, "a")["attempt"] == 2)
        .await;
    assert_eq!(step(&run, "a")["status"], "queued");
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = start_worker(&c, &tracker);
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_step_is_retried_after_its_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("count");
    let yaml = format!(
        "name: flaky\nsteps:\n  - name: a\n    command: sh -c 'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]'\n    retryPolicy:\n      limit: 3\n      intervalSec: 1\n",
        c = counter.display()
    );
    let c = Cluster::start(&[("flaky.yaml", &yaml)]).await;
    let id = c.submit("flaky", json!({})).await;
    let waiting = c
        .wait_for(&id, "waited for a retry", |r| {
            step(r, "a")["status"] == "retrying"
        })
        .await;
    assert!(
        step(&waiting, "a")["retry_at_ms"].as_u64().is_some(),
        "{waiting}"
    );
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "a")["attempt"], 3);
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_past_its_dag_timeout_fails_and_its_steps_are_stopped() {
    let c = Cluster::start(&[(
        "slow.yaml",
        "name: slow\ntimeoutSec: 2\nsteps:\n  - name: a\n    command: sleep 30\n  - name: b\n    depends: [a]\n    command: 'true'\n",
    )])
    .await;
    let id = c.submit("slow", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "a")["status"], "aborted");
    assert!(
        run["error"].as_str().unwrap().contains("timeoutSec"),
        "{run}"
    );
    let took = run["finished_ms"].as_u64().unwrap() - run["started_ms"].as_u64().unwrap();
    assert!(
        took < 10_000,
        "the deadline ended the run, not the step: {took} ms"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_a_running_step_signals_its_process_and_aborts_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let yaml = format!(
        "name: long\nmaxCleanUpTimeSec: 1\nsteps:\n  - name: a\n    command: sh -c 'echo $$ > {p}; exec sleep 60'\n",
        p = pid_file.display()
    );
    let c = Cluster::start(&[("long.yaml", &yaml)]).await;
    let id = c.submit("long", json!({})).await;
    c.wait_for(&id, "started its step", |r| {
        step(r, "a")["status"] == "running"
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step never wrote its pid"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "aborted");
    // The worker finds its claim gone at its next lease refresh and stops the process.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "step process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = c.run(&id).await;
    assert_eq!(run["status"], "aborted", "{run}");
    c.stop().await;
}
