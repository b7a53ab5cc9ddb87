//! End-to-end tests of the worker against a real redis-server (one per test).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{alive, heartbeat, long_step, reports, setup, step_pids, task};
use dagrid_shared::dag::Priority;
use dagrid_shared::model::{self, ReportKind, StepReport, StepTask};
use dagrid_shared::redis::keys::WORKER_GROUP;
use dagrid_shared::Redis;
use dagrid_worker::Config;
use redis::streams::StreamRangeReply;
use redis::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn config(id: &str, log_dir: &Path) -> Config {
    Config {
        concurrency: 2,
        log_dir: log_dir.to_path_buf(),
        heartbeat_interval: Duration::from_millis(200),
        worker_id: Some(id.into()),
        ..Config::default()
    }
}

fn start(
    redis: &Redis,
    config: Config,
) -> (
    CancellationToken,
    JoinHandle<Result<(), dagrid_worker::Error>>,
) {
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(dagrid_worker::run(redis.clone(), config, shutdown.clone()));
    (shutdown, handle)
}

async fn enqueue_raw(redis: &Redis, payload: &[u8]) -> String {
    enqueue_fields(redis, 5, &[("t", payload)]).await
}

/// XADD of an entry with these fields to the ready stream of `level`.
async fn enqueue_fields(redis: &Redis, level: u8, fields: &[(&str, &[u8])]) -> String {
    let mut c = redis.conn().await.unwrap();
    redis::cmd("XADD")
        .arg(redis.keys().ready(level))
        .arg("*")
        .arg(fields)
        .query_async(&mut *c)
        .await
        .unwrap()
}

/// Queues `task` on the ready stream of its priority.
async fn enqueue(redis: &Redis, task: &StepTask) -> String {
    let payload = model::encode(task).unwrap();
    enqueue_fields(redis, task.priority.get(), &[("t", &payload)]).await
}

/// Queues every task on the ready stream of its priority, in order, in one pipeline.
async fn enqueue_all(redis: &Redis, tasks: &[StepTask]) {
    let mut pipe = redis::pipe();
    for task in tasks {
        pipe.cmd("XADD")
            .arg(redis.keys().ready(task.priority.get()))
            .arg("*")
            .arg("t")
            .arg(model::encode(task).unwrap())
            .ignore();
    }
    let mut c = redis.conn().await.unwrap();
    pipe.query_async::<()>(&mut *c).await.unwrap();
}

/// Waits until `n` final reports are on the results stream, and returns every report.
async fn wait_for_finals(redis: &Redis, n: usize) -> Vec<StepReport> {
    wait_for_finals_within(redis, n, Duration::from_secs(15)).await
}

/// [`wait_for_finals`], failing after `timeout`.
async fn wait_for_finals_within(redis: &Redis, n: usize, timeout: Duration) -> Vec<StepReport> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = reports(redis).await;
        if all.iter().filter(|r| r.kind != ReportKind::Started).count() >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "only these reports arrived: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn final_of<'a>(all: &'a [StepReport], step: &str) -> &'a StepReport {
    all.iter()
        .find(|r| r.step == step && r.kind != ReportKind::Started)
        .unwrap_or_else(|| panic!("no final report for {step} in {all:?}"))
}

async fn int(redis: &Redis, cmd: &redis::Cmd) -> i64 {
    let mut c = redis.conn().await.unwrap();
    cmd.query_async(&mut *c).await.unwrap()
}

