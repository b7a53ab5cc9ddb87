//! DAG `workerSelector` on real workers and a real redis-server: in a mixed cluster each step
//! runs only on a worker whose labels contain its DAG's selector; a step no live worker matches
//! waits, and the run view, `dagrid status`, `/health` and `/api/v1/queues` say why, until a
//! matching worker joins and takes it; a labelled step of a `kill -9`ed worker runs again on
//! another matching worker, once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::dags::one_step_dag;
use common::os::worker_pid;
use common::proc::Proc;
use common::step;
use serde_json::{json, Value};

/// [`one_step_dag`] named `name` whose runs need workers with `selector` (a YAML flow map).
fn selected_dag(name: &str, selector: &str) -> String {
    format!("{}workerSelector: {selector}\n", one_step_dag(name))
}

/// Starts a worker with `labels` (`key=value` each) and keeps it with the cluster's workers;
/// returns its pid.
fn spawn_labelled(c: &mut Cluster, name: &str, labels: &[&str]) -> u32 {
    let mut args = c.worker_args();
    for l in labels {
        args.extend(["--label".to_string(), l.to_string()]);
    }
    let log = c.root().join(format!("procs/{name}.log"));
    let w = Proc::spawn(name, &args, log);
    let pid = w.pid;
    c.workers.push(w);
    pid
}

