//! DAG `workerSelector` on real workers and a real redis-server: in a mixed cluster each step
//! runs only on a worker whose labels contain its DAG's selector; a step no live worker matches
//! waits, and the run view, `dagrid status`, `/health` and `/api/v1/queues` say why, until a
//! matching worker joins and takes it; a labelled step of a `kill -9`ed worker runs again on
//! another matching worker, once.

use crate::common;

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

/// A DAG whose only step `work` fails its first attempt and retries after 1 s (retryPolicy:
/// through the delayed set and `retry_due.lua`), each start recording its worker's pid, with
/// `dag_selector` and `step_selector` as extra lines at the DAG and the step level; runs it on
/// two plain workers and a gpu worker and checks that both attempts ran on the gpu worker.
async fn both_attempts_on_the_gpu_worker(dag_selector: &str, step_selector: &str) {
    let dag = format!(
        r#"name: flaky
dedup: none
{dag_selector}
env:
  - MARKS: "@MARKS@"
steps:
  - name: work
    {step_selector}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_labelled_step_stay_on_matching_workers() {
    both_attempts_on_the_gpu_worker("workerSelector: {gpu: true}", "").await;
}

// --- step-level workerSelector ----------------------------------------------------------------

/// The pid of the worker that ran `name` of `run`.
fn step_ran_on(run: &Value, name: &str) -> u32 {
    step(run, name)["worker"]
        .as_str()
        .and_then(worker_pid)
        .unwrap_or_else(|| panic!("no worker recorded for {name}: {run}"))
}

/// A step of a test DAG: `name`, with `extra` YAML keys (`workerSelector: ...`, `depends:`),
/// that records its worker's pid in `marks/<run>.<name>`.
fn recording_step(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n{extra}    script: |\n      {pid}\n      echo \"$w\" >> \"$MARKS/$DAG_RUN_ID.{name}\"\n",
        pid = common::dags::WORKER_PID_SH
    )
}

/// A DAG named `name` with `top` (extra top-level YAML) and `steps` (from [`recording_step`]).
fn steps_dag(name: &str, top: &str, steps: &[String]) -> String {
    format!(
        "name: {name}\ndedup: none\n{top}env:\n  - MARKS: \"@MARKS@\"\nsteps:\n{}",
        steps.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_selector_routes_that_step_only() {
    // No DAG-level selector: `a` needs gpu=true, `b` (after `a`) any worker; the exit handler
    // needs gpu=true too.
    let handler = format!(
        "handlerOn:\n  exit:\n    workerSelector: {{gpu: true}}\n    script: |\n      {pid}\n      echo \"$w\" >> \"$MARKS/$DAG_RUN_ID.onExit\"\n",
        pid = common::dags::WORKER_PID_SH
    );
    let dag = steps_dag(
        "mixed",
        &handler,
        &[
            recording_step("a", "    workerSelector: {gpu: true}\n"),
            recording_step("b", "    depends: [a]\n"),
        ],
    );
    let mut c = Cluster::start(
        &[("mixed.yaml", dag)],
        Settings {
            workers: 1,
            concurrency: 2,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    wait_workers(&c, 2).await;
    let params: Vec<Value> = (0..8).map(|_| json!({})).collect();
    let ids = c.submit_batch("mixed", &params).await.expect("submitted");
    c.wait_all_final(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        let run = c.run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            step_ran_on(&run, "a"),
            gpu,
            "a ran off the gpu worker: {run}"
        );
        assert!([plain, gpu].contains(&step_ran_on(&run, "b")), "{run}");
        assert_eq!(step_ran_on(&run, "onExit"), gpu, "{run}");
        // The run's own selector is the DAG's: none; the step view shows the step's.
        assert!(run.get("worker_selector").is_none(), "{run}");
        assert_eq!(step(&run, "a")["worker_selector"], "gpu=true", "{run}");
        assert!(step(&run, "b").get("worker_selector").is_none(), "{run}");
    }
    // The step's selector was registered with its streams' groups.
    let queues = c.get_json("/api/v1/queues").await;
    assert!(
        queues["selectors"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["selector"] == "gpu=true")),
        "{queues}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_step_selector_means_any_worker_and_an_unmatched_step_waits_for_one() {
    // The DAG needs gpu=true; `free` says `{}` (any worker); `gpu` (after it) keeps the DAG's.
    let dag = steps_dag(
        "gpuish",
        "workerSelector: {gpu: true}\n",
        &[
            recording_step("free", "    workerSelector: {}\n"),
            recording_step("gpu", "    depends: [free]\n"),
        ],
    );
    let mut c = Cluster::start(
        &[("gpuish.yaml", dag)],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let id = c.submit("gpuish", json!({})).await;
    // The plain worker runs `free`; `gpu` then waits, and the run view says why.
    let run = c
        .wait_run(&id, Duration::from_secs(20), "free done, gpu queued", |r| {
            step(r, "free")["status"] == "succeeded" && step(r, "gpu")["status"] == "queued"
        })
        .await;
    assert_eq!(step_ran_on(&run, "free"), plain, "{run}");
    assert_eq!(step(&run, "free")["worker_selector"], "", "{run}");
    assert!(step(&run, "gpu").get("worker_selector").is_none(), "{run}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = c.run(&id).await;
    assert_eq!(step(&run, "gpu")["status"], "queued", "{run}");
    assert_eq!(
        run["waiting_for"], "no live worker matches gpu=true",
        "{run}"
    );
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_ran_on(&run, "gpu"), gpu, "{run}");
    assert!(run.get("waiting_for").is_none(), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_no_matching_worker_waits_and_names_its_selector() {
    // No DAG-level selector: the run's own selector is empty. `a` (queued by the transition
    // after `first`) needs tpu=v5, which no worker has at first.
    let dag = steps_dag(
        "tpu",
        "",
        &[
            recording_step("first", ""),
            recording_step("a", "    depends: [first]\n    workerSelector: {tpu: v5}\n"),
        ],
    );
    let mut c = Cluster::start(
        &[("tpu.yaml", dag)],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let id = c.submit("tpu", json!({})).await;
    let stopped = c.submit("tpu", json!({})).await;
    for id in [&id, &stopped] {
        c.wait_run(id, Duration::from_secs(20), "first done", |r| {
            step(r, "first")["status"] == "succeeded"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = c.run(&id).await;
    assert_eq!(step(&run, "a")["status"], "queued", "{run}");
    assert_eq!(run["waiting_for"], "no live worker matches tpu=v5", "{run}");
    let ready = |queues: &Value| {
        queues["selectors"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["selector"] == "tpu=v5"))
            .map(|s| s["ready"].clone())
            .unwrap_or_else(|| panic!("no tpu=v5 selector: {queues}"))
    };
    assert_eq!(ready(&c.get_json("/api/v1/queues").await), 2);
    // A stop removes the queued step's entry from the step's own stream.
    let (status, body) = c.stop_run(&stopped).await.expect("stopped");
    assert!(status < 300, "{status} {body}");
    c.wait_final(&stopped, Duration::from_secs(20)).await;
    assert_eq!(ready(&c.get_json("/api/v1/queues").await), 1);
    let tpu = spawn_labelled(&mut c, "worker-tpu", &["tpu=v5"]);
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step_ran_on(&run, "a"), tpu, "{run}");
    assert_eq!(ready(&c.get_json("/api/v1/queues").await), 0);
    assert!(
        !c.marks().join(format!("{stopped}.a")).exists(),
        "the stopped run's step never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_step_selected_step_stay_on_matching_workers() {
    // The retry is queued on the step's own stream.
    both_attempts_on_the_gpu_worker("", "workerSelector: {gpu: true}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_root_steps_with_their_own_selector_are_admitted_onto_their_stream() {
    // `one` admits one run at a time (the second is held, then admitted by admit.lua); `later`
    // delays each run (held, then promote.lua). Their root step `a` needs gpu=true, `b` (a
    // second root) does not.
    let steps = [
        recording_step("a", "    workerSelector: {gpu: true}\n"),
        recording_step("b", "    depends: []\n"),
    ];
    let one = steps_dag("one", "maxActiveRuns: 1\n", &steps);
    let later = steps_dag("later", "delaySec: 1\n", &steps);
    let mut c = Cluster::start(
        &[("one.yaml", one), ("later.yaml", later)],
        Settings {
            workers: 1,
            concurrency: 2,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    wait_workers(&c, 2).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(c.submit("one", json!({})).await);
    }
    ids.push(c.submit("later", json!({})).await);
    c.wait_all_final(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        let run = c.run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            step_ran_on(&run, "a"),
            gpu,
            "a ran off the gpu worker: {run}"
        );
        assert!([plain, gpu].contains(&step_ran_on(&run, "b")), "{run}");
        assert!(c.marks().join(format!("{id}.a")).exists(), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_tasks_wait_on_their_steps_stream_while_no_worker_matches() {
    // Only a plain worker at first: a task held while its run waits (a paused queue, admitted
    // by admit.lua on resume; a delayed run, admitted by promote.lua) must land on its step's
    // stream, where the plain worker never takes it.
    let steps = [
        recording_step("a", "    workerSelector: {gpu: true}\n"),
        recording_step("b", "    depends: []\n"),
    ];
    let paused = steps_dag("paused", "", &steps);
    let later = steps_dag("later", "delaySec: 1\n", &steps);
    let mut c = Cluster::start(
        &[("paused.yaml", paused), ("later.yaml", later)],
        Settings {
            workers: 1,
            concurrency: 2,
            ..Settings::default()
        },
    )
    .await;
    let (status, body) = c.post("/api/v1/queues/paused/pause", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(c.submit("paused", json!({})).await);
    }
    ids.push(c.submit("later", json!({})).await);
    let (status, body) = c.post("/api/v1/queues/paused/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    for id in &ids {
        c.wait_run(id, Duration::from_secs(20), "b done", |r| {
            step(r, "b")["status"] == "succeeded"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids {
        let run = c.run(id).await;
        assert_eq!(step(&run, "a")["status"], "queued", "{run}");
        assert_eq!(
            run["waiting_for"], "no live worker matches gpu=true",
            "{run}"
        );
    }
    let gpu = spawn_labelled(&mut c, "worker-gpu", &["gpu=true"]);
    c.wait_all_final(&ids, Duration::from_secs(30)).await;
    for id in &ids {
        let run = c.run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(step_ran_on(&run, "a"), gpu, "{run}");
    }
}
