//! `kill_running_steps` SIGKILLs every step process group of the process, so it has a test
//! binary of its own (it would kill the steps of tests running alongside).

use std::time::{Duration, Instant};

mod common;

use common::{alive, long_step, setup, step_pids};
use dagrid_shared::model::{self, StepTask};
use dagrid_worker::Config;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_running_steps_kills_every_step_process_group_at_once() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Ignores SIGTERM: only SIGKILL ends it.
    let task = StepTask {
        cleanup_ms: 60_000,
        ..long_step("stubborn", dir.path(), "trap '' TERM; ")
    };
    let mut c = redis.conn().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(redis.keys().ready(5))
        .arg("*")
        .arg("t")
        .arg(model::encode(&task).unwrap())
        .query_async(&mut *c)
        .await
        .unwrap();
    drop(c);

    let shutdown = CancellationToken::new();
    let config = Config {
        log_dir: logs.path().to_path_buf(),
        worker_id: Some("w-kill".into()),
        shutdown_grace: Duration::from_secs(60),
        ..Config::default()
    };
    let handle = tokio::spawn(dagrid_worker::run(redis.clone(), config, shutdown.clone()));
    let [sh, bg] = step_pids(dir.path()).await;
    assert!(alive(sh) && alive(bg));

    // A first signal: shutdown begins, the step has a long grace.
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(sh) && alive(bg));
    // A second signal: the process is about to exit.
    assert_eq!(dagrid_worker::kill_running_steps(), 1);
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive(sh) || alive(bg) {
        assert!(Instant::now() < deadline, "the step's processes survived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
}
