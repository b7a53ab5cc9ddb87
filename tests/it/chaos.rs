//! Chaos tests of the "Reliability" issue: real processes (redis-server, `dagrid coordinator`,
//! `dagrid worker`) killed with SIGKILL, stopped with SIGTERM, frozen with SIGSTOP, and Redis
//! restarted from its append-only file. Each test asserts what must hold afterwards (no run
//! lost, every run succeeded, stale results rejected) and prints what it measured; run with
//! `cargo test --test it chaos:: -- --test-threads=1 --nocapture` to see the figures.
//!
//! Randomness (sleep lengths, which worker dies) comes from fixed seeds.

use crate::common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::dags::{chain_dag, one_step_dag};
use common::os::{group_running, now_ms, pid_running, worker_pid};
use common::step;
use serde_json::{json, Value};

/// Params of `n` runs of [`one_step_dag`], each sleeping 0.2–0.5 s (from `seed`).
fn sleep_params(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| json!({ "SLEEP": format!("{:.3}", 0.2 + rng.below(301) as f64 / 1000.0) }))
        .collect()
}

/// The `worker` of a run's step, as a pid.
fn step_worker_pid(run: &Value, name: &str) -> Option<u32> {
    step(run, name)["worker"].as_str().and_then(worker_pid)
}

fn lost(run: &Value, name: &str) -> u64 {
    step(run, name)["lost"].as_u64().unwrap_or(0)
}

fn attempt(run: &Value, name: &str) -> u64 {
    step(run, name)["attempt"].as_u64().unwrap_or(0)
}

/// Counts marker lines of every run: (runs with no line, runs with 2+ lines, extra executions).
fn duplicates(c: &Cluster, ids: &[String]) -> (usize, usize, usize) {
    let (mut none, mut dup, mut extra) = (0, 0, 0);
    for id in ids {
        let m = c.marker(id);
        assert!(
            m.iter().all(|l| l == id),
            "marker of {id} holds other lines: {m:?}"
        );
        match m.len() {
            0 => none += 1,
            1 => {}
            n => {
                dup += 1;
                extra += n - 1;
            }
        }
    }
    (none, dup, extra)
}

/// One kill of test (a).
struct Kill {
    pid: u32,
    at_ms: u64,
    /// Its step processes at the kill.
    steps: usize,
    /// How many of them still ran 300 ms after the kill.
    survivors: usize,
}

