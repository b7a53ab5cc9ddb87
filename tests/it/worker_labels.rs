//! Worker labels as users see them, on real processes and a real redis-server: a worker
//! started with `--label` (and one with `DAGRID_WORKER_LABELS`) shows its labels in
//! `/api/v1/workers`, `/health` (per worker, and the distinct label sets), `/metrics` (live
//! workers per label set) and `dagrid workers`; the OpenAPI document lists them; a bad label
//! stops `dagrid worker` at once with a message naming `--label` and the rule.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::proc::Proc;
use serde_json::{json, Value};

/// The live workers' entries of `/api/v1/workers`, once there are `n`.
async fn workers(c: &Cluster, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.get_json("/api/v1/workers").await;
        let list = v["workers"].as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(Instant::now() < deadline, "not {n} workers: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The entry of the worker with process id `pid` (ids are `<host>-<pid>-<hex>`).
fn of_pid(list: &[Value], pid: u32) -> &Value {
    let mark = format!("-{pid}-");
    list.iter()
        .find(|w| w["worker_id"].as_str().unwrap_or("").contains(&mark))
        .unwrap_or_else(|| panic!("no worker of pid {pid} in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_show_in_the_workers_list_health_metrics_and_the_cli() {
    let mut c = Cluster::start(
        &[],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let plain = c.workers[0].pid;
    let root = c.root().to_path_buf();
    let mut flags = c.worker_args();
    flags.extend(["--label", "region=eu", "--label", "gpu=true"].map(String::from));
    let by_flag = Proc::spawn("worker-flags", &flags, root.join("procs/worker-flags.log"));
    let by_env = Proc::spawn_with_env(
        "worker-env",
        &c.worker_args(),
        &[("DAGRID_WORKER_LABELS", "gpu=true, region=eu")],
        root.join("procs/worker-env.log"),
    );
    let (flag_pid, env_pid) = (by_flag.pid, by_env.pid);
    c.workers.extend([by_flag, by_env]);

    let list = workers(&c, 3).await;
    let eu_gpu = json!({"gpu": "true", "region": "eu"});
    assert_eq!(of_pid(&list, plain)["labels"], json!({}), "{list:?}");
    assert_eq!(of_pid(&list, flag_pid)["labels"], eu_gpu, "{list:?}");
    assert_eq!(of_pid(&list, env_pid)["labels"], eu_gpu, "{list:?}");

    let health = c.get_json("/health").await;
    let ws = &health["workers"];
    let listed: Vec<Value> = ws["list"].as_array().cloned().unwrap_or_default();
    let health_of = |pid: u32| {
        let mark = format!("-{pid}-");
        listed
            .iter()
            .find(|w| w["id"].as_str().unwrap_or("").contains(&mark))
            .unwrap_or_else(|| panic!("no worker of pid {pid} in {health}"))
            .clone()
    };
    assert_eq!(health_of(plain)["labels"], json!({}), "{health}");
    assert_eq!(health_of(flag_pid)["labels"], eu_gpu, "{health}");
    let slots = u64::from(c.settings.concurrency);
    assert_eq!(
        ws["label_sets"],
        json!([
            {"labels": {}, "canonical": "", "alive": 1, "slots_busy": 0, "slots_total": slots},
            {"labels": eu_gpu, "canonical": "gpu=true,region=eu", "alive": 2, "slots_busy": 0,
             "slots_total": 2 * slots},
        ]),
        "{health}"
    );

    let text = c
        .http
        .get(c.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    for line in [
        "dagrid_workers_alive 3",
        "dagrid_workers_alive_by_labels{labels=\"\"} 1",
        "dagrid_workers_alive_by_labels{labels=\"gpu=true,region=eu\"} 2",
        &format!(
            "dagrid_worker_slots_by_labels{{labels=\"gpu=true,region=eu\"}} {}",
            2 * slots
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    let doc = c.get_json("/api/v1/openapi.json").await;
    for schema in ["Heartbeat", "WorkerHealth", "LabelSetHealth"] {
        let labels = &doc["components"]["schemas"][schema]["properties"]["labels"];
        assert_eq!(labels["type"], "object", "{schema}: {labels}");
        assert_eq!(
            labels["additionalProperties"]["type"], "string",
            "{schema}: {labels}"
        );
    }
    let sets = &doc["components"]["schemas"]["WorkersHealth"]["properties"]["label_sets"];
    assert_eq!(sets["type"], "array", "{sets}");

    let out = Command::new(env!("CARGO_BIN_EXE_dagrid"))
        .args(["workers", "--server", &c.api])
        .output()
        .expect("run dagrid workers");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with(" LABELS"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    for (pid, labels) in [
        (plain, " -"),
        (flag_pid, " gpu=true,region=eu"),
        (env_pid, " gpu=true,region=eu"),
    ] {
        let mark = format!("-{pid}-");
        let line = lines.iter().find(|l| l.contains(&mark)).expect("listed");
        assert!(line.ends_with(labels), "{pid}: {table}");
    }
}

/// Runs `dagrid worker <args>` (with `env`) against a Redis that never answers, waits for it
/// to exit (at most 20 s) and returns its exit code and stderr.
fn worker_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagrid"))
        .arg("worker")
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .args(args)
        .env_remove("DAGRID_WORKER_LABELS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dagrid worker");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("stderr");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dagrid worker {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_label_stops_the_worker_naming_the_flag_and_the_rule() {
    let none: &[(&str, &str)] = &[];
    for (args, env, rule) in [
        (&["--label", "gpu"][..], none, "no '='"),
        (&["--label", "a b=1"][..], none, "use 1 to 63 letters"),
        (
            &["--label", "gpu=1", "--label", "gpu=2"][..],
            none,
            "\"gpu\" is given twice",
        ),
        (
            &[][..],
            &[("DAGRID_WORKER_LABELS", "gpu=1,gpu=2")][..],
            "\"gpu\" is given twice",
        ),
        (
            &[][..],
            &[("DAGRID_WORKER_LABELS", "gpu=true,eu")][..],
            "\"eu\" has no '='",
        ),
    ] {
        let (code, err) = worker_exit(args, env);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{args:?} {env:?}: {code:?} {err}"
        );
        assert!(
            err.contains("--label") && err.contains(rule),
            "{args:?} {env:?}: {err}"
        );
    }
}
