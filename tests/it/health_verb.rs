//! `dagrid health`: exit code 0 against a ready coordinator, 1 with a clear message against an
//! address where nothing listens and against a coordinator whose Redis is gone.

use crate::common;

use std::time::Duration;

use common::{dagrid_bin, Cluster};

/// Runs `dagrid health --server <server> [extra…]`: its exit code, stdout and stderr.
async fn health(server: &str, extra: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(dagrid_bin())
        .arg("health")
        .args(["--server", server])
        .args(extra)
        .env_remove("DAGRID_SERVER")
        .output()
        .await
        .expect("dagrid health runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_when_ready_and_non_zero_with_the_reason_otherwise() {
    let mut cluster = Cluster::start(&[]).await;

    let (code, out, err) = health(&cluster.api, &[]).await;
    assert_eq!(code, 0, "ready coordinator: stdout {out} stderr {err}");
    assert!(
        out.contains("ready:") && out.contains("/health/ready"),
        "{out}"
    );
    let (code, out, _) = health(&format!("{}/", cluster.api), &["--live"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("/health/live"), "{out}");

    // Nothing listens on a port just freed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (code, out, err) = health(&format!("http://{dead}"), &[]).await;
    assert_eq!(code, 1, "dead address: stdout {out} stderr {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("cannot reach http://{dead}/health/ready"))
            && err.contains("--server"),
        "{err}"
    );

    // Redis gone: the coordinator is live but not ready, and the body's reason is shown.
    cluster.stop_redis().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (code, err) = loop {
        let (code, _, err) = health(&cluster.api, &[]).await;
        if code != 0 || tokio::time::Instant::now() > deadline {
            break (code, err);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not ready") && err.contains("503") && err.contains("redis"),
        "{err}"
    );
    let (code, _, err) = health(&cluster.api, &["--live"]).await;
    assert_eq!(code, 0, "still live without Redis: {err}");

    cluster.start_redis(false).await;
    cluster.stop().await;
}
