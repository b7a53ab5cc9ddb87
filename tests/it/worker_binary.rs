//! `dagrid worker` runs as the small `dagrid-worker` binary when it sits next to `dagrid`
//! (exec, same pid, same flags), whose step supervisor is that binary too; without it, the
//! worker runs inside `dagrid` and says so.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::dags::one_step_dag;
use common::os::{lines_of, step_processes_of};
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
        &[("one.yaml", one_step_dag("one"))],
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
    let supervisor = step_processes_of(worker)
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
    in_process_worker(None, "running the worker in this process").await;
}

/// A `dagrid-worker` of another build (a stale file left by an earlier install) is not exec'd,
/// nor used as the step supervisor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_binary_of_another_build_is_not_used() {
    in_process_worker(
        Some("#!/bin/sh\necho 0.0.0-other\n"),
        "of another build; not using it",
    )
    .await;
}

/// Starts `dagrid worker` from a copy of `dagrid` alone in a directory (with `sibling` as its
/// `dagrid-worker` when given), waits for its log to say `said`, and runs a step on it.
async fn in_process_worker(sibling: Option<&str>, said_line: &str) {
    let c = Cluster::start(
        &[("one.yaml", one_step_dag("one"))],
        Settings {
            workers: 0,
            ..Settings::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("dagrid");
    std::fs::copy(env!("CARGO_BIN_EXE_dagrid"), &alone).unwrap();
    if let Some(script) = sibling {
        use std::os::unix::fs::PermissionsExt;
        let fake = dir.path().join("dagrid-worker");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = dir.path().join("worker.log");
    // The copy just written can still be open for writing in a child that another thread of
    // this test process forked meanwhile (until that child's exec closes it): exec then fails
    // with ETXTBSY for a moment, so that is tried again.
    let mut tries = 0;
    let mut child = loop {
        let spawned = Command::new(&alone)
            .args(c.worker_args())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn();
        match spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.unwrap(),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = false;
    while !said {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        said = lines_of(&log).iter().any(|l| l.contains(said_line));
    }
    assert_eq!(exe_of(child.id()), alone);
    if sibling.is_some() {
        assert!(
            lines_of(&log)
                .iter()
                .any(|l| l.contains("running the worker in this process")),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let id = c.submit("one", json!({})).await;
    let run = c.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let _ = child.kill();
    let _ = child.wait();
}
