//! Helpers shared by the worker's test binaries: a private Redis, step tasks, and the
//! processes of a step.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use dagrid_shared::model::{self, Heartbeat, StepReport, StepTask};
use dagrid_shared::redis::conn::ensure_group;
use dagrid_shared::redis::embedded::EmbeddedRedis;
use dagrid_shared::redis::keys::{COORDINATOR_GROUP, WORKER_GROUP};
use dagrid_shared::Redis;
use redis::streams::StreamRangeReply;
use redis::Value;

/// A private Redis and a handle on namespace `t`, with the consumer groups of every ready
/// stream and of the results stream.
pub async fn setup() -> (EmbeddedRedis, Redis) {
    let server = EmbeddedRedis::start(Default::default()).await.unwrap();
    let redis = Redis::open(&server.url(), "t").unwrap();
    for ready in redis.keys().ready_levels() {
        ensure_group(&redis, &ready, WORKER_GROUP).await.unwrap();
    }
    ensure_group(&redis, &redis.keys().results(), COORDINATOR_GROUP)
        .await
        .unwrap();
    (server, redis)
}

/// Attempt 1 of step `step` of run `run-1`, running `command`.
pub fn task(step: &str, command: &str) -> StepTask {
    StepTask {
        run_id: "run-1".into(),
        dag: "dag-a".into(),
        step: step.into(),
        attempt: 1,
        token: format!("token-{step}"),
        command: Some(command.into()),
        script: None,
        shell: None,
        dir: None,
        env: Vec::new(),
        expand: Vec::new(),
        args: Vec::new(),
        output: None,
        queued_ms: model::now_ms(),
        priority: Default::default(),
        timeout_ms: None,
        stop_signal: None,
        cleanup_ms: 5_000,
        ignore_preconditions: false,
        preconditions: vec![],
        dag_preconditions: vec![],
        continue_on_output: vec![],
        repeat: None,
        call: None,
        max_output_size: None,
        repeats: 0,
        dag_values: Default::default(),
    }
}

/// A step that runs until stopped, as a shell with a background child, writing the shell's pid
/// to `<dir>/sh.pid` and the child's to `<dir>/bg.pid`; `prelude` runs first (`trap '' TERM`).
pub fn long_step(step: &str, dir: &Path, prelude: &str) -> StepTask {
    let command = format!(
        "{prelude}echo $$ > '{sh}'; sleep 60 & echo $! > '{bg}'; wait",
        sh = dir.join("sh.pid").display(),
        bg = dir.join("bg.pid").display(),
    );
    task(step, &command)
}

/// The pids `long_step` wrote, once both files are complete.
pub async fn step_pids(dir: &Path) -> [i32; 2] {
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

/// True while process `pid` runs: it exists and is not a zombie (an orphan whose parent does
/// not reap it stays a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        !matches!(state, "Z" | "X")
    })
}

/// The last heartbeat of worker `id`, when its key has not expired.
pub async fn heartbeat(redis: &Redis, id: &str) -> Option<Heartbeat> {
    let mut c = redis.conn().await.unwrap();
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(redis.keys().worker(id))
        .query_async(&mut *c)
        .await
        .unwrap();
    bytes.map(|b| model::decode(&b).unwrap())
}

/// Every report on the results stream (field `r`), in order.
pub async fn reports(redis: &Redis) -> Vec<StepReport> {
    let mut c = redis.conn().await.unwrap();
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(redis.keys().results())
        .arg("-")
        .arg("+")
        .query_async(&mut *c)
        .await
        .unwrap();
    range
        .ids
        .iter()
        .map(|e| match e.map.get("r") {
            Some(Value::BulkString(b)) => model::decode(b).unwrap(),
            other => panic!("unexpected report field {other:?}"),
        })
        .collect()
}
