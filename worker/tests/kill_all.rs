//! `kill_running_steps` SIGKILLs every step process group of the process, so it has a test
//! binary of its own (it would kill the steps of tests running alongside).

use std::path::Path;
use std::time::{Duration, Instant};

use dagrid_shared::conn::ensure_group;
use dagrid_shared::embedded::EmbeddedRedis;
use dagrid_shared::keys::{COORDINATOR_GROUP, WORKER_GROUP};
use dagrid_shared::model::{self, StepTask};
use dagrid_shared::Redis;
use dagrid_worker::Config;
use tokio_util::sync::CancellationToken;

/// True while process `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        !matches!(state, "Z" | "X")
    })
}

async fn pids(dir: &Path) -> [i32; 2] {
    let read = |name: &str| -> Option<i32> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        text.ends_with('\n').then(|| text.trim().parse().ok())?
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let (Some(sh), Some(bg)) = (read("sh.pid"), read("bg.pid")) {
            return [sh, bg];
        }
        assert!(Instant::now() < deadline, "the step never wrote its pids");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_running_steps_kills_every_step_process_group_at_once() {
    let server = EmbeddedRedis::start(Default::default()).await.unwrap();
    let redis = Redis::open(&server.url(), "t", 4).unwrap();
    for ready in redis.keys().ready_levels() {
        ensure_group(&redis, &ready, WORKER_GROUP).await.unwrap();
    }
    ensure_group(&redis, &redis.keys().results(), COORDINATOR_GROUP)
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Ignores SIGTERM: only SIGKILL ends it.
    let command = format!(
        "trap '' TERM; echo $$ > '{sh}'; sleep 60 & echo $! > '{bg}'; wait",
        sh = dir.path().join("sh.pid").display(),
        bg = dir.path().join("bg.pid").display(),
    );
    let task = StepTask {
        run_id: "run-1".into(),
        dag: "dag-a".into(),
        step: "stubborn".into(),
        attempt: 1,
        token: "token".into(),
        command: Some(command),
        script: None,
        shell: None,
        dir: None,
        env: Vec::new(),
        args: Vec::new(),
        output: None,
        queued_ms: model::now_ms(),
        priority: Default::default(),
        timeout_ms: None,
        stop_signal: None,
        cleanup_ms: 60_000,
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
    let [sh, bg] = pids(dir.path()).await;
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
