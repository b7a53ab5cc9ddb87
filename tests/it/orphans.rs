//! No step process outlives its worker: real `dagrid worker` processes killed with `kill -9`
//! while their steps run shells whose children and grandchildren do the step's work, and the
//! worker's step supervisor killed with `kill -9` under a running step.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::dags::MARKS;
use common::os::{group_running, lines_of, pid_running, send_signal, step_processes_of};
use common::step;
use serde_json::json;

/// How long each step's work takes before it writes its marker line (s).
const WORK_S: u64 = 2;

/// `command:` through the shell: the leader runs an inner `sh -c` (not exec'd: `; true`
/// follows), whose `sleep` then `echo` are the step's work, two levels below the leader.
fn command_dag() -> String {
    format!(
        r#"name: cmd
dedup: none
env:
  - MARKS: "{MARKS}"
steps:
  - name: work
    command: echo $$ >> "$MARKS/$DAG_RUN_ID.pgids"; sh -c 'sleep {WORK_S}; echo late >> "$MARKS/$DAG_RUN_ID"'; true
"#
    )
}

/// `script:`: the work in a background subshell, another grandchild sleeping longer (in the
/// first attempt only, so the retry ends soon), and the script waiting for both.
fn script_dag() -> String {
    format!(
        r#"name: scr
dedup: none
env:
  - MARKS: "{MARKS}"
steps:
  - name: work
    script: |
      echo $$ >> "$MARKS/$DAG_RUN_ID.pgids"
      (sleep {WORK_S}; echo late >> "$MARKS/$DAG_RUN_ID") &
      if [ "$(wc -l < "$MARKS/$DAG_RUN_ID.pgids")" -eq 1 ]; then sleep 30 & fi
      wait
"#
    )
}

/// A step that runs long and records its process group, with no retry; and a child that
/// leaves the step's group for one of its own (perl's `setpgrp`), recording its pid.
fn long_dag() -> String {
    format!(
        r#"name: long
dedup: none
env:
  - MARKS: "{MARKS}"
steps:
  - name: work
    script: |
      perl -e 'setpgrp; exec "sleep", "30"' &
      echo $! >> "$MARKS/$DAG_RUN_ID.escaped"
      echo $$ >> "$MARKS/$DAG_RUN_ID.pgids"
      sleep 30 &
      wait
      echo late >> "$MARKS/$DAG_RUN_ID"
"#
    )
}

/// A short step that records its blocked signals (the supervisor blocks SIGCHLD for itself).
fn quick_dag() -> String {
    format!(
        r#"name: quick
dedup: none
env:
  - MARKS: "{MARKS}"
steps:
  - name: work
    command: grep SigBlk /proc/self/status > "$MARKS/$DAG_RUN_ID.sig"
"#
    )
}

/// The process groups the attempts of a run's step recorded, in order.
fn pgids(c: &Cluster, run: &str) -> Vec<u32> {
    lines_of(&c.marks().join(format!("{run}.pgids")))
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until each run's step recorded its first process group.
async fn wait_started(c: &Cluster, runs: &[&str]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let groups: Vec<Option<u32>> = runs.iter().map(|r| pgids(c, r).first().copied()).collect();
        if groups.iter().all(Option::is_some) {
            return groups.into_iter().flatten().collect();
        }
        assert!(Instant::now() < deadline, "the steps never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 2 s: SIGKILLed processes take a moment to go) until no process of `pgid`
/// runs; panics naming the survivors.
async fn assert_group_gone(pgid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = group_running(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes {left:?} of the step's group {pgid} outlived it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 2 s) until process `pid` no longer runs; panics with `what` if it does.
async fn assert_pid_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while pid_running(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`, after the command's `)`).
fn pgrp_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok()
}

/// The worker's step supervisor: its child running `dagrid __step-supervisor`.
fn supervisor_of(worker: u32) -> Option<u32> {
    step_processes_of(worker).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_kills_its_steps_grandchildren_and_each_step_completes_once() {
    let mut c = Cluster::start(
        &[("cmd.yaml", command_dag()), ("scr.yaml", script_dag())],
        Settings {
            workers: 1,
            lease_timeout: Some(Duration::from_secs(2)),
            ..Settings::default()
        },
    )
    .await;
    let cmd = c.submit("cmd", json!({})).await;
    let scr = c.submit("scr", json!({})).await;
    let groups = wait_started(&c, &[&cmd, &scr]).await;
    let worker = c.workers[0].pid;
    let supervisor = supervisor_of(worker).expect("the worker runs a step supervisor");
    // Its own process group: a signal to the worker's whole group must not kill it too.
    assert_eq!(
        pgrp_of(supervisor),
        Some(supervisor),
        "the supervisor leads its own group"
    );
    assert_ne!(pgrp_of(worker), Some(supervisor));
    for &g in &groups {
        assert!(!group_running(g).is_empty(), "the step runs");
    }

    c.kill_worker(0);
    for (&g, what) in groups.iter().zip(["command step", "script step"]) {
        assert_group_gone(g, what).await;
    }
    assert_pid_gone(supervisor, "the supervisor outlived its worker").await;

    // A second worker runs the steps again; each side effect happens once.
    c.start_worker().await;
    for id in [&cmd, &scr] {
        let run = c.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(pgids(&c, id).len(), 2, "two attempts: {run}");
    }
    // Longer than the work of an attempt-1 orphan would take.
    tokio::time::sleep(Duration::from_secs(WORK_S) + Duration::from_millis(500)).await;
    for id in [&cmd, &scr] {
        assert_eq!(
            c.marker(id),
            ["late"],
            "run {id}: the step's work must have run to its end exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_supervisor_kills_and_fails_its_steps_and_the_worker_goes_on() {
    let mut c = Cluster::start(
        &[("long.yaml", long_dag()), ("quick.yaml", quick_dag())],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let id = c.submit("long", json!({})).await;
    let group = wait_started(&c, &[&id]).await[0];
    let worker = c.workers[0].pid;
    let supervisor = supervisor_of(worker).expect("the worker runs a step supervisor");

    let escaped: u32 = lines_of(&c.marks().join(format!("{id}.escaped")))[0]
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pgrp_of(escaped) == Some(group) {
        assert!(Instant::now() < deadline, "it never left the step's group");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pid_running(escaped), "it runs in a group of its own");

    assert!(send_signal(supervisor as i64, "KILL"));
    assert_group_gone(group, "supervisor killed").await;
    // Its own group, but the supervisor's session: the worker kills that too.
    assert_pid_gone(
        escaped,
        "a process of the step that left its group outlived the supervisor",
    )
    .await;
    let run = c.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = step(&run, "work")["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("step supervisor died"),
        "the error says why: {run}"
    );
    assert!(c.workers[0].alive(), "the worker goes on");

    // The next step starts a new supervisor.
    let next = c.submit("quick", json!({})).await;
    let run = c.wait_final(&next, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let blocked = lines_of(&c.marks().join(format!("{next}.sig")));
    assert_eq!(
        blocked,
        ["SigBlk:\t0000000000000000"],
        "a step blocks no signal"
    );
    let again = supervisor_of(worker).expect("a new supervisor");
    assert_ne!(again, supervisor);
    assert!(c.marker(&id).is_empty(), "the killed step never finished");
}
