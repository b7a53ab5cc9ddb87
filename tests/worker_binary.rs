//! `dagrid worker` runs as the small `dagrid-worker` binary when it sits next to `dagrid`
//! (exec, same pid, same flags), whose step supervisor is that binary too; without it, the
//! worker runs inside `dagrid` and says so.

#[path = "common/procs.rs"]
mod procs;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procs::{Cluster, Settings};
use serde_json::json;

/// The executable a process runs (`/proc/<pid>/exe`).
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("the process runs")
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagrid_worker_execs_the_worker_binary_and_it_supervises_its_own_steps() {
    let c = Cluster::start(
        &[("one.yaml", procs::one_step_dag("one"))],
        Settings {
            workers: 1,
            ..Settings::default()
        },
    )
    .await;
    let worker = c.workers[0].pid;
    assert_eq!(
        exe_of(worker),
        PathBuf::from(env!("CARGO_BIN_EXE_dagrid-worker")),
        "`dagrid worker` became `dagrid-worker` (same pid)"
    );
    let id = c.submit("one", json!({})).await;
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let supervisor = procs::step_processes_of(worker)
        .1
        .expect("the worker runs a step supervisor");
    assert_eq!(file_name(&exe_of(supervisor)), "dagrid-worker");
    assert!(
        c.workers[0]
            .find_line(&["running the worker in this process"])
            .is_none(),
        "{}",
        c.workers[0].tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_worker_binary_dagrid_runs_the_worker_itself_and_says_so() {
    let c = Cluster::start(
        &[("one.yaml", procs::one_step_dag("one"))],
        Settings {
            workers: 0,
            ..Settings::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("dagrid");
    std::fs::copy(env!("CARGO_BIN_EXE_dagrid"), &alone).unwrap();
    let log = dir.path().join("worker.log");
    let mut child = Command::new(&alone)
        .args(c.worker_args())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = false;
    while !said {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        said = procs::lines_of(&log)
            .iter()
            .any(|l| l.contains("running the worker in this process"));
    }
    assert_eq!(exe_of(child.id()), alone);
    let id = c.submit("one", json!({})).await;
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let _ = child.kill();
    let _ = child.wait();
}
