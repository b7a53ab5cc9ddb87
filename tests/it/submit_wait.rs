//! `dagrid submit --wait` under many parallel submits of runs that end at once: every one
//! returns, with the run's outcome as its exit status (issue 15: 11 of 2,700 never returned).

use crate::common;

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

/// The first event stream of `submit --wait` drops before any event came (a coordinator
/// restart, a proxy's timeout), while the run ends: the stream the client opens again cannot
/// resume (no event id), so the run's final events are gone. The client must read the states
/// again, not wait on the new stream, whose keep-alives would keep it waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_before_any_event_does_not_hang_submit_wait() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SLOW: &str = "name: slow\nsteps:\n  - name: nap\n    command: sleep 0.5\n";
    let c = Cluster::start(&[("slow.yaml", SLOW)]).await;
    let upstream: std::net::SocketAddr = c.api.trim_start_matches("http://").parse().unwrap();
    // A proxy whose first connection (the CLI's first request: the event stream) gets a
    // stream that says `ready` and ends 2 s later; every other connection is piped upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let mut conns = tokio::task::JoinSet::new();
    let accept = tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let fake = std::mem::take(&mut first);
            conns.spawn(async move {
                if fake {
                    let mut buf = vec![0u8; 4096];
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    assert!(
                        String::from_utf8_lossy(&buf[..n]).starts_with("GET /api/v1/events"),
                        "the first request opens the event stream"
                    );
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                connection: close\r\n\r\nevent: ready\ndata: {}\n\n";
                    let _ = client.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    return;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(common::dagrid_bin())
        .args(["submit", "slow", "--server", &proxy, "--wait"])
        .env("RUST_LOG", "dagrid=debug")
        .kill_on_drop(true)
        .output();
    // Well under the 20 s after which a quiet stream makes the client read the states anyway.
    let out = tokio::time::timeout(Duration::from_secs(10), child)
        .await
        .expect("submit --wait returns after its stream dropped")
        .expect("dagrid runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("succeeded"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    accept.abort();
    c.stop().await;
}