/// (a) `kill -9` one of three workers every 1.5 s during a 300-run batch (until 95% of the runs
/// are final), starting a fresh
/// worker after each kill: no run is lost, every run succeeds, each step the dead worker held
/// runs again (`lost` ≥ 1). Its step processes should die with it (they get SIGKILL when their
/// worker dies); the test prints how many outlived it and how many runs executed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_mid_step_loses_no_run() {
    const RUNS: usize = 300;
    const MAX_KILLS: usize = 10;
    let lease = Duration::from_secs(3);
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(lease),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 3,
            workers: 3,
            ..Default::default()
        },
    )
    .await;

    let t0 = Instant::now();
    let ids = c
        .submit_batch("chaos", &sleep_params(RUNS, 0xC4A05))
        .await
        .expect("batch accepted");
    assert_eq!(ids.len(), RUNS);

    let mut rng = Rng::new(42);
    let mut kills: Vec<Kill> = Vec::new();
    while kills.len() < MAX_KILLS {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Mid-batch only: in the batch's tail the few steps left are re-run within 2 s of each
        // kill and would be hit again and again, until the lost-worker cap fails them (as it
        // must: a step whose worker dies four times in a row fails).
        if c.final_count(&ids).await >= RUNS - RUNS / 20 {
            break;
        }
        let i = rng.below(c.workers.len() as u64) as usize;
        let (pid, at_ms, steps) = c.kill_worker(i);
        c.spawn_worker();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let survivors = steps.iter().filter(|p| pid_running(**p)).count();
        eprintln!(
            "kill #{} at +{:.1}s: worker pid {pid} with {} step process(es), {survivors} still running 300 ms later",
            kills.len() + 1,
            t0.elapsed().as_secs_f64(),
            steps.len()
        );
        kills.push(Kill {
            pid,
            at_ms,
            steps: steps.len(),
            survivors,
        });
    }
    c.wait_all_final(&ids, Duration::from_secs(90)).await;
    let elapsed = t0.elapsed();

    let by_pid: HashMap<u32, usize> = kills.iter().enumerate().map(|(k, x)| (x.pid, k)).collect();
    let mut restarts: Vec<Vec<u64>> = vec![Vec::new(); kills.len()];
    let mut requeues: Vec<Vec<u64>> = vec![Vec::new(); kills.len()];
    let (mut not_succeeded, mut lost_steps, mut lost_attempts, mut unattributed) =
        (Vec::new(), 0, 0, 0);
    let mut rerun_without_lost = Vec::new();
    for id in &ids {
        let run = c.run(id).await;
        if run["status"] != "succeeded" {
            not_succeeded.push(format!("{id}: {}", run["status"]));
            continue;
        }
        let starts = c.starts(id);
        let current = step_worker_pid(&run, "work");
        let l = lost(&run, "work");
        // Started on a killed worker, then again elsewhere: that attempt died with its worker.
        let killed_then_rerun = starts
            .iter()
            .rev()
            .skip(1)
            .any(|(ppid, _)| by_pid.contains_key(ppid));
        if killed_then_rerun && l == 0 {
            rerun_without_lost.push(id.clone());
        }
        if l == 0 {
            continue;
        }
        lost_steps += 1;
        lost_attempts += l;
        let started = step(&run, "work")["started_ms"].as_u64().unwrap_or(0);
        let queued = step(&run, "work")["queued_ms"].as_u64().unwrap_or(0);
        // The kill that took the attempt before the current one.
        let k = starts
            .iter()
            .rev()
            .filter(|(ppid, _)| Some(*ppid) != current)
            .find_map(|(ppid, _)| by_pid.get(ppid));
        match k {
            Some(&k) if started >= kills[k].at_ms => {
                restarts[k].push(started - kills[k].at_ms);
                requeues[k].push(queued.saturating_sub(kills[k].at_ms));
            }
            _ => unattributed += 1,
        }
    }
    let (none, dup, extra) = duplicates(&c, &ids);

    println!(
        "(a) {RUNS} runs, {} kills, lease {lease:?}: all final in {:.1}s",
        kills.len(),
        elapsed.as_secs_f64()
    );
    for (k, x) in kills.iter().enumerate() {
        let mm = median_max(&restarts[k]);
        println!(
            "    kill #{} (pid {}): {} step process(es), {} outlived it; {} step(s) restarted; kill→re-queue median/max {:?} ms, kill→restart {:?} ms",
            k + 1,
            x.pid,
            x.steps,
            x.survivors,
            restarts[k].len(),
            median_max(&requeues[k]),
            mm
        );
    }
    let all: Vec<u64> = restarts.iter().flatten().copied().collect();
    let all_requeues: Vec<u64> = requeues.iter().flatten().copied().collect();
    println!(
        "    steps lost ≥1: {lost_steps} ({lost_attempts} lost attempts), {unattributed} not attributable to a kill (claimed, never started)"
    );
    println!(
        "    over all kills: kill→re-queue median/max {:?} ms, kill→restart median/max {:?} ms ({} samples; a re-queued step waits behind the batch's backlog)",
        median_max(&all_requeues),
        median_max(&all),
        all.len()
    );
    println!(
        "    duplicates: {dup} run(s) ran `work` to its end more than once ({extra} extra execution(s)); {none} run(s) without a marker"
    );

    assert!(
        not_succeeded.is_empty(),
        "runs not succeeded: {not_succeeded:?}"
    );
    assert_eq!(none, 0, "a succeeded run has no marker line");
    assert!(!kills.is_empty(), "the batch ended before the first kill");
    assert!(
        lost_steps > 0,
        "no step was reported lost although {} workers were killed mid-batch",
        kills.len()
    );
    assert!(
        rerun_without_lost.is_empty(),
        "steps that ran again after their worker was killed but show lost = 0: {rerun_without_lost:?}"
    );
}

/// What [`assert_all_succeeded`] saw besides success.
#[derive(Debug, Default)]
struct Outcome {
    /// Steps with more than one attempt.
    retried: usize,
    /// Per run: how long after its last step finished (worker's clock) the run was marked
    /// finished (coordinator's clock), in ms: the delay of applying the last report.
    apply_lag_ms: Vec<u64>,
}