/// Waits until `n` workers heartbeat.
async fn wait_workers(c: &Cluster, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.get_json("/api/v1/workers").await;
        if v["workers"].as_array().map_or(0, Vec::len) == n {
            return;
        }
        assert!(Instant::now() < deadline, "not {n} workers: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the worker that ran `work` of `run`.
fn ran_on(run: &Value) -> u32 {
    step(run, "work")["worker"]
        .as_str()
        .and_then(worker_pid)
        .unwrap_or_else(|| panic!("no worker recorded: {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_runs_on_a_worker_whose_labels_match() {
    let mut c = Cluster::start(
        &[
            ("any.yaml", one_step_dag("any")),
            ("gpu.yaml", selected_dag("gpu", "{gpu: true}")),
            ("eu.yaml", selected_dag("eu", "{gpu: true, region: eu}")),
        ],
        Settings {
            workers: 1,
            concurrency: 2,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    let eu = spawn_labelled(&mut c, "worker-eu", &["gpu=true", "region=eu", "zone=a"]);
    wait_workers(&c, 3).await;

    let params: Vec<Value> = (0..6).map(|_| json!({ "SLEEP": "0.05" })).collect();
    let mut ids = Vec::new();
    for dag in ["any", "gpu", "eu"] {
        let batch = c.submit_batch(dag, &params).await.expect("submitted");
        ids.push((dag, batch));
    }
    let all: Vec<String> = ids.iter().flat_map(|(_, b)| b.clone()).collect();
    c.wait_all_final(&all, Duration::from_secs(60)).await;
    for (dag, batch) in &ids {
        for id in batch {
            let run = c.run(id).await;
            assert_eq!(run["status"], "succeeded", "{run}");
            let pid = ran_on(&run);
            match *dag {
                "gpu" => {
                    assert!(pid == gpu || pid == eu, "gpu run on {pid}: {run}");
                    assert_eq!(run["worker_selector"], "gpu=true", "{run}");
                }
                "eu" => {
                    assert_eq!(pid, eu, "eu run on {pid}: {run}");
                    assert_eq!(run["worker_selector"], "gpu=true,region=eu", "{run}");
                }
                _ => {
                    assert!([plain, gpu, eu].contains(&pid), "{run}");
                    assert!(run.get("worker_selector").is_none(), "{run}");
                }
            }
            assert_eq!(c.marker(id).len(), 1, "run {id} ran once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_no_worker_matches_waits_says_why_and_runs_when_one_joins() {
    let mut c = Cluster::start(
        &[("gpu.yaml", selected_dag("gpu", "{gpu: \"true\"}"))],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let id = c.submit("gpu", json!({ "SLEEP": "0.05" })).await;
    // The plain worker never takes it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = c.run(&id).await;
    assert_eq!(step(&run, "work")["status"], "queued", "{run}");
    let why = "no live worker matches gpu=true";
    assert_eq!(run["waiting_for"], why, "{run}");

    let out = Command::new(env!("CARGO_BIN_EXE_dagrid"))
        .args(["status", &id, "--server", &c.api])
        .output()
        .expect("run dagrid status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("waiting  {why}")), "{text}");
    assert!(text.contains("workers  with gpu=true"), "{text}");

    let health = c.get_json("/health").await;
    let reasons = health["reasons"].as_array().cloned().unwrap_or_default();
    assert!(
        reasons.iter().any(|r| r["code"] == "no_matching_worker"
            && r["message"].as_str().unwrap_or("").contains(why)),
        "{health}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    let queues = c.get_json("/api/v1/queues").await;
    let sel = queues["selectors"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["selector"] == "gpu=true"))
        .cloned()
        .unwrap_or_else(|| panic!("no gpu=true selector: {queues}"));
    assert_eq!(sel["ready"], 1, "{sel}");
    assert_eq!(sel["matching_workers"], 0, "{sel}");
    assert_eq!(sel["waiting_for"], why, "{sel}");

    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(ran_on(&run), gpu, "{run}");
    assert!(run.get("waiting_for").is_none(), "{run}");
    let health = c.get_json("/health").await;
    let sel = &health["selectors"][0];
    assert_eq!(sel["matching_workers"], 1, "{health}");
    assert!(sel["waiting_for"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_labelled_step_runs_again_on_a_matching_worker_once() {
    let lease = Duration::from_secs(6);
    let started = Instant::now();
    let mut c = Cluster::start(
        &[("gpu.yaml", selected_dag("gpu", "{gpu: true}"))],
        Settings {
            lease_timeout: Some(lease),
            heartbeat: Some(Duration::from_secs(1)),
            concurrency: 1,
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let a = spawn_labelled(&mut c, "worker-gpu-a", &["gpu=true"]);
    let b = spawn_labelled(&mut c, "worker-gpu-b", &["gpu=true"]);
    wait_workers(&c, 3).await;
    // The reaper reclaims nothing until Redis has been up for a lease.
    tokio::time::sleep_until((started + lease).into()).await;
    let id = c
        .submit("gpu", json!({ "SLEEP": "30", "RESLEEP": "0.2" }))
        .await;
    let run = c
        .wait_run(&id, Duration::from_secs(20), "running", |r| {
            step(r, "work")["status"] == "running"
        })
        .await;
    let first = ran_on(&run);
    assert!(first == a || first == b, "{run}");
    let i = c.workers.iter().position(|w| w.pid == first).unwrap();
    c.kill_worker(i);
    let run = c.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let second = ran_on(&run);
    assert_ne!(second, plain, "a plain worker ran a gpu step: {run}");
    assert_eq!(second, if first == a { b } else { a }, "{run}");
    assert_eq!(step(&run, "work")["lost"], 1, "{run}");
    assert_eq!(c.marker(&id).len(), 1, "ran to its end once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_labelled_step_stay_on_matching_workers() {
    // Fails its first attempt; retryPolicy queues the next after 1 s (through the delayed set
    // and `retry_due.lua`); every start records its worker's pid.
    let dag = format!(
        r#"name: flaky
dedup: none
workerSelector: {{gpu: true}}
env:
  - MARKS: "@MARKS@"
steps:
  - name: work
    retryPolicy: {{limit: 2, intervalSec: 1}}
    script: |
      {pid}
      echo "$w" >> "$MARKS/$DAG_RUN_ID.workers"
      [ "$(wc -l < "$MARKS/$DAG_RUN_ID.workers")" -gt 1 ]
"#,
        pid = common::dags::WORKER_PID_SH
    );
    let mut c = Cluster::start(
        &[("flaky.yaml", dag)],
        Settings {
            workers: 2,
            ..Settings::default()
        },
    )
    .await;
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    wait_workers(&c, 3).await;
    let id = c.submit("flaky", json!({})).await;
    let run = c.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "work")["attempt"], 2, "{run}");
    let starts = std::fs::read_to_string(c.marks().join(format!("{id}.workers"))).unwrap();
    let pids: Vec<u32> = starts
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids, vec![gpu, gpu], "every attempt on the gpu worker");
}
