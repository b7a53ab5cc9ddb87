//! `dagrid submit --wait` under many parallel submits of runs that end at once: every one
//! returns, with the run's outcome as its exit status (issue 15: 11 of 2,700 never returned).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Cluster;

const FAILS: &str = "name: fails\nsteps:\n  - name: boom\n    command: \"false\"\n";
const PASSES: &str = "name: passes\nsteps:\n  - name: ok\n    command: \"true\"\n";

/// Clients at once: at most the 32 event streams a caller may hold, so every client follows
/// its run by the event stream (the path that hung), not by polling.
const PARALLEL: usize = 24;
/// Submits per DAG.
const PER_DAG: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_submit_wait_of_instant_runs_always_returns() {
    let c = Cluster::start_with(
        &[("fails.yaml", FAILS), ("passes.yaml", PASSES)],
        common::Options {
            concurrency: 8,
            ..Default::default()
        },
    )
    .await;
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..PER_DAG * 2 {
        let (dag, want_ok) = if i % 2 == 0 {
            ("fails", false)
        } else {
            ("passes", true)
        };
        let api = c.api.clone();
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let child = tokio::process::Command::new(common::dagrid_bin())
                .args(["submit", dag, "--server", &api, "--wait"])
                .env("RUST_LOG", "dagrid=debug")
                .kill_on_drop(true)
                .output();
            match tokio::time::timeout(Duration::from_secs(30), child).await {
                Ok(out) => {
                    let out = out.expect("dagrid runs");
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    Ok((dag, want_ok, out.status.success(), stderr))
                }
                Err(_) => Err(dag),
            }
        });
    }
    let (mut hung, mut wrong) = (Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok((dag, want, got, stderr)) if want != got => wrong.push(format!("{dag}: {stderr}")),
            Ok(_) => {}
            Err(dag) => hung.push(dag),
        }
    }
    assert!(
        hung.is_empty(),
        "{} of {} `submit --wait` never returned: {hung:?}",
        hung.len(),
        PER_DAG * 2
    );
    assert!(wrong.is_empty(), "wrong exit status: {wrong:#?}");
    c.stop().await;
}