/// Checks every run of `ids`: it exists and succeeded, each of its steps too.
async fn assert_all_succeeded(c: &Cluster, ids: &[String]) -> Outcome {
    let mut bad = Vec::new();
    let mut out = Outcome::default();
    for id in ids {
        let Some((code, run)) = c.try_run(id).await else {
            bad.push(format!("{id}: the API did not answer"));
            continue;
        };
        if code != 200 {
            bad.push(format!("{id}: HTTP {code} {run}"));
            continue;
        }
        if run["status"] != "succeeded" {
            bad.push(format!("{id}: {}", run["status"]));
        }
        let mut last_step = 0;
        for s in run["steps"].as_array().into_iter().flatten() {
            if s["status"] != "succeeded" {
                bad.push(format!("{id} step {}: {}", s["name"], s["status"]));
            }
            if s["attempt"].as_u64().unwrap_or(0) > 1 {
                out.retried += 1;
            }
            last_step = last_step.max(s["finished_ms"].as_u64().unwrap_or(0));
        }
        if let Some(f) = run["finished_ms"].as_u64() {
            out.apply_lag_ms.push(f.saturating_sub(last_step));
        }
    }
    assert!(
        bad.is_empty(),
        "{} run(s) not succeeded: {bad:?}",
        bad.len()
    );
    out
}

/// (b) kill -9 the coordinator while a 100-run batch of two-step runs is under way, start it
/// again on the same port: every run finishes, succeeded, and no step runs twice (no worker
/// died).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_mid_batch_loses_no_run() {
    const RUNS: usize = 100;
    let mut c = Cluster::start(
        &[("chain.yaml", chain_dag("chain"))],
        Settings {
            concurrency: 3,
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let t0 = Instant::now();
    let ids = c
        .submit_batch("chain", &sleep_params(RUNS, 0xB0B))
        .await
        .expect("batch accepted");
    // Kill 1 while the first steps run (their reports pile up), kill 2 while the second
    // steps run (the coordinator queued them).
    let mut kills = Vec::new();
    for k in 0..2 {
        let done = if k == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.final_count(&ids).await
        } else {
            c.wait_final_count(&ids, RUNS / 5, Duration::from_secs(60))
                .await
        };
        c.kill_coordinator();
        let killed = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.start_coordinator().await;
        let down = killed.elapsed();
        let done_at_restart = c.final_count(&ids).await;
        kills.push(format!(
            "kill #{} at +{:.1}s with {done} final, down {:.1}s, {done_at_restart} final when ready again",
            k + 1,
            (killed - t0).as_secs_f64(),
            down.as_secs_f64()
        ));
    }
    let restarted = Instant::now();
    c.wait_all_final(&ids, Duration::from_secs(90)).await;
    let outcome = assert_all_succeeded(&c, &ids).await;
    let (none, dup, extra) = duplicates(&c, &ids);
    println!(
        "(b) {RUNS} two-step runs: {}; all final {:.1}s after the last restart ({:.1}s in all)",
        kills.join("; "),
        restarted.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "    steps with attempt > 1: {}; last report applied median/max {:?} ms after the step finished; duplicates: {dup} run(s) ({extra} extra execution(s)); {none} without marker",
        outcome.retried,
        median_max(&outcome.apply_lag_ms)
    );
    assert_eq!(none, 0, "a succeeded run has no marker");
    assert_eq!(
        dup, 0,
        "a step ran to its end twice although every worker stayed alive"
    );
}

