//! Call steps (sub-DAGs) on a real worker against a real redis-server: the worker runs no
//! process, it sends the expanded child runs to the coordinators through the results stream.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{heartbeat, reports, setup, task};
use dagrid_shared::dag::{Call, CallPlan, Condition, Parallel, ParallelItems};
use dagrid_shared::model::{self, Evaluate, ReportKind, Resolved, StepReport, StepTask};
use dagrid_shared::redis::keys::WORKER_GROUP;
use dagrid_shared::Redis;
use dagrid_worker::Config;
use redis::Value;

fn config(id: &str, log_dir: &Path) -> Config {
    Config {
        concurrency: 1,
        log_dir: log_dir.to_path_buf(),
        heartbeat_interval: Duration::from_millis(200),
        worker_id: Some(id.into()),
        ..Config::default()
    }
}

/// A call step `step` fanning DAG `per-file` out over `$FILES` (a JSON array of objects in
/// the step's env), with params from the item's fields.
fn call_task(step: &str) -> StepTask {
    let mut t = task(step, "");
    t.command = None;
    t.env = vec![
        ("FILES".into(), r#"[{"f":"a.txt"},{"f":"b.txt"}]"#.into()),
        ("MODE".into(), "fast".into()),
    ];
    t.call = Some(Call {
        dag: "per-file".into(),
        params: vec![
            (Some("FILE".into()), "${ITEM.f}".into()),
            (Some("MODE".into()), "${MODE}".into()),
        ],
        parallel: Some(Parallel {
            items: ParallelItems::Variable("${FILES}".into()),
            max_concurrent: 3,
        }),
    });
    t
}

async fn enqueue(redis: &Redis, task: &StepTask) {
    let mut c = redis.conn().await.unwrap();
    redis::cmd("XADD")
        .arg(redis.keys().ready(task.priority.get()))
        .arg("*")
        .arg("t")
        .arg(model::encode(task).unwrap())
        .query_async::<String>(&mut *c)
        .await
        .unwrap();
}

/// Waits until every step of `steps` has a report other than `started`, and returns them in
/// the order of `steps`.
async fn finals(redis: &Redis, steps: &[&str]) -> Vec<StepReport> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = reports(redis).await;
        let found: Vec<StepReport> = steps
            .iter()
            .filter_map(|s| {
                all.iter()
                    .find(|r| r.step == *s && r.kind != ReportKind::Started)
                    .cloned()
            })
            .collect();
        if found.len() == steps.len() {
            return found;
        }
        assert!(Instant::now() < deadline, "only these arrived: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn int(redis: &Redis, cmd: &redis::Cmd) -> i64 {
    let mut c = redis.conn().await.unwrap();
    cmd.query_async(&mut *c).await.unwrap()
}

/// A claimed call step ends with its ready entry acknowledged and deleted, a `call` report
/// carrying the expanded child runs on the results stream, no process and no log, and its slot
/// free: the one-slot worker then runs the next step. A call step that evaluates the run's
/// values expands against them and reports them. A call step whose precondition does not
/// hold is skipped instead, and one whose child DAG name is invalid fails, both as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_step_sends_its_child_runs_to_the_coordinators() {
    let (_server, redis) = setup().await;
    let logs = tempfile::tempdir().unwrap();
    let mut gated = call_task("gated");
    gated.preconditions = vec![Condition {
        condition: "$MODE".into(),
        expected: Some("slow".into()),
        negate: false,
    }];
    // The task that evaluates the run's values: a call step expands against them, and its
    // report carries them.
    let mut evaluated = call_task("evaluated");
    evaluated
        .env
        .push(("WHO".into(), "`echo ${MODE}-run`".into()));
    evaluated.dag_values.evaluate = Some(Evaluate {
        at: 0,
        env: vec![1, 2],
        params: Vec::new(),
    });
    evaluated.call = Some(Call {
        dag: "single".into(),
        params: vec![(None, "${WHO}".into())],
        parallel: None,
    });
    let mut bad = call_task("bad");
    bad.call.as_mut().unwrap().dag = "${NO_SUCH_VAR}".into();
    enqueue(&redis, &call_task("fan")).await;
    enqueue(&redis, &gated).await;
    enqueue(&redis, &evaluated).await;
    enqueue(&redis, &bad).await;
    enqueue(&redis, &task("after", "true")).await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(dagrid_worker::run(
        redis.clone(),
        config("w-call", logs.path()),
        shutdown.clone(),
    ));
    let got = finals(&redis, &["fan", "gated", "evaluated", "bad", "after"]).await;

    let fan = &got[0];
    assert_eq!(fan.kind, ReportKind::Call);
    assert_eq!(
        (fan.run_id.as_str(), fan.attempt, fan.token.as_str()),
        ("run-1", 1, "token-fan")
    );
    assert_eq!(fan.worker, "w-call");
    assert_eq!(fan.finished_ms, Some(fan.started_ms));
    assert_eq!((fan.exit_code, fan.log_path.as_deref()), (None, None));
    let named = |pairs: &[(&str, &str)]| -> Vec<(Option<String>, String)> {
        pairs
            .iter()
            .map(|(k, v)| (Some(k.to_string()), v.to_string()))
            .collect()
    };
    assert_eq!(
        fan.call,
        Some(CallPlan {
            dag: "per-file".into(),
            children: vec![
                named(&[("FILE", "a.txt"), ("MODE", "fast")]),
                named(&[("FILE", "b.txt"), ("MODE", "fast")]),
            ],
            parallel: Some(3),
        })
    );

    let gated = &got[1];
    assert_eq!(gated.kind, ReportKind::Skipped, "{gated:?}");
    assert_eq!(gated.call, None);
    let evaluated = &got[2];
    assert_eq!(evaluated.kind, ReportKind::Call, "{evaluated:?}");
    assert_eq!(
        evaluated.call,
        Some(CallPlan {
            dag: "single".into(),
            children: vec![vec![(None, "fast-run".into())]],
            parallel: None,
        })
    );
    assert_eq!(
        evaluated.resolved,
        Some(Resolved {
            env: vec!["fast".into(), "fast-run".into()],
            params: Vec::new(),
        })
    );
    let bad = &got[3];
    assert_eq!(bad.kind, ReportKind::Failed, "{bad:?}");
    let error = bad.error.as_deref().unwrap_or("");
    assert!(
        error.contains("child DAG's name") && error.contains("empty"),
        "{error}"
    );
    assert_eq!(got[4].kind, ReportKind::Succeeded, "the slot was freed");

    // Every entry acknowledged and deleted; the slot free.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = int(&redis, redis::cmd("XLEN").arg(redis.keys().ready(5))).await;
        let pending: Vec<Value> = {
            let mut c = redis.conn().await.unwrap();
            redis::cmd("XPENDING")
                .arg(redis.keys().ready(5))
                .arg(WORKER_GROUP)
                .query_async(&mut *c)
                .await
                .unwrap()
        };
        let busy = heartbeat(&redis, "w-call").await.map(|h| h.slots_busy);
        if ready == 0 && pending.first() == Some(&Value::Int(0)) && busy == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ready {ready}, pending {pending:?}, busy {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No process ran for the call step, so it wrote no log.
    let logs_of_fan = std::fs::read_dir(logs.path().join("dag-a"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".fan."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(logs_of_fan, 0);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