/// The number of entries pending in the workers' group on the ready stream of `level`.
async fn pending_at(redis: &Redis, level: u8) -> i64 {
    let mut c = redis.conn().await.unwrap();
    let summary: Vec<Value> = redis::cmd("XPENDING")
        .arg(redis.keys().ready(level))
        .arg(WORKER_GROUP)
        .query_async(&mut *c)
        .await
        .unwrap();
    match summary.first() {
        Some(Value::Int(n)) => *n,
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// The log tail a step's final report stored in Redis (field `tail` of its tail key).
async fn tail_of(redis: &Redis, run: &str, step: &str) -> Vec<u8> {
    let mut c = redis.conn().await.unwrap();
    redis::cmd("HGET")
        .arg(redis.keys().log_tail(run, step))
        .arg("tail")
        .query_async(&mut *c)
        .await
        .unwrap()
}

async fn pending_count(redis: &Redis) -> i64 {
    pending_at(redis, 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_two_steps_reports_them_and_deregisters() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let keys = redis.keys().clone();

    let mut a = task("a", "sleep 0.5; echo hello-a");
    a.output = Some("A_OUT".into());
    let b = task("b", "sleep 0.5; echo oops >&2; exit 2");
    enqueue(&redis, &a).await;
    enqueue(&redis, &b).await;

    let (shutdown, handle) = start(&redis, config("w-e2e", logs.path()));

    // The heartbeat exists while the worker runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let hb = loop {
        if let Some(hb) = heartbeat(&redis, "w-e2e").await {
            break hb;
        }
        assert!(Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(hb.worker_id, "w-e2e");
    assert_eq!(hb.slots_total, 2);
    assert_eq!(hb.pid, std::process::id());
    let ttl = int(&redis, redis::cmd("PTTL").arg(keys.worker("w-e2e"))).await;
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl}");

    let all = wait_for_finals(&redis, 2).await;
    let ra = final_of(&all, "a");
    assert_eq!(ra.kind, ReportKind::Succeeded);
    assert_eq!(ra.run_id, "run-1");
    assert_eq!(ra.attempt, 1);
    assert_eq!(ra.token, "token-a");
    assert_eq!(ra.worker, "w-e2e");
    assert_eq!(ra.exit_code, Some(0));
    assert_eq!(ra.output, Some(("A_OUT".into(), "hello-a".into())));
    let log_a = ra.log_path.clone().unwrap();
    assert_eq!(
        std::path::PathBuf::from(&log_a),
        logs.path().join("dag-a/run-1.a.1.log")
    );
    // Short and small: its whole output is the tail in Redis, and no file is made.
    assert!(!std::path::Path::new(&log_a).exists());
    assert_eq!(tail_of(&redis, "run-1", "a").await, b"hello-a\n");

    let rb = final_of(&all, "b");
    assert_eq!(rb.kind, ReportKind::Failed);
    assert_eq!(rb.exit_code, Some(2));
    assert_eq!(rb.error.as_deref(), Some("exited with code 2"));
    assert_eq!(rb.token, "token-b");

    // Both ran at once (concurrency 2).
    let (fa, fb) = (ra.finished_ms.unwrap(), rb.finished_ms.unwrap());
    assert!(ra.started_ms < fb && rb.started_ms < fa, "{ra:?} {rb:?}");

    // The tails are stored, and the ready entries are acknowledged and deleted.
    assert_eq!(tail_of(&redis, "run-1", "b").await, b"oops\n");
    assert_eq!(int(&redis, redis::cmd("XLEN").arg(keys.ready(5))).await, 0);
    assert_eq!(pending_count(&redis).await, 0);

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns after cancel")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(heartbeat(&redis, "w-e2e").await, None);
    let score: Option<f64> = {
        let mut c = redis.conn().await.unwrap();
        redis::cmd("ZSCORE")
            .arg(keys.workers())
            .arg("w-e2e")
            .query_async(&mut *c)
            .await
            .unwrap()
    };
    assert_eq!(score, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_steps_finish_and_report() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue(&redis, &task("slow", "sleep 1; echo finished")).await;
    let (shutdown, handle) = start(&redis, config("w-drain", logs.path()));

    // Wait until it started, then ask the worker to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reports(&redis)
        .await
        .iter()
        .any(|r| r.kind == ReportKind::Started)
    {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    // A step queued once the worker stopped claiming is left for others. (One that a read
    // already in flight returns is run: it was claimed.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = enqueue(&redis, &task("later", "true")).await;

    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    let all = reports(&redis).await;
    let slow = final_of(&all, "slow");
    assert_eq!(slow.kind, ReportKind::Succeeded);
    assert!(all.iter().all(|r| r.step != "later"), "{all:?}");
    let mut c = redis.conn().await.unwrap();
    let left: StreamRangeReply = redis::cmd("XRANGE")
        .arg(redis.keys().ready(5))
        .arg("-")
        .arg("+")
        .query_async(&mut *c)
        .await
        .unwrap();
    assert_eq!(
        left.ids.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [later]
    );
    drop(c);
    assert_eq!(pending_count(&redis).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_stops_at_once() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let (shutdown, handle) = start(&redis, config("w-idle", logs.path()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while heartbeat(&redis, "w-idle").await.is_none() {
        assert!(Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it settle into its blocking read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    // The blocking read (BLOCK 2 s) is woken with CLIENT UNBLOCK rather than waited out.
    assert!(
        cancelled.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        cancelled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_entry_is_acknowledged_and_deleted() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue_raw(&redis, b"not msgpack").await;
    // No field t, on another level: taken by the claim script anyway, and deleted there.
    enqueue_fields(&redis, 7, &[("x", b"1")]).await;
    enqueue(&redis, &task("good", "true")).await;
    let (shutdown, handle) = start(&redis, config("w-bad", logs.path()));
    let all = wait_for_finals(&redis, 1).await;
    assert_eq!(final_of(&all, "good").kind, ReportKind::Succeeded);
    for level in [5, 7] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while int(&redis, redis::cmd("XLEN").arg(redis.keys().ready(level))).await != 0 {
            assert!(Instant::now() < deadline, "level {level} keeps its entry");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pending_at(&redis, level).await, 0, "level {level}");
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_survives_a_redis_restart() {
    let (mut server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let (shutdown, handle) = start(&redis, config("w-restart", logs.path()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while heartbeat(&redis, "w-restart").await.is_none() {
        assert!(Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !handle.is_finished(),
        "the worker must not exit while Redis is down"
    );
    server.restart().await.unwrap();
    reconnect(&redis).await;

    enqueue(&redis, &task("after", "echo back")).await;
    let all = wait_for_finals(&redis, 1).await;
    assert_eq!(final_of(&all, "after").kind, ReportKind::Succeeded);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
}

/// `task` at priority `level`.
fn at(level: Priority, mut task: StepTask) -> StepTask {
    task.priority = level;
    task
}

/// Run-length form of a start order, for the test output: `H×50 then L×50`.
fn runs_of(order: &[String]) -> String {
    let mut runs: Vec<(char, usize)> = Vec::new();
    for name in order {
        let c = name.chars().next().unwrap_or('?');
        match runs.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => runs.push((c, 1)),
        }
    }
    runs.iter()
        .map(|(c, n)| format!("{c}×{n}"))
        .collect::<Vec<_>>()
        .join(" then ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_slot_takes_the_highest_priority_first() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let order = dir.path().join("order");

    // The only slot is busy until the test opens the gate, so everything below is queued
    // before it frees, whatever the machine's load.
    let blocker = format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display());
    enqueue(&redis, &task("gate", &blocker)).await;
    let (shutdown, handle) = start(
        &redis,
        Config {
            concurrency: 1,
            ..config("w-prio", logs.path())
        },
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reports(&redis)
        .await
        .iter()
        .any(|r| r.step == "gate" && r.kind == ReportKind::Started)
    {
        assert!(Instant::now() < deadline, "the gate step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each step appends its name to one file as it starts: one slot, so one at a time.
    let step = |name: String, level: Priority| {
        let command = format!("echo {name} >> '{}'", order.display());
        at(level, task(&name, &command))
    };
    let low: Vec<StepTask> = (0..50)
        .map(|i| step(format!("L{i:02}"), Priority::LOW))
        .collect();
    let high: Vec<StepTask> = (0..50)
        .map(|i| step(format!("H{i:02}"), Priority::HIGH))
        .collect();
    enqueue_all(&redis, &low).await;
    enqueue_all(&redis, &high).await;
    std::fs::write(&gate, b"").unwrap();

    let all = wait_for_finals_within(&redis, 101, Duration::from_secs(90)).await;
    assert!(
        all.iter()
            .filter(|r| r.kind != ReportKind::Started)
            .all(|r| r.kind == ReportKind::Succeeded),
        "{all:?}"
    );
    let started: Vec<String> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    eprintln!("start order: {}", runs_of(&started));
    eprintln!("start order (names): {}", started.join(" "));
    // Every high step before any low one, and each level oldest first.
    let expected: Vec<String> = high.iter().chain(&low).map(|t| t.step.clone()).collect();
    assert_eq!(started, expected);
    for level in [Priority::LOW, Priority::HIGH] {
        let key = redis.keys().ready(level.get());
        assert_eq!(int(&redis, redis::cmd("XLEN").arg(&key)).await, 0);
        assert_eq!(pending_at(&redis, level.get()).await, 0);
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_script_takes_the_most_urgent_entries() {
    let (_server, redis) = setup().await;
    let keys = redis.keys();
    let l1a = enqueue_fields(&redis, 1, &[("t", b"1a")]).await;
    let l1b = enqueue_fields(&redis, 1, &[("t", b"1b")]).await;
    let l6a = enqueue_fields(&redis, 6, &[("t", b"6a")]).await;
    let l6b = enqueue_fields(&redis, 6, &[("x", b"no t")]).await;
    let l9a = enqueue_fields(&redis, 9, &[("t", b"9a")]).await;

    let claim = |count: usize| {
        let mut call = dagrid_shared::redis::scripts::CLAIM.prepare_invoke();
        for key in keys.ready_levels() {
            call.key(key);
        }
        call.arg(WORKER_GROUP).arg("c1").arg(count);
        call
    };
    let mut c = redis.conn().await.unwrap();
    let got: Vec<Option<String>> = claim(4).invoke_async(&mut *c).await.unwrap();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        [
            s(&keys.ready(9)),
            s(&l9a),
            s("9a"),
            s(&keys.ready(6)),
            s(&l6a),
            s("6a"),
            s(&keys.ready(6)),
            s(&l6b),
            None,
            s(&keys.ready(1)),
            s(&l1a),
            s("1a"),
        ]
    );
    assert_eq!(pending_at(&redis, 6).await, 2);
    assert_eq!(pending_at(&redis, 1).await, 1);

    // A level that is gone (Redis lost it) holds nothing new: it is skipped (XLEN 0), and
    // the worker's blocking read, which follows an empty claim, reports NOGROUP.
    let _: () = redis::cmd("DEL")
        .arg(keys.ready(9))
        .query_async(&mut *c)
        .await
        .unwrap();
    let got: Vec<Option<String>> = claim(1).invoke_async(&mut *c).await.unwrap();
    assert_eq!(got, [s(&keys.ready(1)), s(&l1b), s("1b")]);
    assert_eq!(pending_at(&redis, 1).await, 2);
    // A level made again without its group (an XADD after the loss): an error, with nothing
    // claimed.
    let _: String = redis::cmd("XADD")
        .arg(keys.ready(9))
        .arg("*")
        .arg("t")
        .arg("9b")
        .query_async(&mut *c)
        .await
        .unwrap();
    let err = claim(4).invoke_async::<Value>(&mut *c).await.unwrap_err();
    assert_eq!(err.code(), Some("NOGROUP"), "{err}");
    assert_eq!(pending_at(&redis, 1).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_blocks_in_redis_and_wakes_on_new_work() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let (shutdown, handle) = start(&redis, config("w-wake", logs.path()));
    // Wait until its read is blocked in Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = redis.conn().await.unwrap();
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut *c)
            .await
            .unwrap();
        let blocked = clients.lines().any(|l| {
            l.split(' ').any(|f| f == "cmd=xreadgroup")
                && l.split(' ')
                    .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
        });
        if blocked {
            break;
        }
        assert!(Instant::now() < deadline, "no blocked read: {clients}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued_ms = model::now_ms();
    enqueue(
        &redis,
        &at(Priority::new(3).unwrap(), task("woken", "true")),
    )
    .await;
    let all = wait_for_finals(&redis, 1).await;
    let woken = final_of(&all, "woken");
    assert_eq!(woken.kind, ReportKind::Succeeded);
    // Taken by the blocked read at once, not after it timed out (BLOCK 2 s).
    let waited = woken.started_ms.saturating_sub(queued_ms);
    assert!(waited < 1500, "started {waited} ms after it was queued");
    assert_eq!(pending_at(&redis, 3).await, 0);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_settings_are_rejected_before_touching_redis() {
    // A URL nothing listens on: validation fails first.
    let redis = Redis::open("redis://127.0.0.1:1", "t").unwrap();
    let config = Config {
        concurrency: 0,
        ..Config::default()
    };
    let err = dagrid_worker::run(redis, config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, dagrid_worker::Error::InvalidConfig(_)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_inherit_what_step_env_lets_through_and_never_dagrid_settings() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let mut t = task("env", "env");
    // DAG-authored text asking for what is not inherited gets nothing; a param stays as it is.
    t.env = vec![
        ("ASKED".into(), "[${HOME}]".into()),
        ("P".into(), "${PATH}".into()),
    ];
    t.expand = vec![0];
    enqueue(&redis, &t).await;
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let allowing = Config {
        step_env: dagrid_worker::StepEnv {
            allow: vec!["PATH".into(), "CARGO*".into(), "DAGRID_*".into()],
            deny: vec!["CARGO_PKG_*".into()],
            secrets: vec![manifest_dir.into()],
        },
        ..config("w-env", logs.path())
    };
    let (shutdown, handle) = start(&redis, allowing);
    let all = wait_for_finals(&redis, 1).await;
    let report = final_of(&all, "env");
    assert_eq!(report.kind, ReportKind::Succeeded, "{report:?}");
    // The whole output: the tail in Redis (a short step that prints less than it holds gets
    // no log file).
    let env = String::from_utf8(tail_of(&redis, &t.run_id, "env").await).unwrap();
    assert!(
        env.len() < 16 * 1024,
        "the tail must hold all of it: {}",
        env.len()
    );
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"PATH"), "{env}");
    assert!(env.lines().any(|l| l == "ASKED=[]"), "{env}");
    assert!(env.lines().any(|l| l == "P=${PATH}"), "{env}");
    for name in names {
        assert!(
            [
                "PATH",
                "ASKED",
                "P",
                "DAG_RUN_LOG_FILE",
                "DAG_RUN_STEP_STDOUT_FILE"
            ]
            .contains(&name)
                || (name.starts_with("CARGO") && !name.starts_with("CARGO_PKG_")),
            "{name} was not allowed:\n{env}"
        );
    }
    assert!(
        !env.contains(manifest_dir),
        "a secret value reached the step:\n{env}"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    // A pattern that does not parse stops the worker before it touches Redis.
    let bad = Config {
        step_env: dagrid_worker::StepEnv {
            deny: vec!["AWS_[".into()],
            ..Default::default()
        },
        ..config("w-env-bad", logs.path())
    };
    let err = dagrid_worker::run(redis.clone(), bad, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, dagrid_worker::Error::StepEnvPattern(_)),
        "{err}"
    );
    assert!(err.to_string().contains("AWS_["), "{err}");
}

/// A running worker is non-dumpable, so a step running as its user cannot read the worker's
/// environment (the Redis URL, tokens) from `/proc/<worker pid>/environ`, nor its memory.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_is_not_dumpable() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue(&redis, &task("one", "true")).await;
    let (shutdown, handle) = start(&redis, config("w-dumpable", logs.path()));
    wait_for_finals(&redis, 1).await;
    // The worker runs in this process.
    assert!(!nix::sys::prctl::get_dumpable().unwrap());
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// Waits until none of `pids` runs; returns how long that took, or fails after `within`.
async fn gone_within(pids: &[i32], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if pids.iter().all(|&p| !alive(p)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "processes still running after {within:?}: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the step's Started report is on the results stream.
async fn wait_started(redis: &Redis, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reports(redis)
        .await
        .iter()
        .any(|r| r.step == step && r.kind == ReportKind::Started)
    {
        assert!(Instant::now() < deadline, "{step} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pending entries of the workers' group on the ready stream of `level`: (id, consumer,
/// idle ms, deliveries).
async fn pending_entries(redis: &Redis, level: u8) -> Vec<(String, String, u64, u64)> {
    let mut c = redis.conn().await.unwrap();
    redis::cmd("XPENDING")
        .arg(redis.keys().ready(level))
        .arg(WORKER_GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut *c)
        .await
        .unwrap()
}

/// The consumers of the workers' group on the ready stream of `level`.
async fn consumers(redis: &Redis, level: u8) -> Vec<String> {
    let mut c = redis.conn().await.unwrap();
    let info: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(redis.keys().ready(level))
        .arg(WORKER_GROUP)
        .query_async(&mut *c)
        .await
        .unwrap();
    info.into_iter()
        .filter_map(|m| m.get("name").cloned())
        .map(|v| redis::from_redis_value::<String>(v).unwrap())
        .collect()
}

/// Waits for `handle` to return Ok within `within`.
async fn stopped_within(
    handle: JoinHandle<Result<(), dagrid_worker::Error>>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(within, handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_entry_is_taken_away_is_killed_with_its_group() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(500);
    let entry = enqueue(&redis, &long_step("doomed", pids.path(), "")).await;
    let (shutdown, handle) = start(
        &redis,
        Config {
            heartbeat_interval: interval,
            ..config("w-lost", logs.path())
        },
    );
    wait_started(&redis, "doomed").await;
    let [sh, bg] = step_pids(pids.path()).await;
    assert!(alive(sh) && alive(bg));

    // What the reaper (or a stop of the run) does: acknowledge and delete the entry.
    let mut c = redis.conn().await.unwrap();
    let _: () = redis::pipe()
        .atomic()
        .cmd("XACK")
        .arg(redis.keys().ready(5))
        .arg(WORKER_GROUP)
        .arg(&entry)
        .ignore()
        .cmd("XDEL")
        .arg(redis.keys().ready(5))
        .arg(&entry)
        .ignore()
        .query_async(&mut *c)
        .await
        .unwrap();
    drop(c);
    // Noticed at the next heartbeat, then SIGTERM to the group; slack for a loaded machine.
    let took = gone_within(&[sh, bg], 2 * interval + Duration::from_millis(500)).await;
    eprintln!("the lost step's processes were gone {took:?} after its entry was taken");

    // No final report for it (the coordinator would drop it by token); the slot is free again.
    enqueue(&redis, &task("next", "echo next")).await;
    let all = wait_for_finals(&redis, 1).await;
    assert_eq!(final_of(&all, "next").kind, ReportKind::Succeeded);
    assert!(
        all.iter()
            .all(|r| r.step != "doomed" || r.kind == ReportKind::Started),
        "{all:?}"
    );
    assert_eq!(pending_count(&redis).await, 0);
    shutdown.cancel();
    stopped_within(handle, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_steps_entry_never_looks_idle() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(500);
    enqueue(&redis, &task("long", "sleep 3.5")).await;
    let (shutdown, handle) = start(
        &redis,
        Config {
            heartbeat_interval: interval,
            ..config("w-fresh", logs.path())
        },
    );
    wait_started(&redis, "long").await;
    let mut samples = 0;
    let mut most_idle = 0;
    let watched = Instant::now();
    loop {
        let pending = pending_entries(&redis, 5).await;
        if pending.is_empty() {
            break;
        }
        let (_, consumer, idle, deliveries) = &pending[0];
        assert_eq!(consumer, "w-fresh");
        assert_eq!(*deliveries, 1, "a refresh must not count as a delivery");
        most_idle = most_idle.max(*idle);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        watched.elapsed() > Duration::from_secs(3),
        "the step ended early"
    );
    assert!(samples > 20, "{samples} samples");
    assert!(
        most_idle < 2 * interval.as_millis() as u64,
        "the entry was idle for {most_idle} ms"
    );
    let all = wait_for_finals(&redis, 1).await;
    assert_eq!(final_of(&all, "long").kind, ReportKind::Succeeded);
    shutdown.cancel();
    stopped_within(handle, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_times_out_is_stopped_and_fails() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let mut slow = long_step("slow", pids.path(), "");
    slow.timeout_ms = Some(700);
    enqueue(&redis, &slow).await;
    let (shutdown, handle) = start(&redis, config("w-timeout", logs.path()));
    let all = wait_for_finals(&redis, 1).await;
    let r = final_of(&all, "slow");
    assert_eq!(r.kind, ReportKind::Failed);
    assert_eq!(r.exit_code, None);
    assert_eq!(
        r.error.as_deref(),
        Some("timed out after 700ms (step timeoutSec); stopped with SIGTERM")
    );
    let ran = r.finished_ms.unwrap() - r.started_ms;
    assert!((700..3000).contains(&ran), "ran {ran} ms");
    let [sh, bg] = step_pids(pids.path()).await;
    gone_within(&[sh, bg], Duration::from_secs(2)).await;
    assert_eq!(
        int(&redis, redis::cmd("XLEN").arg(redis.keys().ready(5))).await,
        0
    );
    assert_eq!(pending_count(&redis).await, 0);
    shutdown.cancel();
    stopped_within(handle, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_short_grace_hands_back_a_running_step() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    enqueue(&redis, &long_step("held", pids.path(), "")).await;
    let (shutdown, handle) = start(
        &redis,
        Config {
            shutdown_grace: Duration::from_millis(300),
            ..config("w-release", logs.path())
        },
    );
    wait_started(&redis, "held").await;
    let [sh, bg] = step_pids(pids.path()).await;
    shutdown.cancel();
    let took = stopped_within(handle, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    gone_within(&[sh, bg], Duration::from_millis(500)).await;

    let all = reports(&redis).await;
    let r = final_of(&all, "held");
    assert_eq!(r.kind, ReportKind::Released);
    assert_eq!(r.token, "token-held");
    assert_eq!(r.attempt, 1);
    assert_eq!(r.exit_code, None);
    assert_eq!(
        r.error.as_deref(),
        Some("handed back at worker shutdown; stopped with SIGTERM")
    );
    // The entry went with the report, and the consumer with the worker.
    assert_eq!(
        int(&redis, redis::cmd("XLEN").arg(redis.keys().ready(5))).await,
        0
    );
    assert_eq!(pending_count(&redis).await, 0);
    assert!(consumers(&redis, 5).await.is_empty());
    assert_eq!(heartbeat(&redis, "w-release").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_long_grace_lets_a_short_step_finish() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue(&redis, &task("short", "sleep 1.5; echo finished")).await;
    let (shutdown, handle) = start(
        &redis,
        Config {
            shutdown_grace: Duration::from_secs(30),
            ..config("w-grace", logs.path())
        },
    );
    wait_started(&redis, "short").await;
    shutdown.cancel();
    let took = stopped_within(handle, Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let all = reports(&redis).await;
    let r = final_of(&all, "short");
    assert_eq!(r.kind, ReportKind::Succeeded, "{r:?}");
    assert_eq!(pending_count(&redis).await, 0);
    assert!(consumers(&redis, 5).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_never_stops_a_running_step() {
    let (mut server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue(&redis, &task("through", "sleep 3; echo survived")).await;
    let (shutdown, handle) = start(&redis, config("w-outage", logs.path()));
    wait_started(&redis, "through").await;
    // Several heartbeats (and lease refreshes) fail while Redis is down.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!handle.is_finished());
    server.restart().await.unwrap();
    reconnect(&redis).await;
    let all = wait_for_finals(&redis, 1).await;
    let r = final_of(&all, "through");
    assert_eq!(r.kind, ReportKind::Succeeded, "{r:?}");
    shutdown.cancel();
    stopped_within(handle, Duration::from_secs(15)).await;
}

/// Waits until the test's own handle answers again after Redis restarted: its shared
/// connection is not checked before use, so the first command after the restart may fail
/// (and drops it).
async fn reconnect(redis: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.ping().await.is_err() {
        assert!(Instant::now() < deadline, "Redis never answered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids (`id=` fields) of the connected clients named `name` (`CLIENT LIST`).
async fn clients_named(redis: &Redis, name: &str) -> Vec<String> {
    let mut c = redis.conn().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut *c)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}

/// Waits until at least `n` clients are named `name`; returns their ids.
async fn wait_named(redis: &Redis, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = clients_named(redis, name).await;
        if ids.len() >= n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{} client(s) named {name}, not {n}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every connection a worker opens carries its id as its client name (issue 12, point 11), the
/// pooled ones and the blocking read's, and so do the ones it makes again after Redis closed
/// them; an id with a space is written `%20`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_worker_is_named_after_it_also_after_a_reconnect() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let (shutdown, handle) = start(&redis, config("w named", logs.path()));
    let name = dagrid_shared::redis::keys::worker_client_name("w named");
    assert_eq!(name, "w%20named");
    // The heartbeat's pooled connection and the blocking read's.
    let first = wait_named(&redis, &name, 2).await;
    let mut c = redis.conn().await.unwrap();
    for id in &first {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut *c)
            .await
            .unwrap();
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = clients_named(&redis, &name).await;
        if again.len() >= 2 && again.iter().all(|id| !first.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker's new connections are not named: {again:?} (killed {first:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It still works on its new connections.
    enqueue(&redis, &task("after", "true")).await;
    let all = wait_for_finals(&redis, 1).await;
    assert_eq!(final_of(&all, "after").kind, ReportKind::Succeeded);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// A worker that cannot renew its leases (Redis answers nothing: `CLIENT PAUSE … ALL`, its
/// connections staying open) stops its running step's process group before the lease is over
/// (issue 12, point 12) — the lease minus its margin, SIGKILL within half the margin — and
/// sends no report: the entry stays pending for the coordinators' reaper to take back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_stops_its_steps_before_the_lease_ends() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(2);
    let (shutdown, handle) = start(
        &redis,
        Config {
            heartbeat_interval: Duration::from_millis(200),
            lease_timeout: Some(lease),
            ..config("w-fenced", logs.path())
        },
    );
    // A step that ignores SIGTERM: only SIGKILL ends it.
    enqueue(&redis, &long_step("cut-off", pids.path(), "trap '' TERM; ")).await;
    wait_started(&redis, "cut-off").await;
    let step = step_pids(pids.path()).await;
    let mut c = redis.conn().await.unwrap();
    let pause = Duration::from_secs(4);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut *c)
        .await
        .unwrap();
    let paused = Instant::now();
    drop(c);
    // Fenced at most lease − 500 ms after the last renewal (≤ 200 ms before the pause), then
    // SIGKILL after 250 ms: dead before the lease ends, counted from the pause.
    let took = gone_within(&step, lease).await;
    assert!(
        paused.elapsed() < lease,
        "the step outlived the lease: {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "stopped only {took:?} after the pause: before its lease was near its end"
    );
    // Once Redis answers again, the worker reports the fenced attempt lost, which hands its
    // entry back at once (no coordinator has to wait two leases for a worker that came back).
    tokio::time::sleep(pause.saturating_sub(paused.elapsed()) + Duration::from_millis(800)).await;
    let finals: Vec<StepReport> = reports(&redis)
        .await
        .into_iter()
        .filter(|r| r.step == "cut-off" && r.kind != ReportKind::Started)
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].kind, ReportKind::Lost, "{finals:?}");
    let error = finals[0].error.as_deref().unwrap_or("");
    assert!(error.contains("could not renew its lease"), "{error}");
    let pending = pending_entries(&redis, Priority::NORMAL.get()).await;
    assert!(pending.is_empty(), "{pending:?}");
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// A step that ends within the started-report delay (50 ms) sends only its final report,
/// which carries its start time; a longer one sends `started` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_steps_still_running_after_the_delay_report_started() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    enqueue_all(&redis, &[task("quick", "true"), task("slow", "sleep 0.5")]).await;
    let (shutdown, handle) = start(&redis, config("w-started", logs.path()));
    let all = wait_for_finals(&redis, 2).await;
    let started: Vec<&str> = all
        .iter()
        .filter(|r| r.kind == ReportKind::Started)
        .map(|r| r.step.as_str())
        .collect();
    assert_eq!(started, ["slow"], "{all:?}");
    for step in ["quick", "slow"] {
        let r = final_of(&all, step);
        assert_eq!(r.kind, ReportKind::Succeeded, "{r:?}");
        assert!(
            r.started_ms > 0 && r.finished_ms >= Some(r.started_ms),
            "{r:?}"
        );
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// An idle worker sends one blocking read per block timeout (2 s) and no claim script after a
/// read that timed out empty; work queued then is still taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_sends_one_read_per_block_timeout() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let evalshas = || async {
        let mut c = redis.conn().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let (shutdown, handle) = start(&redis, config("w-quiet", logs.path()));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        evalshas().await <= 1,
        "claim scripts while idle: {}",
        evalshas().await
    );
    let queued_ms = model::now_ms();
    enqueue(&redis, &task("late", "true")).await;
    let all = wait_for_finals(&redis, 1).await;
    let late = final_of(&all, "late");
    assert_eq!(late.kind, ReportKind::Succeeded);
    assert!(late.started_ms.saturating_sub(queued_ms) < 1500, "{late:?}");
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
