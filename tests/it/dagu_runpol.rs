//! Dagu's run-level keys end to end, on a real cluster and a real redis-server: a DAG
//! `retry_policy` retrying a failed run, `delay_sec`, `schedule.stop` and `schedule.restart`
//! acting on running runs, one-off `at` entries, `overlapPolicy: latest` and
//! `skip_if_successful`. Schedules use the 6-field form with seconds so the tests finish in
//! seconds.

use crate::common;

use std::time::Duration;

use common::{step, Cluster, Options};
use serde_json::{json, Value};

fn now_ms() -> u64 {
    dagrid_shared::model::now_ms()
}

fn two_coordinators() -> Options {
    Options {
        coordinators: 2,
        ..Options::default()
    }
}

/// The runs of a DAG, oldest first, each read in full.
async fn runs_of(c: &Cluster, dag: &str) -> Vec<Value> {
    let mut ids: Vec<String> = c
        .get_json(&format!("/api/v1/runs?dag={dag}&limit=1000"))
        .await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    ids.reverse();
    let mut out = Vec::new();
    for id in ids {
        out.push(c.run(&id).await);
    }
    out
}

/// Registers a DAG through the API.
async fn register(c: &Cluster, yaml: &str) {
    let resp = c
        .http
        .post(c.url("/api/v1/dags"))
        .body(yaml.to_string())
        .send()
        .await
        .expect("register");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_policy_retries_a_failed_run_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("tries");
    let yaml = format!(
        "name: flaky\ntype: graph\nretry_policy:\n  limit: 3\n  interval_sec: 1\nsteps:\n  - name: prepare\n    command: echo ready\n  - name: load\n    depends: [prepare]\n    script: |\n      n=$(cat {p} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {p}; [ $n -ge 3 ]\n",
        p = count.display()
    );
    let c = Cluster::start(&[("flaky.yaml", &yaml)]).await;
    let id = c.submit("flaky", json!({})).await;
    // Between two tries the run is failed, with its next retry due.
    let failed = c
        .wait_for(&id, "waited for a retry", |r| {
            r["status"] == "failed" && r["retry_at_ms"].is_u64()
        })
        .await;
    let due = failed["retry_at_ms"].as_u64().unwrap();
    let finished = failed["finished_ms"].as_u64().unwrap();
    assert!(
        (900..=1_500).contains(&due.saturating_sub(finished)),
        "interval_sec 1: {failed}"
    );
    let run = c
        .wait_for(&id, "succeeded", |r| r["status"] == "succeeded")
        .await;
    assert_eq!(run["auto_retries"], 2, "{run}");
    assert!(run["retry_at_ms"].is_null(), "{run}");
    assert_eq!(step(&run, "load")["attempt"], 3, "{run}");
    assert_eq!(
        step(&run, "prepare")["attempt"],
        1,
        "a succeeded step is not run again: {run}"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
    // Each retry shows in the run's events: failed, then running again.
    let mut conn = c.redis.conn().await.expect("conn");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(c.redis.keys().events())
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .expect("XRANGE");
    // Each entry's events (a step's change may carry its run's), as the API reads them.
    let statuses: Vec<String> = entries
        .ids
        .iter()
        .flat_map(|e| {
            let fields: Vec<(String, Vec<u8>)> = e
                .map
                .iter()
                .filter_map(|(k, v)| match v {
                    redis::Value::BulkString(b) => Some((k.clone(), b.clone())),
                    _ => None,
                })
                .collect();
            dagrid_shared::model::Event::from_entry(
                fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )
        })
        .filter(|e| e.run == id && e.step.is_none())
        .map(|e| e.status)
        .collect();
    let retried = statuses
        .windows(2)
        .filter(|w| w == &["failed", "running"])
        .count();
    assert_eq!(retried, 2, "run events: {statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("succeeded"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_policy_stops_at_its_limit() {
    let c = Cluster::start(&[(
        "broken.yaml",
        "name: broken\nretryPolicy:\n  limit: 2\n  intervalSec: 1\nsteps:\n  - name: a\n    command: \"false\"\n",
    )])
    .await;
    let id = c.submit("broken", json!({})).await;
    let run = c
        .wait_for(&id, "used up its retries", |r| {
            r["status"] == "failed" && r["auto_retries"] == 2 && r["retry_at_ms"].is_null()
        })
        .await;
    assert_eq!(step(&run, "a")["attempt"], 3, "{run}");
    // No further retry is parked: the run stays failed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = c.run(&id).await;
    assert_eq!(later["status"], "failed");
    assert_eq!(later["auto_retries"], 2);
    c.stop().await;
}

/// A stop of a failed run waiting for its automatic retry cancels the retry: the run stays
/// failed and is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_cancels_a_pending_run_retry() {
    let c = Cluster::start(&[(
        "patient.yaml",
        "name: patient\nretryPolicy:\n  limit: 2\n  intervalSec: 2\nsteps:\n  - name: a\n    command: \"false\"\n",
    )])
    .await;
    let id = c.submit("patient", json!({})).await;
    c.wait_for(&id, "a retry is pending", |r| {
        r["status"] == "failed" && r["retry_at_ms"].is_u64()
    })
    .await;
    let (code, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/stop"), json!({}))
        .await;
    assert!(code < 300, "{code} {body}");
    let run = c.run(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["retry_at_ms"].is_null(), "{run}");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let later = c.run(&id).await;
    assert_eq!(later["status"], "failed", "{later}");
    assert_eq!(later["auto_retries"].as_u64().unwrap_or(0), 0, "{later}");
    assert_eq!(step(&later, "a")["attempt"], 1, "{later}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delay_sec_delays_the_first_step() {
    let c = Cluster::start(&[(
        "later.yaml",
        "name: later\ndelay_sec: 2\nsteps:\n  - name: a\n    command: \"true\"\n",
    )])
    .await;
    let id = c.submit("later", json!({})).await;
    let queued = c.run(&id).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert!(
        queued["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("delayed until")),
        "{queued}"
    );
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let waited =
        step(&run, "a")["started_ms"].as_u64().unwrap() - run["created_ms"].as_u64().unwrap();
    assert!(
        (2_000..6_000).contains(&waited),
        "delay_sec 2: first step after {waited} ms"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_stop_aborts_a_running_run() {
    let c = Cluster::start_with(
        &[(
            "shift.yaml",
            "name: shift\nschedule:\n  stop: '*/2 * * * * *'\nsteps:\n  - name: work\n    command: sleep 30\n",
        )],
        two_coordinators(),
    )
    .await;
    // Submitted just after a stop slot, so that it starts before the next one.
    tokio::time::sleep(Duration::from_millis(2_100 - now_ms() % 2_000)).await;
    let id = c.submit("shift", json!({})).await;
    c.wait_for(&id, "started", |r| step(r, "work")["status"] == "running")
        .await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "aborted", "{run}");
    assert!(
        step(&run, "work")["error"]
            .as_str()
            .is_some_and(|e| e.contains("schedule.stop")),
        "{run}"
    );
    let waited = run["finished_ms"].as_u64().unwrap() - run["created_ms"].as_u64().unwrap();
    assert!(waited < 5_000, "stopped after {waited} ms: {run}");
    // A stop slot starts nothing.
    assert_eq!(runs_of(&c, "shift").await.len(), 1);
    c.stop().await;
}

/// A `schedule.stop` slot also cancels the automatic retry a failed run of the DAG waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_stop_cancels_a_pending_run_retry() {
    // The stop schedule comes with a second version of the DAG, registered once the retry is
    // seen pending: a stop slot firing between the failure and the first look would cancel
    // the retry before the test could see it.
    let dag = "name: shift\nretryPolicy:\n  limit: 2\n  intervalSec: 30\nsteps:\n  - name: work\n    command: \"false\"\n";
    let c = Cluster::start_with(&[("shift.yaml", dag)], two_coordinators()).await;
    let id = c.submit("shift", json!({})).await;
    c.wait_for(&id, "a retry is pending", |r| {
        r["status"] == "failed" && r["retry_at_ms"].is_u64()
    })
    .await;
    register(
        &c,
        &dag.replace("steps:", "schedule:\n  stop: '*/2 * * * * *'\nsteps:"),
    )
    .await;
    c.wait_for(&id, "the stop slot cancelled the retry", |r| {
        r["retry_at_ms"].is_null()
    })
    .await;
    let run = c.run(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["auto_retries"].as_u64().unwrap_or(0), 0, "{run}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_restart_stops_the_run_and_starts_one_new_run_after_the_wait() {
    let c = Cluster::start_with(
        &[(
            "svc.yaml",
            "name: svc\nrestart_wait_sec: 1\nschedule:\n  restart: '*/4 * * * * *'\nsteps:\n  - name: serve\n    command: sleep 30\n",
        )],
        two_coordinators(),
    )
    .await;
    let first = c.submit("svc", json!({})).await;
    let stopped = c.wait(&first).await;
    assert_eq!(stopped["status"], "aborted", "{stopped}");
    assert!(
        step(&stopped, "serve")["error"]
            .as_str()
            .is_some_and(|e| e.contains("schedule.restart")),
        "{stopped}"
    );
    // The restarted run: one per slot however many coordinators, its step after the wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let restarted = loop {
        let runs = runs_of(&c, "svc").await;
        let started: Vec<&Value> = runs
            .iter()
            .filter(|r| r["trigger"] == "schedule" && step(r, "serve")["started_ms"].is_u64())
            .collect();
        if let Some(r) = started.first() {
            break (*r).clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restart: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let slot = restarted["schedule_slot_ms"].as_u64().unwrap();
    let started = step(&restarted, "serve")["started_ms"].as_u64().unwrap();
    assert!(started >= slot + 1_000, "restart_wait_sec 1: {restarted}");
    let same_slot = runs_of(&c, "svc")
        .await
        .iter()
        .filter(|r| r["schedule_slot_ms"] == slot)
        .count();
    assert_eq!(same_slot, 1, "one new run per restart slot");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_off_at_entry_fires_once() {
    let c = Cluster::start_with(&[], two_coordinators()).await;
    // Two seconds from now, whole seconds, in a zone with an offset.
    let at = (now_ms() / 1_000 + 3) * 1_000;
    let text = chrono::DateTime::from_timestamp_millis(at as i64)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .to_rfc3339();
    register(
        &c,
        &format!(
            "name: once\nschedule:\n  - at: '{text}'\nsteps:\n  - name: a\n    command: \"true\"\n"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let runs = runs_of(&c, "once").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["schedule_slot_ms"], at, "{runs:?}");
    assert_eq!(runs[0]["trigger"], "schedule");
    c.stop().await;
}

/// Registers `report` (`overlapPolicy: latest`, a slot every 4 s, a 5 s step, plus `extra`
/// keys) as if it had fired just now, so its first slot fires on time and not as a late
/// catch-up, and returns its runs once there are two.
async fn first_two_scheduled_runs(c: &Cluster, extra: &str) -> Vec<Value> {
    let mut conn = c.redis.conn().await.expect("conn");
    redis::cmd("HSET")
        .arg(c.redis.keys().schedule_state())
        .arg("report")
        .arg(now_ms())
        .query_async::<()>(&mut *conn)
        .await
        .expect("HSET");
    drop(conn);
    register(
        c,
        &format!("name: report\noverlap_policy: latest\n{extra}schedule: '*/4 * * * * *'\nsteps:\n  - name: a\n    command: sleep 5\n"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let runs = runs_of(c, "report").await;
        if runs.len() >= 2 {
            return runs;
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_latest_fires_the_pending_slot_once_the_previous_run_ends() {
    let c = Cluster::start_with(&[], two_coordinators()).await;
    // As if the DAG had fired just now: its first slot fires on time, not as a late catch-up
    // of the last 5 s, so each run ends 1 to 3 s before the next slot and a pass sees the
    // pending one first.
    let runs = first_two_scheduled_runs(&c, "").await;
    let first = c.wait(runs[0]["id"].as_str().unwrap()).await;
    let second = c.wait(runs[1]["id"].as_str().unwrap()).await;
    let finished = first["finished_ms"].as_u64().unwrap();
    let slot = second["schedule_slot_ms"].as_u64().unwrap();
    let created = second["created_ms"].as_u64().unwrap();
    let started = step(&second, "a")["started_ms"].as_u64().unwrap();
    eprintln!(
        "overlapPolicy latest: first run finished {finished}, second run slot {slot} created {created} started {started}"
    );
    // No overlap: the second run's step started after the first run ended. (Its `created_ms`
    // is stamped when the submit call is built, so it can read a few ms before the first
    // run's end when that end lands between the build and the script, which then finds the
    // dedup key free: it was once 2 ms before.)
    assert!(
        started >= finished,
        "scheduled runs overlapped: {first} {second}"
    );
    assert!(
        created + 1_000 >= finished,
        "the pending slot fired late: {first} {second}"
    );
    // The slot that came while the first run ran waited, then fired (skip would drop it).
    assert!(
        slot < finished,
        "the second run is not a pending slot: {runs:?}"
    );
    assert!(
        slot > first["schedule_slot_ms"].as_u64().unwrap(),
        "{runs:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_latest_slot_is_skipped_when_the_run_it_waited_for_succeeded() {
    let c = Cluster::start_with(&[], two_coordinators()).await;
    // As in the test above: slot S1 fires on time; S2 comes while its 5 s run runs and
    // waits. The run succeeds, so with skip_if_successful S2 is dropped (the DAG succeeded
    // since S2's previous slot) and the next run is S3's, fired on time.
    let runs = first_two_scheduled_runs(&c, "skip_if_successful: true\n").await;
    let first = c.wait(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let finished = first["finished_ms"].as_u64().unwrap();
    let slot = runs[1]["schedule_slot_ms"].as_u64().unwrap();
    eprintln!("latest + skip_if_successful: first run finished {finished}, next slot {slot}");
    assert!(
        slot > finished,
        "the slot that waited for a successful run fired anyway: {runs:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_latest_replaces_a_queued_scheduled_run() {
    // Every scheduled run waits 3 s (delay_sec) and a slot comes every 2 s: each new slot
    // replaces the run still queued for the slot before.
    let c = Cluster::start_with(
        &[(
            "digest.yaml",
            "name: digest
overlap_policy: latest
delay_sec: 3
schedule: '*/2 * * * * *'
steps:
  - name: a
    command: \"true\"
",
        )],
        two_coordinators(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    // Read midway between two slots (they fire at even seconds), never while a new slot is
    // replacing the newest run (aborted first, then submitted again).
    let now = dagrid_shared::model::now_ms();
    tokio::time::sleep(Duration::from_millis((3_000 - now % 2_000) % 2_000)).await;
    let runs = runs_of(&c, "digest").await;
    let slots: Vec<u64> = runs
        .iter()
        .filter_map(|r| r["schedule_slot_ms"].as_u64())
        .collect();
    eprintln!("overlapPolicy latest with delay_sec 3, every 2 s: slots {slots:?}");
    assert!(runs.len() >= 2, "{runs:?}");
    let (older, newest) = runs.split_at(runs.len() - 1);
    for r in older {
        assert_eq!(r["status"], "aborted", "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("superseded by the newer cron slot")),
            "{r}"
        );
    }
    assert_eq!(newest[0]["status"], "queued", "{runs:?}");
    let distinct: std::collections::BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_if_successful_skips_the_slot_after_a_success() {
    let c = Cluster::start(&[(
        "nightly.yaml",
        "name: nightly\nskip_if_successful: true\nschedule: '*/2 * * * * *'\nsteps:\n  - name: a\n    command: \"true\"\n",
    )])
    .await;
    tokio::time::sleep(Duration::from_millis(9_000)).await;
    let slots: Vec<u64> = runs_of(&c, "nightly")
        .await
        .iter()
        .filter_map(|r| r["schedule_slot_ms"].as_u64())
        .collect();
    eprintln!("skip_if_successful, every 2 s, 9 s: slots {slots:?}");
    assert!(slots.len() >= 2, "{slots:?}");
    // Each success covers the next slot (Dagu: it succeeded since the previous scheduled
    // time), so two neighbouring slots never both fire (without the key: every 2 s). A slot
    // that meets a run still active is dropped by overlapPolicy skip, so a loaded machine may
    // show a longer gap.
    for w in slots.windows(2) {
        assert!(w[1] - w[0] >= 4_000, "{slots:?}");
    }
    // A manual run is never skipped.
    let id = c.submit("nightly", json!({})).await;
    assert_eq!(c.wait(&id).await["status"], "succeeded");
    c.stop().await;
}