/// (c) Restart redis-server (append-only, fsync always) twice during a batch: once after
/// kill -9, once after SIGTERM, each time on the same port and data directory after ~1 s.
/// Every run the API accepted (before, during and after the outages) exists afterwards and
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_redis_mid_batch_loses_no_accepted_run() {
    let mut c = Cluster::start(
        &[("chain.yaml", chain_dag("chain"))],
        Settings {
            concurrency: 3,
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let t0 = Instant::now();
    let mut ids = c
        .submit_batch("chain", &sleep_params(100, 0xC0FFEE))
        .await
        .expect("batch accepted");
    let first = ids.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let done1 = c.final_count(&ids).await;

    // 1: kill -9, then a batch while Redis is down, then start it again.
    c.redis.kill().await;
    let down = Instant::now();
    let during = c.submit_batch("chain", &sleep_params(10, 7)).await;
    match &during {
        Ok(more) => ids.extend(more.iter().cloned()),
        Err(e) => println!("    a batch while Redis was down was refused: {e}"),
    }
    let wait = Duration::from_secs(1).saturating_sub(down.elapsed());
    tokio::time::sleep(wait).await;
    c.redis.restart().await.expect("redis-server restarts");
    let outage1 = down.elapsed();
    c.wait_ready(Duration::from_secs(30)).await;
    let ready1 = down.elapsed();

    // 2: SIGTERM (Redis flushes and exits), then start it again.
    let done2 = c.wait_final_count(&ids, 20, Duration::from_secs(60)).await;
    c.redis.stop().await;
    let down2 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.redis.restart().await.expect("redis-server restarts");
    let outage2 = down2.elapsed();
    c.wait_ready(Duration::from_secs(30)).await;

    // A batch after the restarts is accepted (allowing the services a few seconds to
    // reconnect).
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        match c.submit_batch("chain", &sleep_params(20, 11)).await {
            Ok(more) => break more,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "a batch after the restart is refused: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    ids.extend(after);
    c.wait_all_final(&ids, Duration::from_secs(90)).await;
    let outcome = assert_all_succeeded(&c, &ids).await;
    let (none, dup, extra) = duplicates(&c, &ids);
    println!(
        "(c) {} accepted runs ({first} before, {} during the outage, 20 after): kill -9 with {done1} final, down {:.1}s, API ready {:.1}s after the kill; SIGTERM with {done2} final, down {:.1}s; all final at +{:.1}s",
        ids.len(),
        during.as_ref().map(Vec::len).unwrap_or(0),
        outage1.as_secs_f64(),
        ready1.as_secs_f64(),
        outage2.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "    steps with attempt > 1: {}; last report applied median/max {:?} ms after the step finished; duplicates: {dup} run(s) ({extra} extra execution(s)); {none} without marker",
        outcome.retried,
        median_max(&outcome.apply_lag_ms)
    );
    assert_eq!(none, 0, "a succeeded run has no marker");
}

/// Waits until the run's `work` step runs (started on a worker).
async fn wait_running(c: &Cluster, id: &str) -> Value {
    c.wait_run(id, Duration::from_secs(20), "running", |r| {
        step(r, "work")["status"] == "running" && step(r, "work")["started_ms"].is_u64()
    })
    .await
}

/// (d1) SIGTERM the only worker while a 3 s step runs, with a shutdown grace of 10 s: the
/// step finishes on it, the worker claims nothing more and exits 0; a run submitted meanwhile
/// waits and is run by the next worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_step_finish_within_the_grace() {
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            shutdown_grace: Some(Duration::from_secs(10)),
            concurrency: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let long = c.submit("chaos", json!({ "SLEEP": "3" })).await;
    wait_running(&c, &long).await;
    let next = c.submit("chaos", json!({ "SLEEP": "0.2" })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w1 = c.workers[0].pid;
    let term_ms = now_ms();
    c.workers[0].signal("TERM");
    let status = c.workers[0]
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the worker exits within its grace");
    let exited_after = now_ms() - term_ms;
    c.retire_worker(0);

    let run = c.wait_final(&long, Duration::from_secs(10)).await;
    let s = step(&run, "work");
    let finished_after = s["finished_ms"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(term_ms);
    let queued = c.run(&next).await;
    println!(
        "(d1) SIGTERM with grace 10s: worker exited {status} {exited_after} ms after it; the 3s step finished {finished_after} ms after it (attempt {}, lost {}); the run submitted meanwhile was {}",
        s["attempt"], s["lost"], queued["status"]
    );
    assert!(status.success(), "the worker exits 0: {status}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_worker_pid(&run, "work"), Some(w1), "{run}");
    assert_eq!(attempt(&run, "work"), 1, "{run}");
    assert_eq!(lost(&run, "work"), 0, "{run}");
    assert_eq!(c.marker(&long).len(), 1);
    assert!(
        c.starts(&next).is_empty(),
        "the draining worker started a new step: {queued}"
    );

    let w2 = c.start_worker().await;
    let w2 = c.workers[w2].pid;
    let run = c.wait_final(&next, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_worker_pid(&run, "work"), Some(w2), "{run}");
    assert_eq!(lost(&run, "work"), 0, "{run}");
}

/// (d2) SIGTERM the only worker while a 20 s step runs, with a shutdown grace of 1 s: the
/// worker stops the step and hands it back (not lost), exits 0; a worker started afterwards
/// runs it at once (well before the 30 s lease could reclaim it), and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_a_step_longer_than_the_grace() {
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(Duration::from_secs(30)),
            shutdown_grace: Some(Duration::from_secs(1)),
            concurrency: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    // 20 s on its first start; the attempt after the hand-back sleeps 0.5 s.
    let id = c
        .submit("chaos", json!({ "SLEEP": "20", "RESLEEP": "0.5" }))
        .await;
    wait_running(&c, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term_ms = now_ms();
    c.workers[0].signal("TERM");
    let status = c.workers[0]
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the worker exits soon after its grace");
    let exited_after = now_ms() - term_ms;
    c.retire_worker(0);
    let first = c.starts(&id);
    assert_eq!(first.len(), 1, "one start so far: {first:?}");
    let step_group = first[0].1;
    // Processes killed a moment ago may still be on their way out: give them a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = group_running(step_group);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = group_running(step_group);
    }
    let group_left = !left.is_empty();
    let between = c.run(&id).await;
    println!(
        "(d2) SIGTERM with grace 1s: worker exited {status} {exited_after} ms after it; the step's process group {} it; the step is then {} (attempt {}, lost {})",
        if group_left { "outlived" } else { "died with" },
        step(&between, "work")["status"],
        step(&between, "work")["attempt"],
        step(&between, "work")["lost"]
    );
    assert!(status.success(), "the worker exits 0: {status}");
    assert!(
        !group_left,
        "the step's process group {step_group} still runs after its worker exited: {left:?}"
    );

    let i = c.start_worker().await;
    let (w2, w2_started) = (c.workers[i].pid, c.workers[i].started_ms);
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    let s = step(&run, "work");
    let restart_after = s["started_ms"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(w2_started);
    println!(
        "    second worker started the step {restart_after} ms after it was spawned; run {} with attempt {}, lost {}",
        run["status"], s["attempt"], s["lost"]
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_worker_pid(&run, "work"), Some(w2), "{run}");
    assert_eq!(
        lost(&run, "work"),
        0,
        "a handed-back step is not lost: {run}"
    );
    assert_eq!(
        c.marker(&id).len(),
        1,
        "only the second attempt ran to its end"
    );
}

/// (e) Freeze a worker (SIGSTOP) mid-step so it looks dead; once another worker ran the
/// reclaimed step to success, thaw it (SIGCONT): its late report of the first attempt is
/// rejected and changes nothing in the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempts_late_result_is_rejected() {
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(Duration::from_secs(2)),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let id = c.submit("chaos", json!({ "SLEEP": "2" })).await;
    wait_running(&c, &id).await;
    let a = c.workers[0].pid;
    c.workers[0].signal("STOP");
    let stop_ms = now_ms();
    let i = c.start_worker().await;
    let b = c.workers[i].pid;
    let run = c.wait_final(&id, Duration::from_secs(40)).await;
    let s = step(&run, "work");
    println!(
        "(e) worker {a} frozen; step restarted on {b} {} ms later (attempt {}, lost {}); run {}",
        s["started_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(stop_ms),
        s["attempt"],
        s["lost"],
        run["status"]
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_worker_pid(&run, "work"), Some(b), "{run}");
    assert_eq!(attempt(&run, "work"), 2, "{run}");
    assert_eq!(lost(&run, "work"), 1, "{run}");

    c.workers[0].signal("CONT");
    let cont = Instant::now();
    // The frozen worker reports its attempt once thawed; the rejection shows in a log.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rejection = loop {
        let coordinator = c.coordinator.as_ref().expect("coordinator");
        let found = coordinator
            .find_line(&["stale"])
            .or_else(|| coordinator.find_line(&["ignored", &id]))
            .or_else(|| c.workers[0].find_line(&["stale"]))
            // The thawed worker applies its own late report, and logs it ignored.
            .or_else(|| c.workers[0].find_line(&["ignored", &id]));
        if found.is_some() || Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let after = c.run(&id).await;
    let marker = c.marker(&id);
    println!(
        "    after SIGCONT ({:.1}s): rejection logged: {rejection:?}; marker lines: {}; worker {a} alive: {}",
        cont.elapsed().as_secs_f64(),
        marker.len(),
        c.workers[0].alive()
    );
    assert!(
        rejection.is_some(),
        "no log line shows the late report rejected"
    );
    assert_eq!(after, run, "the late report changed the run");
    assert!(!marker.is_empty() && marker.len() <= 2, "{marker:?}");
    assert!(c.workers[0].alive(), "the thawed worker exited");
}

/// (e2) As (e), but the frozen worker is thawed while the second attempt still runs: its late
/// success of the first attempt is rejected as stale (logged where it was applied), the step stays
/// running on the second worker, and the run ends with the second attempt's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_success_during_the_new_attempt_is_rejected() {
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(Duration::from_secs(2)),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    // The first attempt sleeps 1 s (it ends while its worker is frozen), the next one 5 s.
    let id = c
        .submit("chaos", json!({ "SLEEP": "1", "RESLEEP": "5" }))
        .await;
    wait_running(&c, &id).await;
    let a = c.workers[0].pid;
    c.workers[0].signal("STOP");
    let stop_ms = now_ms();
    let i = c.start_worker().await;
    let b = c.workers[i].pid;
    let second = c
        .wait_run(
            &id,
            Duration::from_secs(30),
            "running on the second worker",
            |r| step(r, "work")["status"] == "running" && step_worker_pid(r, "work") == Some(b),
        )
        .await;
    println!(
        "(e2) worker {a} frozen; step restarted on {b} {} ms later (attempt {}, lost {})",
        step(&second, "work")["started_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(stop_ms),
        step(&second, "work")["attempt"],
        step(&second, "work")["lost"]
    );
    assert_eq!(attempt(&second, "work"), 2, "{second}");
    assert_eq!(lost(&second, "work"), 1, "{second}");
    assert_eq!(
        c.marker(&id).len(),
        1,
        "the first attempt ran to its end while its worker was frozen"
    );

    c.workers[0].signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let coordinator = c.coordinator.as_ref().expect("coordinator");
        // Logged by whoever applied the late report: the thawed worker itself, or a
        // coordinator when the report went through the results stream.
        let found = coordinator
            .find_line(&["stale", &id])
            .or_else(|| c.workers[0].find_line(&["stale", &id]));
        if found.is_some() || Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let during = c.run(&id).await;
    println!(
        "    after SIGCONT: stale report logged: {stale:?}; the run is then {} with its step {} on {:?}",
        during["status"],
        step(&during, "work")["status"],
        step_worker_pid(&during, "work")
    );
    let run = c.wait_final(&id, Duration::from_secs(30)).await;
    let s = step(&run, "work");
    println!(
        "    run {} with attempt {}, lost {}, worker pid {:?}; marker lines {}",
        run["status"],
        s["attempt"],
        s["lost"],
        step_worker_pid(&run, "work"),
        c.marker(&id).len()
    );
    assert!(stale.is_some(), "no stale report logged");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_worker_pid(&run, "work"), Some(b), "{run}");
    assert_eq!(attempt(&run, "work"), 2, "{run}");
    assert_eq!(lost(&run, "work"), 1, "{run}");
    let finished = s["finished_ms"].as_u64().unwrap_or(0);
    let started = s["started_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(
        finished >= started + 4_000,
        "the step finished {} ms after the second attempt started, before its 5 s sleep: {run}",
        finished.saturating_sub(started)
    );
    assert_eq!(
        c.marker(&id).len(),
        2,
        "one line per attempt that ran to its end"
    );
}

/// (f) A step that runs longer than the lease timeout on a live worker is not reclaimed: one
/// attempt, nothing lost, one execution, succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_lease_on_a_live_worker_is_not_reclaimed() {
    let c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(Duration::from_secs(2)),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 1,
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let id = c.submit("chaos", json!({ "SLEEP": "6" })).await;
    let run = c.wait_final(&id, Duration::from_secs(40)).await;
    let s = step(&run, "work");
    let took = s["finished_ms"].as_u64().unwrap_or(0) - s["started_ms"].as_u64().unwrap_or(0);
    println!(
        "(f) 6s step, lease 2s: run {} in {took} ms, attempt {}, lost {}, starts {}, marker lines {}",
        run["status"],
        s["attempt"],
        s["lost"],
        c.starts(&id).len(),
        c.marker(&id).len()
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(attempt(&run, "work"), 1, "{run}");
    assert_eq!(lost(&run, "work"), 0, "{run}");
    assert_eq!(c.starts(&id).len(), 1, "the step started more than once");
    assert_eq!(c.marker(&id).len(), 1);
}

/// (g) A claim whose reply never reached its worker (Redis applied the `XREADGROUP`, then went
/// down before answering: what test (c) can hit by chance) leaves the entry pending for a live
/// worker that knows nothing of it. The test makes that happen on purpose: it reads the
/// entry of a queued step from the ready stream as the live worker's consumer and drops the
/// reply. The step must still run (its lease expires, since no worker keeps it fresh) and the
/// run succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_was_lost_is_reclaimed() {
    let c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(Duration::from_secs(3)),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let busy = c.submit("chaos", json!({ "SLEEP": "2" })).await;
    let run = wait_running(&c, &busy).await;
    let worker_id = step(&run, "work")["worker"]
        .as_str()
        .expect("worker id")
        .to_string();
    let id = c.submit("chaos", json!({ "SLEEP": "0.2" })).await;

    // Claim the queued step's entry as the (live, busy) worker, and lose the reply.
    let keys = dagrid_shared::redis::keys::Keys::new(&c.ns);
    let level = run["priority"].as_u64().expect("priority") as u8;
    let client = redis::Client::open(c.redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(dagrid_shared::redis::keys::WORKER_GROUP)
        .arg(&worker_id)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(keys.ready(level))
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    let stolen_ms = now_ms();
    assert!(
        redis_value_contains(&reply, id.as_bytes()),
        "the entry read is not the queued step's: {reply:?}"
    );

    let run = c.wait_final(&id, Duration::from_secs(40)).await;
    let s = step(&run, "work");
    println!(
        "(g) an entry claimed for a live worker whose reply was lost: run {} (attempt {}, lost {}), restarted {} ms after the lost claim; marker lines {}",
        run["status"],
        s["attempt"],
        s["lost"],
        s["started_ms"].as_u64().unwrap_or(0).saturating_sub(stolen_ms),
        c.marker(&id).len()
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(c.marker(&id).len(), 1);
}

/// True when some bulk string inside `v` contains `needle`.
fn redis_value_contains(v: &redis::Value, needle: &[u8]) -> bool {
    match v {
        redis::Value::BulkString(b) => b.windows(needle.len()).any(|w| w == needle),
        redis::Value::Array(items)
        | redis::Value::Set(items)
        | redis::Value::Push { data: items, .. } => {
            items.iter().any(|i| redis_value_contains(i, needle))
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| redis_value_contains(k, needle) || redis_value_contains(v, needle)),
        _ => false,
    }
}

/// The first record of a step's history, which must be the lost attempt taken back at
/// `taken_ms` or later and before the step's current attempt was queued.
fn assert_lost_record(run: &Value, after_ms: u64) {
    let s = step(run, "work");
    let rec = &s["history"][0];
    assert_eq!(rec["status"], "lost", "{run}");
    assert_eq!(rec["attempt"], 1, "{run}");
    let taken = rec["finished_ms"].as_u64().expect("taken-back time");
    assert!(taken >= after_ms, "taken back before the fault: {run}");
    assert!(
        taken <= s["queued_ms"].as_u64().unwrap_or(u64::MAX),
        "taken back after the next attempt was queued: {run}"
    );
}

/// (g) Issue 12, point 11: a worker killed with SIGKILL (its Redis connections close with it)
/// is dead at once: its step runs again on another worker within seconds, not after the 6 s
/// lease, and the lost attempt is kept as `lost` with the time it was taken back (point 13).
/// The figure (kill → running elsewhere) is measured precisely by
/// `loadtest/src/bin/recovery.rs`; here only "well before the lease".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_step_runs_again_within_seconds_not_a_lease() {
    const TRIALS: usize = 3;
    let lease = Duration::from_secs(6);
    let started = Instant::now();
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(lease),
            heartbeat: Some(Duration::from_secs(1)),
            concurrency: 1,
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    // The reaper reclaims nothing until Redis has been up for a lease (after a restart every
    // heartbeat looks stale).
    tokio::time::sleep_until((started + lease).into()).await;
    let mut took = Vec::new();
    for _ in 0..TRIALS {
        let id = c
            .submit("chaos", json!({ "SLEEP": "30", "RESLEEP": "0.2" }))
            .await;
        let run = wait_running(&c, &id).await;
        let pid = step_worker_pid(&run, "work").expect("worker pid");
        let i = c
            .workers
            .iter()
            .position(|w| w.pid == pid)
            .expect("a live worker runs it");
        let (_, kill_ms, _) = c.kill_worker(i);
        let again = c
            .wait_run(&id, Duration::from_secs(30), "running elsewhere", |r| {
                attempt(r, "work") == 2 && step(r, "work")["started_ms"].is_u64()
            })
            .await;
        let started = step(&again, "work")["started_ms"].as_u64().unwrap_or(0);
        took.push(started.saturating_sub(kill_ms));
        assert_lost_record(&again, kill_ms);
        let run = c.wait_final(&id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(lost(&run, "work"), 1, "{run}");
        c.start_worker().await;
    }
    println!(
        "(g) kill -9 → step running elsewhere, lease {lease:?}: {took:?} ms (median/max {:?})",
        median_max(&took)
    );
    for t in &took {
        assert!(
            *t < 4_500,
            "a killed worker's step waited {t} ms: its death was not seen before the lease ({took:?})"
        );
    }
}

/// (h) Issue 12, point 12: a worker cut off from Redis by a black-holed network (its
/// connections stay open, so it is not dead at once and keeps the full lease) stops its own
/// steps before the lease ends; the reaper then runs them elsewhere, and each step runs to its
/// end exactly once (one marker line), its first attempt dead before the second started.
/// Before, the partitioned worker's steps ran on beside their new attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_stops_its_steps_before_they_run_again() {
    let lease = Duration::from_secs(3);
    let mut c = Cluster::start(
        &[("chaos.yaml", one_step_dag("chaos"))],
        Settings {
            lease_timeout: Some(lease),
            heartbeat: Some(Duration::from_millis(500)),
            concurrency: 2,
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], c.redis.port()));
    let proxy = proxy::Proxy::start(upstream).await.expect("proxy");
    let cut_off = c
        .start_worker_via(&format!("redis://{}", proxy.addr()))
        .await;
    let cut_pid = c.workers[cut_off].pid;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            c.submit("chaos", json!({ "SLEEP": "8", "RESLEEP": "0.5" }))
                .await,
        );
    }
    for id in &ids {
        let run = wait_running(&c, id).await;
        assert_eq!(step_worker_pid(&run, "work"), Some(cut_pid), "{run}");
    }
    c.start_worker().await;
    proxy.set_cut(true);
    let cut_ms = now_ms();
    // Watch each run's starts: when the second appears, the first must be dead.
    let mut overlapping = Vec::new();
    let mut seen_second = vec![false; ids.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen_second.iter().any(|s| !s) {
        for (k, id) in ids.iter().enumerate() {
            let starts = c.starts(id);
            if !seen_second[k] && starts.len() >= 2 {
                seen_second[k] = true;
                if pid_running(starts[0].1) {
                    overlapping.push(id.clone());
                }
            }
        }
        assert!(Instant::now() < deadline, "no second start in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut took = Vec::new();
    for id in &ids {
        let run = c.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_lost_record(&run, cut_ms);
        took.push(
            step(&run, "work")["started_ms"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(cut_ms),
        );
    }
    let fenced = c.workers[cut_off].find_line(&["step fenced"]);
    proxy.set_cut(false);
    println!(
        "(h) partition → step running elsewhere, lease {lease:?}: {took:?} ms; fenced: {fenced:?}"
    );
    assert!(
        overlapping.is_empty(),
        "first attempts still running when their next one started: {overlapping:?}"
    );
    for id in &ids {
        assert_eq!(
            c.marker(id).len(),
            1,
            "run {id} ran to its end more than once"
        );
    }
    assert!(
        fenced.is_some(),
        "the partitioned worker logged no fenced step"
    );
    for t in &took {
        assert!(
            *t >= lease.as_millis() as u64 - 1_000,
            "a silent worker's step ran again after {t} ms, before its lease: {took:?}"
        );
    }
    assert!(c.workers[cut_off].alive(), "the partitioned worker exited");
}

/// xorshift64*: a fixed seed gives the same sequence on every run.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Median and max of some durations in ms (`None` when empty).
pub(crate) fn median_max(values: &[u64]) -> Option<(u64, u64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    Some((*v.get(v.len() / 2)?, *v.last()?))
}
