//! Tests of the run and step state machines (pure: no Redis).

use super::*;
use crate::model::{AttemptRecord, ReportKind};

const DIAMOND: &str = "name: d\nsteps:\n  - name: a\n    command: echo a\n    output: A\n  - name: b\n    depends: [a]\n    command: echo b\n  - name: c\n    depends: [a]\n    command: echo c\n  - name: d\n    depends: [b, c]\n    command: echo d\n";

fn run_of(dag: &Dag) -> (RunRecord, Vec<StepTask>) {
    let ctx = RunCtx {
        id: "r1",
        params: &[],
        priority: Priority::HIGH,
        resolved: None,
    };
    let (steps, tasks) = start(dag, ctx, 1);
    let run = RunRecord {
        parent: None,
        id: "r1".into(),
        dag: dag.name.clone(),
        spec: "x".into(),
        status: RunStatus::Queued,
        params: vec![],
        created_ms: 1,
        started_ms: None,
        finished_ms: None,
        version: 0,
        steps,
        priority: Priority::HIGH,
        selector: String::new(),
        queue: dag.name.clone(),
        dag_limit: 0,
        reason: None,
        due_ms: None,
        dedup_key: None,
        dedup_window_ms: 0,
        trigger: "api".into(),
        slot_ms: None,
        entries: BTreeMap::new(),
        auto_retries: 0,
        retry_at_ms: None,
        resolved: None,
    };
    (run, tasks)
}

fn report(task: &StepTask, kind: ReportKind, output: Option<(&str, &str)>) -> StepReport {
    StepReport {
        call: None,
        children: 0,
        run_id: task.run_id.clone(),
        step: task.step.clone(),
        attempt: task.attempt,
        token: task.token.clone(),
        worker: "w".into(),
        kind,
        started_ms: 5,
        finished_ms: Some(6),
        exit_code: Some(0),
        error: None,
        output: output.map(|(k, v)| (k.into(), v.into())),
        log_path: None,
        output_matched: false,
        repeat: false,
        resolved: None,
    }
}

fn apply(run: &mut RunRecord, t: &Transition) {
    for (name, st) in &t.changed {
        run.steps.insert(name.clone(), st.clone());
    }
    run.status = t.status;
}

#[test]
fn a_new_run_queues_only_its_roots() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (run, tasks) = run_of(&dag);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].step, "a");
    assert_eq!(run.steps["a"].status, StepStatus::Queued);
    assert_eq!(run.steps["d"].status, StepStatus::Pending);
}

#[test]
fn only_dag_authored_env_is_marked_for_expansion() {
    let yaml = "name: e\nparams:\n  - P: ${HOME}\nenv:\n  - D: <${P}>\nsteps:\n  - name: a\n    command: x\n    output: OUT\n  - name: b\n    depends: [a]\n    command: x\n    env:\n      - S: ${OUT}\n";
    let dag = Dag::parse(yaml, "e").unwrap();
    let params = [BoundParam {
        name: Some("P".into()),
        value: "${DAGRID_REDIS_URL}".into(),
    }];
    let ctx = RunCtx {
        id: "r1",
        params: &params,
        priority: Priority::HIGH,
        resolved: None,
    };
    let outputs = [("OUT".to_string(), "$(id)".to_string())];
    let b = dag.steps.iter().find(|s| s.name == "b").unwrap();
    let task = task(&dag, ctx, &outputs, b, &StepState::pending(), 1);
    let expanded: Vec<&str> = task
        .expand
        .iter()
        .map(|&i| task.env[i as usize].0.as_str())
        .collect();
    assert_eq!(expanded, ["D", "S"], "{:?}", task.env);
    assert!(task.expand.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(step_env(&task, "P"), Some("${DAGRID_REDIS_URL}"));
    assert_eq!(step_env(&task, "OUT"), Some("$(id)"));
}

#[test]
fn success_releases_dependants_with_outputs_in_their_env() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Succeeded, Some(("A", "1")))],
        9,
    );
    assert_eq!(t.status, RunStatus::Running);
    let names: Vec<&str> = t.tasks.iter().map(|t| t.step.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(t.tasks[0].env.contains(&("A".to_string(), "1".to_string())));
    apply(&mut run, &t);
    let t2 = advance(
        &dag,
        &run,
        &[report(&t.tasks[0], ReportKind::Succeeded, None)],
        10,
    );
    assert!(t2.tasks.is_empty(), "d still waits for c");
    apply(&mut run, &t2);
    let t3 = advance(
        &dag,
        &run,
        &[report(&t.tasks[1], ReportKind::Succeeded, None)],
        11,
    );
    assert_eq!(t3.tasks.len(), 1);
    apply(&mut run, &t3);
    let t4 = advance(
        &dag,
        &run,
        &[report(&t3.tasks[0], ReportKind::Succeeded, None)],
        12,
    );
    assert_eq!(t4.status, RunStatus::Succeeded);
    assert_eq!(t4.finished_ms, Some(12));
}

#[test]
fn failure_skips_everything_downstream_and_fails_the_run() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Failed, None)],
        9,
    );
    assert_eq!(t.status, RunStatus::Failed);
    for s in ["b", "c", "d"] {
        assert_eq!(t.changed[s].status, StepStatus::Skipped, "{s}");
    }
    assert!(t.tasks.is_empty());
}

#[test]
fn stale_and_duplicate_reports_change_nothing() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let mut stale = report(&tasks[0], ReportKind::Succeeded, None);
    stale.token = "not-the-token".into();
    let t = advance(&dag, &run, &[stale], 9);
    assert!(t.changed.is_empty() && t.tasks.is_empty());
    assert_eq!(t.ignored.len(), 1);
    let ok = report(&tasks[0], ReportKind::Succeeded, None);
    let t = advance(&dag, &run, std::slice::from_ref(&ok), 9);
    apply(&mut run, &t);
    let again = advance(&dag, &run, &[ok], 10);
    assert!(
        again.changed.is_empty() && again.tasks.is_empty(),
        "a duplicate releases nothing twice"
    );
}

const RETRY: &str = "name: r\nsteps:\n  - name: a\n    command: 'false'\n  - name: b\n    depends: [a]\n    command: 'true'\n";

fn with_retry(limit: u32, exit_codes: Vec<i32>) -> Dag {
    let mut dag = Dag::parse(RETRY, "r").unwrap();
    dag.steps[0].retry = Some(RetryPolicy {
        limit,
        interval_ms: 1_000,
        backoff_milli: 2_000,
        max_interval_ms: Some(3_000),
        exit_codes,
    });
    dag
}

fn failed(task: &StepTask, code: i32) -> StepReport {
    let mut r = report(task, ReportKind::Failed, None);
    r.exit_code = Some(code);
    r.error = Some(format!("exit {code}"));
    r
}

#[test]
fn a_failure_within_the_retry_limit_waits_in_the_delayed_set_with_backoff() {
    let dag = with_retry(3, vec![]);
    let (mut run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 100);
    // The attempt ran: the run is running (from that attempt's start) while it waits.
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.started_ms, Some(5));
    assert!(t.tasks.is_empty(), "nothing runs before the backoff");
    assert_eq!(t.retries.len(), 1);
    let r = &t.retries[0];
    assert_eq!(r.due_ms, 1_100);
    assert_eq!(r.task.attempt, 2);
    assert_ne!(r.task.token, tasks[0].token);
    assert_eq!(r.queued.status, StepStatus::Queued);
    assert_eq!(t.changed["a"].status, StepStatus::Retrying);
    assert_eq!(t.changed["a"].retry_at_ms, Some(1_100));
    assert_eq!(t.changed["a"].error.as_deref(), Some("exit 1"));
    apply(&mut run, &t);
    run.steps.insert("a".into(), r.queued.clone());
    // Second failure: 1 s × 2 = 2 s; third: capped at 3 s.
    let t2 = advance(&dag, &run, &[failed(&r.task, 1)], 200);
    assert_eq!(t2.retries[0].due_ms, 2_200);
    // A late report of the first attempt is stale.
    let late = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Succeeded, None)],
        300,
    );
    assert!(late.changed.is_empty());
    assert_eq!(late.ignored.len(), 1);
}

#[test]
fn retries_end_at_the_limit_and_only_for_listed_exit_codes() {
    let dag = with_retry(1, vec![2]);
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 100);
    assert!(t.retries.is_empty(), "exit 1 is not in exitCode");
    assert_eq!(t.status, RunStatus::Failed);
    let t = advance(&dag, &run, &[failed(&tasks[0], 2)], 100);
    assert_eq!(t.retries.len(), 1);
    let mut run2 = run;
    apply(&mut run2, &t);
    run2.steps.insert("a".into(), t.retries[0].queued.clone());
    let t = advance(&dag, &run2, &[failed(&t.retries[0].task, 2)], 200);
    assert!(t.retries.is_empty(), "limit 1 is used up");
    assert_eq!(t.status, RunStatus::Failed);
    assert_eq!(t.changed["b"].status, StepStatus::Skipped);
}

#[test]
fn a_lost_attempt_runs_again_at_once_until_the_lost_cap() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let mut task = tasks[0].clone();
    for n in 1..=LOST_RETRIES {
        let t = advance(&dag, &run, &[report(&task, ReportKind::Lost, None)], 50);
        assert_eq!(t.tasks.len(), 1, "loss {n} re-queues at once");
        assert_eq!(t.tasks[0].attempt, n + 1);
        assert_eq!(t.changed["a"].lost, n);
        apply(&mut run, &t);
        task = t.tasks[0].clone();
    }
    let t = advance(&dag, &run, &[report(&task, ReportKind::Lost, None)], 60);
    assert!(t.tasks.is_empty());
    assert_eq!(t.status, RunStatus::Failed);
    assert!(t.changed["a"]
        .error
        .as_deref()
        .unwrap()
        .contains("lost its worker"));
}

#[test]
fn a_lost_attempt_is_kept_as_lost_with_the_time_it_was_taken_back() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Started, None)],
        10,
    );
    apply(&mut run, &t);
    let mut lost = report(&tasks[0], ReportKind::Lost, None);
    lost.started_ms = 0;
    lost.finished_ms = Some(40);
    lost.exit_code = None;
    lost.error = Some("worker w stopped sending heartbeats".into());
    let t = advance(&dag, &run, &[lost], 50);
    let a = &t.changed["a"];
    assert_eq!((a.status, a.attempt), (StepStatus::Queued, 2));
    let rec = &a.history[0];
    assert_eq!(rec.attempt, 1);
    assert_eq!(rec.status, StepStatus::Lost, "{rec:?}");
    assert_eq!(rec.finished_ms, Some(40), "the time it was taken back");
    assert_eq!(rec.started_ms, Some(5), "its start stays");
    assert_eq!(rec.worker.as_deref(), Some("w"));
    assert!(rec.error.as_deref().unwrap().contains("heartbeats"));
    // Never queued or started: lost all the same, taken back now when the report has no time.
    let (run, tasks) = run_of(&dag);
    let mut lost = report(&tasks[0], ReportKind::Lost, None);
    lost.finished_ms = None;
    let t = advance(&dag, &run, &[lost], 70);
    let rec = &t.changed["a"].history[0];
    assert_eq!((rec.status, rec.finished_ms), (StepStatus::Lost, Some(70)));
}

#[test]
fn a_released_attempt_keeps_its_number_with_a_new_token() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Released, None)],
        50,
    );
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].attempt, 1);
    assert_ne!(t.tasks[0].token, tasks[0].token);
}

#[test]
fn a_stop_aborts_every_unfinished_step_and_removes_its_ready_entry() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (mut run, _) = run_of(&dag);
    run.entries.insert("a".into(), "1-0".into());
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped on request", 70).unwrap();
    assert_eq!(t.status, RunStatus::Aborted);
    assert_eq!(t.ack_entries, vec![("a".to_string(), "1-0".to_string())]);
    assert_eq!(t.changed.len(), 4);
    assert!(t.changed.values().all(|s| s.status == StepStatus::Aborted));
    run.status = RunStatus::Succeeded;
    assert!(stop(&dag, &run, RunStatus::Aborted, "x", 80).is_none());
}

#[test]
fn events_count_each_attempt_once() {
    let yaml = "name: e\nsteps:\n  - name: a\n    command: x\n    retryPolicy:\n      limit: 1\n";
    let dag = Dag::parse(yaml, "e").unwrap();
    let (mut run, tasks) = run_of(&dag);
    // Started, then the duplicate started: one start.
    let started = report(&tasks[0], ReportKind::Started, None);
    let t = advance(&dag, &run, &[started.clone(), started], 2);
    assert_eq!(
        t.events,
        StepEvents {
            started: 1,
            ..Default::default()
        }
    );
    apply(&mut run, &t);
    // A lost attempt: reclaimed and retried at once.
    let t = advance(&dag, &run, &[report(&tasks[0], ReportKind::Lost, None)], 3);
    assert_eq!((t.events.reclaimed, t.events.retried), (1, 1));
    apply(&mut run, &t);
    // The next attempt fails without a `started` first: it started and failed, no retry
    // left; a stale report of the lost attempt counts nothing.
    let mut failed = report(&t.tasks[0], ReportKind::Failed, None);
    failed.exit_code = Some(1);
    let stale = report(&tasks[0], ReportKind::Succeeded, None);
    let t = advance(&dag, &run, &[stale, failed], 4);
    assert_eq!(
        t.events,
        StepEvents {
            started: 1,
            failed: 1,
            ..Default::default()
        }
    );
    assert_eq!(t.status, RunStatus::Failed);
}

const HANDLED: &str = "name: h\nsteps:\n  - name: a\n    command: x\nhandlerOn:\n  success:\n    command: s\n  failure:\n    command: f\n  cancel:\n    command: c\n  exit:\n    command: e\n";

/// The value of `key` in a task's env.
fn step_env<'a>(task: &'a StepTask, key: &str) -> Option<&'a str> {
    task.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Runs the only task to `kind`, returning the transition.
fn finish_only(
    dag: &Dag,
    run: &mut RunRecord,
    task: &StepTask,
    kind: ReportKind,
    now: u64,
) -> Transition {
    let failed = kind == ReportKind::Failed;
    let mut r = report(task, kind, None);
    if failed {
        r.exit_code = Some(1);
    }
    let t = advance(dag, run, &[r], now);
    apply(run, &t);
    t
}

/// Runs the task the last transition queued (its first) to `kind`, returning the transition.
fn finish_next(
    dag: &Dag,
    run: &mut RunRecord,
    t: &Transition,
    kind: ReportKind,
    now: u64,
) -> Transition {
    let next = t.tasks[0].clone();
    finish_only(dag, run, &next, kind, now)
}

/// Fails `task` (exit 1) at `now`, then runs every handler that queues (`onFailure`, then
/// `onExit`) to success, 1 ms apart; returns the last transition (the run's end).
fn fail_then_handlers(dag: &Dag, run: &mut RunRecord, task: &StepTask, now: u64) -> Transition {
    let mut t = finish_only(dag, run, task, ReportKind::Failed, now);
    let mut at = now;
    while let Some(next) = t.tasks.first().cloned() {
        at += 1;
        t = finish_only(dag, run, &next, ReportKind::Succeeded, at);
    }
    t
}

#[test]
fn success_runs_on_success_then_on_exit_and_the_run_waits_for_them() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Succeeded, 10);
    assert_eq!(t.status, RunStatus::Running, "handlers run before the end");
    assert_eq!(t.finished_ms, None);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "onSuccess");
    assert_eq!(t.tasks[0].command.as_deref(), Some("s"));
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("succeeded"));
    assert_eq!(t.changed["onSuccess"].handler, Some(HandlerOn::Success));
    assert_eq!(t.changed["onSuccess"].status, StepStatus::Queued);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 11);
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "onExit");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("succeeded"));
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 12);
    assert!(t.tasks.is_empty());
    assert_eq!(t.status, RunStatus::Succeeded);
    assert_eq!(t.finished_ms, Some(12));
    assert!(!run.steps.contains_key("onFailure") && !run.steps.contains_key("onCancel"));
}

#[test]
fn failure_runs_on_failure_then_on_exit_and_the_run_fails() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 10);
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.tasks[0].step, "onFailure");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("failed"));
    // A failing failure handler: the exit handler still runs, the run still fails.
    let t = finish_next(&dag, &mut run, &t, ReportKind::Failed, 11);
    assert_eq!(t.tasks[0].step, "onExit");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("failed"));
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 12);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn a_retry_runs_the_handlers_again_once_the_main_steps_are_final() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = fail_then_handlers(&dag, &mut run, &tasks[0], 10);
    assert_eq!(t.status, RunStatus::Failed);
    assert_eq!(run.steps["onFailure"].status, StepStatus::Succeeded);

    let t = retry(&dag, &run, &RetrySelection::default(), 20).unwrap();
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.tasks.len(), 1, "only the failed main step is queued");
    assert_eq!(t.tasks[0].step, "a");
    for handler in ["onFailure", "onExit"] {
        let s = &t.changed[handler];
        assert_eq!(s.status, StepStatus::Pending, "{handler}");
        assert_eq!(s.history.len(), 1, "{handler}: its attempt is kept");
    }
    apply(&mut run, &t);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 21);
    assert_eq!(t.tasks[0].step, "onSuccess");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("succeeded"));
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 22);
    assert_eq!(t.tasks[0].step, "onExit");
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 23);
    assert_eq!(t.status, RunStatus::Succeeded);
}

#[test]
fn a_failed_handler_fails_a_successful_run_and_exit_still_runs() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Succeeded, 10);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Failed, 11);
    assert_eq!(t.tasks[0].step, "onExit");
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 12);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn only_the_exit_handler_runs_when_the_outcome_has_none() {
    let yaml = "name: x\nsteps:\n  - name: a\n    command: x\nhandler_on:\n  exit:\n    name: cleanup\n    command: e\n";
    let dag = Dag::parse(yaml, "x").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 10);
    assert_eq!(t.tasks[0].step, "cleanup");
    assert_eq!(t.changed["cleanup"].handler, Some(HandlerOn::Exit));
    let t = finish_next(&dag, &mut run, &t, ReportKind::Failed, 11);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn a_stop_runs_on_cancel_then_on_exit_and_the_run_ends_aborted() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let started = report(&tasks[0], ReportKind::Started, None);
    let t = advance(&dag, &run, &[started], 5);
    apply(&mut run, &t);
    assert_eq!(run.status, RunStatus::Running);
    run.entries.insert("a".into(), "1-0".into());
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped on request", 20).unwrap();
    assert_eq!(
        t.status,
        RunStatus::Running,
        "the run waits for its handlers"
    );
    assert_eq!(t.finished_ms, None);
    assert_eq!(t.changed["a"].status, StepStatus::Aborted);
    assert_eq!(t.ack_entries, vec![("a".to_string(), "1-0".to_string())]);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "onCancel");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("aborted"));
    apply(&mut run, &t);
    run.entries.clear();
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 21);
    assert_eq!(t.tasks[0].step, "onExit");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("aborted"));
    let exit = t.tasks[0].clone();
    // A second stop aborts the exit handler and ends the run.
    let t2 = stop(&dag, &run, RunStatus::Aborted, "stopped again", 22).unwrap();
    assert_eq!(t2.status, RunStatus::Aborted);
    assert!(t2.tasks.is_empty());
    assert_eq!(t2.changed["onExit"].status, StepStatus::Aborted);
    // Without it, the exit handler's end ends the run aborted.
    let t = finish_only(&dag, &mut run, &exit, ReportKind::Succeeded, 23);
    assert_eq!(t.status, RunStatus::Aborted);
    assert_eq!(t.finished_ms, Some(23));
}

#[test]
fn a_stop_during_a_handler_aborts_it_and_still_runs_exit_once() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Succeeded, 10);
    assert_eq!(t.tasks[0].step, "onSuccess");
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped", 11).unwrap();
    assert_eq!(t.changed["onSuccess"].status, StepStatus::Aborted);
    assert_eq!(t.tasks[0].step, "onExit");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("aborted"));
    apply(&mut run, &t);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 12);
    assert_eq!(t.status, RunStatus::Aborted);
}

#[test]
fn a_timeout_runs_the_abort_handler_and_the_run_fails() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Started, None)],
        5,
    );
    apply(&mut run, &t);
    let t = stop(&dag, &run, RunStatus::Failed, "timed out", 20).unwrap();
    assert_eq!(t.tasks[0].step, "onCancel");
    assert_eq!(step_env(&t.tasks[0], "DAG_RUN_STATUS"), Some("failed"));
    apply(&mut run, &t);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 21);
    assert_eq!(t.tasks[0].step, "onExit");
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 22);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn a_run_stopped_before_it_started_runs_no_handler() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (run, _) = run_of(&dag);
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped", 20).unwrap();
    assert_eq!(t.status, RunStatus::Aborted);
    assert!(t.tasks.is_empty());
}

#[test]
fn reset_handlers_makes_them_run_again() {
    let dag = Dag::parse(HANDLED, "h").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = fail_then_handlers(&dag, &mut run, &tasks[0], 10);
    assert_eq!(t.status, RunStatus::Failed);
    // What a manual retry does: the failed step and the handlers go back to pending.
    let mut changed = reset_handlers(&mut run.steps);
    changed.sort();
    assert_eq!(changed, ["onExit", "onFailure"]);
    assert_eq!(run.steps["onExit"].status, StepStatus::Pending);
    assert_eq!(run.steps["onExit"].handler, Some(HandlerOn::Exit));
    run.steps.insert("a".into(), StepState::pending());
    run.status = RunStatus::Running;
    let names = release(&dag, &mut run.steps, 13, false);
    assert_eq!(names, ["a"]);
    let task = task_of(
        &dag,
        RunCtx {
            id: "r1",
            params: &[],
            priority: Priority::HIGH,
            resolved: None,
        },
        &[],
        "a",
        &run.steps,
        13,
    )
    .unwrap();
    let t = finish_only(&dag, &mut run, &task, ReportKind::Succeeded, 14);
    assert_eq!(t.tasks[0].step, "onSuccess");
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 15);
    assert_eq!(t.tasks[0].step, "onExit");
    assert_eq!(t.tasks[0].attempt, 2, "the exit handler's second attempt");
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 16);
    assert_eq!(t.status, RunStatus::Succeeded);
}

#[test]
fn handler_retries_follow_its_retry_policy() {
    let yaml = "name: x\nsteps:\n  - name: a\n    command: x\nhandlerOn:\n  exit:\n    command: e\n    retryPolicy:\n      limit: 1\n      intervalSec: 1\n";
    let dag = Dag::parse(yaml, "x").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Succeeded, 10);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Failed, 11);
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.retries.len(), 1);
    assert_eq!(t.retries[0].task.step, "onExit");
    assert_eq!(
        step_env(&t.retries[0].task, "DAG_RUN_STATUS"),
        Some("succeeded")
    );
}

/// The diamond run after `a` succeeded (output A=1), `b` failed, `c` succeeded and `d` was
/// skipped: a failed run.
fn failed_diamond(dag: &Dag) -> RunRecord {
    let (mut run, tasks) = run_of(dag);
    let t = advance(
        dag,
        &run,
        &[report(&tasks[0], ReportKind::Succeeded, Some(("A", "1")))],
        9,
    );
    apply(&mut run, &t);
    let t2 = advance(
        dag,
        &run,
        &[
            failed(&t.tasks[0], 3),
            report(&t.tasks[1], ReportKind::Succeeded, None),
        ],
        10,
    );
    apply(&mut run, &t2);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps["d"].status, StepStatus::Skipped);
    run.version = 3;
    run
}

fn names(t: &Transition) -> Vec<&str> {
    t.tasks.iter().map(|t| t.step.as_str()).collect()
}

#[test]
fn a_retry_without_a_step_reruns_the_failed_steps_and_their_downstream() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let mut run = failed_diamond(&dag);
    let t = retry(&dag, &run, &RetrySelection::default(), 100).unwrap();
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(names(&t), ["b"], "d waits for b again");
    assert_eq!(t.changed.keys().collect::<Vec<_>>(), ["b", "d"]);
    assert!(t.clear_fields.contains(&run_field::FINISHED.to_string()));
    let b = &t.changed["b"];
    assert_eq!(
        (b.status, b.attempt, b.attempt_base),
        (StepStatus::Queued, 2, 1)
    );
    assert_ne!(b.token, run.steps["b"].token, "a new fencing token");
    assert_eq!(b.history.len(), 1);
    assert_eq!(b.history[0].attempt, 1);
    assert_eq!(b.history[0].status, StepStatus::Failed);
    assert_eq!(b.history[0].exit_code, Some(3));
    assert_eq!(b.exit_code, None, "the new attempt starts clean");
    assert_eq!(t.changed["d"].status, StepStatus::Pending);
    assert!(
        t.tasks[0].env.contains(&("A".to_string(), "1".to_string())),
        "a succeeded step's output reaches the retried step"
    );
    // The retried b succeeds: d runs with A, and the run succeeds.
    apply(&mut run, &t);
    let t2 = advance(
        &dag,
        &run,
        &[report(&t.tasks[0], ReportKind::Succeeded, None)],
        110,
    );
    assert_eq!(names(&t2), ["d"]);
    assert!(t2.tasks[0]
        .env
        .contains(&("A".to_string(), "1".to_string())));
    apply(&mut run, &t2);
    let t3 = advance(
        &dag,
        &run,
        &[report(&t2.tasks[0], ReportKind::Succeeded, None)],
        120,
    );
    assert_eq!(t3.status, RunStatus::Succeeded);
    assert_eq!(
        run.steps["a"].attempt, 1,
        "a succeeded step is not run again"
    );
}

#[test]
fn a_retry_of_one_step_leaves_its_downstream_alone_unless_asked() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let run = failed_diamond(&dag);
    let only = RetrySelection {
        step: Some("b".into()),
        ..Default::default()
    };
    let t = retry(&dag, &run, &only, 100).unwrap();
    assert_eq!(names(&t), ["b"]);
    assert_eq!(
        t.changed.keys().collect::<Vec<_>>(),
        ["b"],
        "d stays skipped"
    );
    let down = RetrySelection {
        step: Some("a".into()),
        downstream: true,
        ..Default::default()
    };
    let t = retry(&dag, &run, &down, 100).unwrap();
    assert_eq!(names(&t), ["a"]);
    assert_eq!(t.changed.keys().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    assert_eq!(t.changed["a"].history[0].status, StepStatus::Succeeded);
    // A step whose dependency did not succeed would be skipped at once.
    let blocked = RetrySelection {
        step: Some("d".into()),
        ..Default::default()
    };
    assert_eq!(
        retry(&dag, &run, &blocked, 100).unwrap_err(),
        RetryError::DependencyNotSucceeded {
            step: "d".into(),
            dependency: "b".into(),
            status: StepStatus::Failed,
        }
    );
}

#[test]
fn ignore_preconditions_is_set_on_the_retried_steps_and_cleared_by_the_next_retry() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let mut run = failed_diamond(&dag);
    let sel = RetrySelection {
        ignore_preconditions: true,
        ..Default::default()
    };
    let t = retry(&dag, &run, &sel, 100).unwrap();
    assert!(t.changed["b"].ignore_preconditions && t.changed["d"].ignore_preconditions);
    assert!(t.tasks[0].ignore_preconditions);
    assert!(!t.changed.contains_key("a"));
    apply(&mut run, &t);
    let t2 = advance(&dag, &run, &[failed(&t.tasks[0], 1)], 110);
    apply(&mut run, &t2);
    let t3 = retry(&dag, &run, &RetrySelection::default(), 120).unwrap();
    assert!(!t3.changed["b"].ignore_preconditions);
    assert_eq!(t3.changed["b"].attempt, 3);
    let h: Vec<u32> = t3.changed["b"].history.iter().map(|r| r.attempt).collect();
    assert_eq!(h, [1, 2]);
}

#[test]
fn a_retry_is_refused_for_an_active_run_an_unknown_step_or_nothing_failed() {
    let dag = Dag::parse(DIAMOND, "d").unwrap();
    let (active, _) = run_of(&dag);
    assert_eq!(
        retry(&dag, &active, &RetrySelection::default(), 5).unwrap_err(),
        RetryError::Active(RunStatus::Queued)
    );
    let run = failed_diamond(&dag);
    let unknown = RetrySelection {
        step: Some("zz".into()),
        ..Default::default()
    };
    let e = retry(&dag, &run, &unknown, 5).unwrap_err();
    assert!(
        e.to_string().contains("\"zz\"") && e.to_string().contains("a, b, c, d"),
        "{e}"
    );
    let down = RetrySelection {
        downstream: true,
        ..Default::default()
    };
    assert_eq!(
        retry(&dag, &run, &down, 5).unwrap_err(),
        RetryError::DownstreamWithoutStep
    );
    let mut ok = run;
    ok.status = RunStatus::Succeeded;
    for s in ok.steps.values_mut() {
        s.status = StepStatus::Succeeded;
    }
    assert_eq!(
        retry(&dag, &ok, &RetrySelection::default(), 5).unwrap_err(),
        RetryError::NothingToRetry
    );
}

#[test]
fn a_manual_retry_gets_the_retry_policy_afresh_and_history_stays_bounded() {
    let dag = with_retry(1, vec![]);
    let (mut run, tasks) = run_of(&dag);
    let mut task = tasks[0].clone();
    for round in 0..8 {
        // Fails, is retried by its policy once, fails again: the run fails.
        let t = advance(&dag, &run, &[failed(&task, 1)], 10);
        assert_eq!(t.retries.len(), 1, "round {round}: the policy retries once");
        apply(&mut run, &t);
        run.steps.insert("a".into(), t.retries[0].queued.clone());
        let t = advance(&dag, &run, &[failed(&t.retries[0].task, 1)], 20);
        assert_eq!(t.status, RunStatus::Failed);
        apply(&mut run, &t);
        let t = retry(&dag, &run, &RetrySelection::default(), 30).unwrap();
        apply(&mut run, &t);
        task = t.tasks[0].clone();
    }
    let a = &run.steps["a"];
    assert_eq!(a.attempt, 17);
    assert_eq!(a.history.len(), AttemptRecord::KEEP);
    assert_eq!(a.history.last().unwrap().attempt, 16);
}

/// `a` → `b` → `c`, with `extra` appended to `a` (indented as a step key).
fn chain_with(extra: &str) -> Dag {
    let yaml = format!(
        "name: c\nsteps:\n  - name: a\n    command: x\n{extra}  - name: b\n    depends: [a]\n    command: x\n  - name: c\n    depends: [b]\n    command: x\n"
    );
    Dag::parse(&yaml, "c").unwrap()
}

fn skipped(task: &StepTask, kind: ReportKind, why: &str) -> StepReport {
    let mut r = report(task, kind, None);
    r.exit_code = None;
    r.error = Some(why.into());
    r
}

#[test]
fn tasks_carry_the_steps_conditions() {
    let dag = chain_with("    preconditions: test -f /x\n    continueOn: {output: ['re:WARN']}\n");
    let (_, tasks) = run_of(&dag);
    assert_eq!(tasks[0].preconditions, dag.steps[0].preconditions);
    assert_eq!(tasks[0].continue_on_output, vec!["re:WARN".to_string()]);
    assert!(tasks[0].dag_preconditions.is_empty());
}

#[test]
fn a_skipped_step_skips_its_dependants_and_the_run_succeeds() {
    let dag = chain_with("    preconditions: test -f /x\n");
    let (run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[skipped(
            &tasks[0],
            ReportKind::Skipped,
            "precondition did not hold",
        )],
        9,
    );
    assert_eq!(t.changed["a"].status, StepStatus::Skipped);
    assert_eq!(
        t.changed["a"].error.as_deref(),
        Some("precondition did not hold")
    );
    assert_eq!(t.changed["b"].status, StepStatus::Skipped);
    assert_eq!(t.changed["c"].status, StepStatus::Skipped);
    assert_eq!(t.status, RunStatus::Succeeded);
    assert_eq!(t.events.started, 0, "a skipped step never started");
}

#[test]
fn continue_on_skipped_releases_the_dependants() {
    let dag = chain_with("    continueOn: {skipped: true}\n");
    let (mut run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[skipped(&tasks[0], ReportKind::Skipped, "no")],
        9,
    );
    assert!(t.changed["a"].continued);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "b");
    apply(&mut run, &t);
    // A step skipped for its dependency, with continueOn.skipped, releases its own.
    let dag = Dag::parse(
        "name: c\nsteps:\n  - {name: a, command: x}\n  - {name: b, depends: [a], command: x, continueOn: {skipped: true}}\n  - {name: c, depends: [b], command: x}\n",
        "c",
    )
    .unwrap();
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 9);
    assert_eq!(t.changed["b"].status, StepStatus::Skipped);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "c");
}

#[test]
fn continue_on_failure_releases_the_dependants_and_the_run_still_fails() {
    let dag = chain_with("    continueOn: {failure: true}\n");
    let (mut run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 9);
    assert_eq!(t.changed["a"].status, StepStatus::Failed);
    assert!(t.changed["a"].continued);
    assert_eq!(t.tasks[0].step, "b");
    apply(&mut run, &t);
    let t2 = advance(
        &dag,
        &run,
        &[report(&t.tasks[0], ReportKind::Succeeded, None)],
        10,
    );
    apply(&mut run, &t2);
    let t3 = advance(
        &dag,
        &run,
        &[report(&t2.tasks[0], ReportKind::Succeeded, None)],
        11,
    );
    assert_eq!(t3.status, RunStatus::Failed);
    assert_eq!(final_status(&dag, &run.steps), RunStatus::Failed);
}

#[test]
fn continue_on_exit_code_covers_only_the_listed_codes() {
    let dag = chain_with("    continueOn: {exitCode: [3]}\n");
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 9);
    assert_eq!(t.changed["b"].status, StepStatus::Skipped);
    assert_eq!(t.status, RunStatus::Failed);
    let t = advance(&dag, &run, &[failed(&tasks[0], 3)], 9);
    assert_eq!(t.tasks[0].step, "b");
}

#[test]
fn continue_on_output_follows_the_workers_verdict() {
    let dag = chain_with("    continueOn: {output: [WARN]}\n");
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 9);
    assert_eq!(t.changed["b"].status, StepStatus::Skipped);
    let mut matched = failed(&tasks[0], 1);
    matched.output_matched = true;
    let t = advance(&dag, &run, &[matched], 9);
    assert_eq!(t.tasks[0].step, "b");
}

#[test]
fn mark_success_makes_a_covered_failure_a_success() {
    let dag = chain_with("    continueOn: {exitCode: [3], markSuccess: true}\n");
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 3)], 9);
    let a = &t.changed["a"];
    assert_eq!(a.status, StepStatus::Succeeded);
    assert_eq!(a.exit_code, Some(3));
    assert!(a.error.as_deref().unwrap().contains("markSuccess"));
    assert_eq!(t.tasks[0].step, "b");
    // Not covered: markSuccess alone changes nothing.
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 9);
    assert_eq!(t.changed["a"].status, StepStatus::Failed);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn continue_on_applies_after_the_retries_are_used_up() {
    let mut dag = with_retry(1, vec![]);
    dag.steps[0].continue_on = Some(ContinueOn {
        failure: true,
        ..ContinueOn::default()
    });
    let (run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[failed(&tasks[0], 1)], 100);
    assert_eq!(t.changed["a"].status, StepStatus::Retrying);
    assert!(t.tasks.is_empty());
    assert!(
        t.retries[0].task.ignore_preconditions,
        "a retry does not check them again"
    );
}

const GATED: &str = "name: g\npreconditions:\n  - condition: '${ENV}'\n    expected: prod\nsteps:\n  - {name: a, command: x}\n  - {name: b, command: x}\n  - {name: c, depends: [a, b], command: x}\n";

#[test]
fn dag_preconditions_gate_the_first_task_only() {
    let dag = Dag::parse(GATED, "g").unwrap();
    let (mut run, tasks) = run_of(&dag);
    assert_eq!(tasks.len(), 1, "b waits for the gate");
    assert_eq!(tasks[0].step, "a");
    assert_eq!(tasks[0].dag_preconditions, dag.preconditions);
    let t = advance(
        &dag,
        &run,
        &[report(&tasks[0], ReportKind::Started, None)],
        5,
    );
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "b");
    assert!(t.tasks[0].dag_preconditions.is_empty());
    apply(&mut run, &t);
}

#[test]
fn unmet_dag_preconditions_skip_every_step_and_abort_the_run() {
    let dag = Dag::parse(GATED, "g").unwrap();
    let (run, tasks) = run_of(&dag);
    let r = skipped(&tasks[0], ReportKind::DagPreconditionsUnmet, "got staging");
    let t = advance(&dag, &run, &[r], 5);
    assert_eq!(t.status, RunStatus::Aborted);
    assert!(t.tasks.is_empty());
    assert!(t.changed.values().all(|s| s.status == StepStatus::Skipped));
    assert!(t.changed["a"].dag_preconditions_unmet);
    assert!(t.changed["b"]
        .error
        .as_deref()
        .unwrap()
        .contains("DAG's preconditions"));
}

#[test]
fn a_step_skipped_by_its_own_conditions_opens_the_gate() {
    let dag = Dag::parse(GATED, "g").unwrap();
    let (run, tasks) = run_of(&dag);
    let t = advance(
        &dag,
        &run,
        &[skipped(&tasks[0], ReportKind::Skipped, "no")],
        5,
    );
    assert_eq!(t.status, RunStatus::Queued);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "b");
    assert_eq!(t.changed["c"].status, StepStatus::Skipped);
}

const RUN_RETRY: &str = "name: rr\nretry_policy:\n  limit: 2\n  interval_sec: 5\n  backoff: 2\nsteps:\n  - name: a\n    command: x\n  - name: b\n    command: y\n    depends: [a]\n";

#[test]
fn a_failed_run_parks_its_automatic_retry_in_the_delayed_set() {
    let dag = Dag::parse(RUN_RETRY, "rr").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 100);
    assert_eq!(t.status, RunStatus::Failed);
    assert_eq!(
        t.schedule,
        vec![(delayed_member::run_retry("r1"), 5_100)],
        "the first retry waits interval_sec"
    );
    assert_eq!(
        t.set_fields,
        vec![(run_field::RUN_RETRY_AT, "5100".to_string())]
    );
    // The second retry waits interval × backoff; none after the limit.
    run.auto_retries = 1;
    run.status = RunStatus::Running;
    run.steps.get_mut("a").unwrap().status = StepStatus::Queued;
    run.steps.get_mut("b").unwrap().status = StepStatus::Pending;
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 100);
    assert_eq!(t.schedule, vec![(delayed_member::run_retry("r1"), 10_100)]);
    run.auto_retries = 2;
    run.status = RunStatus::Running;
    run.steps.get_mut("a").unwrap().status = StepStatus::Queued;
    run.steps.get_mut("b").unwrap().status = StepStatus::Pending;
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 100);
    assert_eq!(t.status, RunStatus::Failed);
    assert!(t.schedule.is_empty(), "limit reached: {:?}", t.schedule);
}

#[test]
fn aborted_and_succeeded_runs_are_not_retried_automatically() {
    let dag = Dag::parse(RUN_RETRY, "rr").unwrap();
    let (run, _) = run_of(&dag);
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped", 10).unwrap();
    assert!(t.schedule.is_empty());
    // A DAG timeoutSec ends the run failed: that one is retried.
    let t = stop(&dag, &run, RunStatus::Failed, "timeout", 10).unwrap();
    assert_eq!(t.schedule, vec![(delayed_member::run_retry("r1"), 5_010)]);
    let (mut run, tasks) = run_of(&dag);
    let t = finish_only(&dag, &mut run, &tasks[0], ReportKind::Succeeded, 10);
    let t = finish_next(&dag, &mut run, &t, ReportKind::Succeeded, 11);
    assert_eq!(t.status, RunStatus::Succeeded);
    assert!(t.schedule.is_empty());
}

/// A stop of a failed run waiting for its automatic retry cancels the retry.
#[test]
fn a_stop_cancels_a_pending_automatic_retry() {
    let dag = Dag::parse(RUN_RETRY, "rr").unwrap();
    let (mut run, tasks) = run_of(&dag);
    finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 100);
    run.retry_at_ms = Some(5_100);
    let t = stop(&dag, &run, RunStatus::Aborted, "stopped", 200).unwrap();
    assert_eq!(t.status, RunStatus::Failed, "the run stays as it ended");
    assert_eq!(t.unschedule, vec![delayed_member::run_retry("r1")]);
    assert!(t
        .clear_fields
        .contains(&run_field::RUN_RETRY_AT.to_string()));
    assert!(
        stop(&dag, &run, RunStatus::Failed, "timeout", 200).is_none(),
        "a late deadline keeps the retry"
    );
    run.retry_at_ms = None;
    assert!(stop(&dag, &run, RunStatus::Aborted, "stopped", 200).is_none());
}

#[test]
fn an_automatic_retry_reruns_the_failed_steps_and_counts_itself() {
    let dag = Dag::parse(RUN_RETRY, "rr").unwrap();
    let (mut run, tasks) = run_of(&dag);
    finish_only(&dag, &mut run, &tasks[0], ReportKind::Failed, 100);
    assert_eq!(run.steps["b"].status, StepStatus::Skipped);
    let t = auto_retry(&dag, &run, 6_000).unwrap();
    assert_eq!(t.status, RunStatus::Running);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "a");
    assert_eq!(t.tasks[0].attempt, 2);
    assert_eq!(t.changed["b"].status, StepStatus::Pending);
    assert!(t
        .set_fields
        .contains(&(run_field::AUTO_RETRIES, "1".to_string())));
    assert!(t.unschedule.contains(&delayed_member::run_retry("r1")));
    assert!(t
        .clear_fields
        .contains(&run_field::RUN_RETRY_AT.to_string()));
    // Retried by hand meanwhile: nothing to do.
    run.status = RunStatus::Running;
    assert!(auto_retry(&dag, &run, 6_000).is_none());
}

// Repeat (Dagu `repeatPolicy`): the worker's check, then the limit, the wait and the
// interplay with `retryPolicy` and `continueOn`.

const REPEAT: &str = "name: rp\nsteps:\n  - name: a\n    command: poll\n    repeatPolicy:\n      repeat: until\n      exitCode: [0]\n      intervalSec: 1\n      backoff: 2\n      maxIntervalSec: 3\n      limit: 4\n  - name: b\n    depends: [a]\n    command: 'true'\n";

fn repeating(r: StepReport) -> StepReport {
    StepReport { repeat: true, ..r }
}

/// Applies `t` to `run` and, for a repetition that waits, lets it fall due: the step
/// takes its queued state. Returns the next attempt's task.
fn next_of(run: &mut RunRecord, t: &Transition) -> StepTask {
    apply(run, t);
    if let Some(r) = t.retries.first() {
        run.steps.insert(r.task.step.clone(), r.queued.clone());
        return r.task.clone();
    }
    t.tasks[0].clone()
}

#[test]
fn a_repeat_waits_in_the_delayed_set_with_dagus_backoff_and_ends_at_the_limit() {
    let dag = Dag::parse(REPEAT, "rp").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let mut task = tasks[0].clone();
    // Executions 1..3 fail (exit 1) and the check says "again": waits of 1 s × 2^n,
    // capped at 3 s (Dagu: interval × backoff^done).
    for (n, wait) in [(1u32, 2_000u64), (2, 3_000), (3, 3_000)] {
        let t = advance(&dag, &run, &[repeating(failed(&task, 1))], 100);
        assert!(!t.status.is_final(), "execution {n}: not final");
        assert!(t.tasks.is_empty());
        assert_eq!(t.retries.len(), 1, "execution {n}");
        let r = &t.retries[0];
        assert_eq!(r.due_ms, 100 + wait, "execution {n}");
        assert_eq!(r.task.attempt, n + 1);
        assert!(
            r.task.ignore_preconditions,
            "repetitions skip preconditions"
        );
        let a = &t.changed["a"];
        assert_eq!((a.status, a.repeats), (StepStatus::Retrying, n));
        assert_eq!(a.history.last().unwrap().status, StepStatus::Failed);
        task = next_of(&mut run, &t);
    }
    // Execution 4 is the limit: its outcome is final even though the check says again.
    let t = advance(&dag, &run, &[repeating(failed(&task, 1))], 200);
    assert!(t.retries.is_empty() && t.tasks.is_empty());
    assert_eq!(t.changed["a"].status, StepStatus::Failed);
    assert_eq!(t.changed["a"].attempt, 4);
    assert_eq!(t.status, RunStatus::Failed);
}

#[test]
fn a_repeat_ends_when_the_check_says_so_and_dependants_then_run() {
    let dag = Dag::parse(REPEAT, "rp").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[repeating(failed(&tasks[0], 1))], 100);
    let task = next_of(&mut run, &t);
    // Exit 0: the worker's `until` check holds, no repeat.
    let t = advance(
        &dag,
        &run,
        &[report(&task, ReportKind::Succeeded, None)],
        200,
    );
    assert_eq!(t.changed["a"].status, StepStatus::Succeeded);
    assert_eq!(t.changed["a"].attempt, 2);
    assert_eq!(t.tasks.len(), 1);
    assert_eq!(t.tasks[0].step, "b");
}

#[test]
fn a_succeeded_execution_repeats_and_no_interval_queues_at_once() {
    let yaml = "name: w\nsteps:\n  - name: a\n    command: 'true'\n    repeatPolicy: {repeat: true, limit: 3}\n";
    let dag = Dag::parse(yaml, "w").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let mut task = tasks[0].clone();
    for n in 1..=2u32 {
        let t = advance(
            &dag,
            &run,
            &[repeating(report(
                &task,
                ReportKind::Succeeded,
                Some(("X", "1")),
            ))],
            50,
        );
        assert!(t.retries.is_empty());
        assert_eq!(t.tasks.len(), 1, "no wait: queued now");
        assert_eq!(t.tasks[0].attempt, n + 1);
        assert!(t.tasks[0].ignore_preconditions);
        assert_eq!(t.changed["a"].status, StepStatus::Queued);
        assert_eq!(
            t.changed["a"].history.last().unwrap().status,
            StepStatus::Succeeded
        );
        task = next_of(&mut run, &t);
    }
    let t = advance(
        &dag,
        &run,
        &[repeating(report(&task, ReportKind::Succeeded, None))],
        60,
    );
    assert_eq!(t.status, RunStatus::Succeeded, "limit 3 reached");
    assert_eq!(t.changed["a"].attempt, 3);
}

#[test]
fn a_retry_comes_before_a_repeat_and_repetitions_do_not_use_up_retries() {
    let yaml = "name: rr\nsteps:\n  - name: a\n    command: x\n    retryPolicy: {limit: 1, intervalSec: 5}\n    repeatPolicy: {repeat: true, intervalSec: 60, limit: 3}\n";
    let dag = Dag::parse(yaml, "rr").unwrap();
    let (mut run, tasks) = run_of(&dag);
    // Execution 1 succeeds and repeats (60 s × no backoff).
    let t = advance(
        &dag,
        &run,
        &[repeating(report(&tasks[0], ReportKind::Succeeded, None))],
        0,
    );
    assert_eq!(t.retries[0].due_ms, 60_000);
    let task = next_of(&mut run, &t);
    // Execution 2 fails: its one retry is still there (5 s), whatever the check says.
    let t = advance(&dag, &run, &[repeating(failed(&task, 1))], 0);
    assert_eq!(t.retries[0].due_ms, 5_000, "a retry, not a repeat");
    assert_eq!(t.changed["a"].repeats, 1);
    let task = next_of(&mut run, &t);
    // The retry fails too: retries are used up, the check says repeat: execution 3 comes.
    let t = advance(&dag, &run, &[repeating(failed(&task, 1))], 0);
    assert_eq!(t.retries[0].due_ms, 60_000, "a repeat after the retries");
    assert_eq!(t.changed["a"].repeats, 2);
    assert_eq!(t.retries[0].task.attempt, 4);
}

#[test]
fn a_final_failure_after_repeats_is_covered_by_continue_on() {
    let yaml = "name: c\nsteps:\n  - name: a\n    command: x\n    repeatPolicy: {repeat: while, exitCode: [3], limit: 2}\n    continueOn: {failure: true}\n  - name: b\n    depends: [a]\n    command: 'true'\n";
    let dag = Dag::parse(yaml, "c").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[repeating(failed(&tasks[0], 3))], 0);
    let task = next_of(&mut run, &t);
    let t = advance(&dag, &run, &[failed(&task, 1)], 0);
    let a = &t.changed["a"];
    assert_eq!((a.status, a.continued), (StepStatus::Failed, true));
    assert_eq!(t.tasks[0].step, "b", "continueOn lets b run");
}

#[test]
fn a_stop_cancels_a_waiting_repetition_and_a_manual_retry_counts_afresh() {
    let dag = Dag::parse(REPEAT, "rp").unwrap();
    let (mut run, tasks) = run_of(&dag);
    let t = advance(&dag, &run, &[repeating(failed(&tasks[0], 1))], 100);
    apply(&mut run, &t);
    let stopped = stop(&dag, &run, RunStatus::Aborted, "stopped", 150).unwrap();
    assert!(stopped
        .unschedule
        .contains(&delayed_member::retry(&run.id, "a")));
    assert_eq!(stopped.changed["a"].status, StepStatus::Aborted);
    apply(&mut run, &stopped);
    let again = retry(&dag, &run, &RetrySelection::default(), 200).unwrap();
    assert_eq!(again.changed["a"].repeats, 0);
    assert_eq!(again.changed["a"].status, StepStatus::Queued);
}

const EVALUATED: &str = "name: e\ntype: graph\nenv:\n  - T: \"`date +%s%N`\"\n  - U: ${T}-u\nsteps:\n  - {name: a, command: echo a}\n  - {name: b, command: echo b}\n  - {name: c, command: echo $T, depends: [a, b], retryPolicy: {limit: 1, intervalSec: 1}}\n";

fn values() -> Resolved {
    Resolved {
        env: vec!["123".into(), "123-u".into()],
        params: vec![],
    }
}

/// A DAG with a backtick value: only one root is queued, carrying the evaluation; its
/// report brings the values, which the run stores once and every later task (the other
/// root, the dependant, its retry) carries as data.
#[test]
fn values_are_evaluated_by_one_task_and_reach_every_later_task() {
    let dag = Dag::parse(EVALUATED, "e").unwrap();
    let (mut run, tasks) = run_of(&dag);
    assert_eq!(tasks.len(), 1, "one root evaluates, the other waits");
    let first = &tasks[0];
    let evaluate = first
        .dag_values
        .evaluate
        .as_ref()
        .expect("the first task evaluates");
    assert_eq!(evaluate.env.len(), 2);
    let mut started = report(first, ReportKind::Started, None);
    started.resolved = Some(values());
    let t = advance(&dag, &run, &[started], 10);
    assert_eq!(
        t.resolved,
        Some(values()),
        "stored with the report that counted"
    );
    assert_eq!(t.tasks.len(), 1, "the other root is released");
    let b = &t.tasks[0];
    assert!(b.dag_values.evaluate.is_none());
    assert_eq!(b.dag_values.resolved, Some(values()));
    let env: BTreeMap<_, _> = b.env.iter().cloned().collect();
    assert_eq!(env["T"], "123");
    assert_eq!(env["U"], "123-u");
    let t_index = b.env.iter().position(|(k, _)| k == "T").unwrap() as u32;
    assert!(!b.expand.contains(&t_index), "evaluated values are data");
    apply(&mut run, &t);
    run.resolved = t.resolved.clone();
    // A second report of the same attempt with other values changes nothing.
    let mut done = report(first, ReportKind::Succeeded, None);
    done.resolved = Some(Resolved {
        env: vec!["999".into(), "x".into()],
        params: vec![],
    });
    let t = advance(
        &dag,
        &run,
        &[done, report(b, ReportKind::Succeeded, None)],
        11,
    );
    assert_eq!(t.resolved, None);
    let c = t.tasks.iter().find(|t| t.step == "c").unwrap();
    assert_eq!(c.dag_values.resolved, Some(values()));
    apply(&mut run, &t);
    // Its retry, weeks later, carries the same values.
    let mut failed = report(c, ReportKind::Failed, None);
    failed.exit_code = Some(1);
    let t = advance(&dag, &run, &[failed], 12);
    let retry = &t.retries[0].task;
    assert!(retry.env.iter().any(|(k, v)| k == "T" && v == "123"));
    assert!(retry.dag_values.evaluate.is_none());
}

/// An attempt that failed evaluating the run's values never reached the DAG's or its own
/// preconditions (the worker evaluates first): its retry and the next root still carry
/// them.
#[test]
fn a_failed_evaluation_does_not_open_the_precondition_gates() {
    let yaml = "name: g\ntype: graph\npreconditions:\n  - condition: test -d /\nenv:\n  - T: \"`date`\"\nsteps:\n  - {name: a, command: x, retryPolicy: {limit: 1, intervalSec: 1}}\n  - {name: b, command: y}\n";
    let dag = Dag::parse(yaml, "g").unwrap();
    let (run, tasks) = run_of(&dag);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].dag_preconditions, dag.preconditions);
    let mut failed = report(&tasks[0], ReportKind::Failed, None);
    failed.exit_code = None;
    failed.error = Some("env T: the command failed".into());
    let t = advance(&dag, &run, &[failed], 10);
    assert_eq!(t.resolved, None);
    let retry = &t.retries[0].task;
    assert_eq!(retry.dag_preconditions, dag.preconditions);
    assert!(!retry.ignore_preconditions);
    assert!(
        retry.dag_values.evaluate.is_some(),
        "the retry evaluates again"
    );
}

/// A stale report (an earlier token) cannot store values, and while none are stored a
/// re-queued attempt evaluates again.
#[test]
fn only_the_current_attempt_stores_values() {
    let dag = Dag::parse(EVALUATED, "e").unwrap();
    let (run, tasks) = run_of(&dag);
    let mut stale = report(&tasks[0], ReportKind::Started, None);
    stale.token = "old".into();
    stale.resolved = Some(values());
    let t = advance(&dag, &run, &[stale], 10);
    assert_eq!(t.resolved, None);
    assert!(t.tasks.is_empty());
    let mut lost = report(&tasks[0], ReportKind::Lost, None);
    lost.resolved = None;
    let t = advance(&dag, &run, &[lost], 11);
    assert_eq!(t.tasks.len(), 1);
    assert!(
        t.tasks[0].dag_values.evaluate.is_some(),
        "the next attempt evaluates"
    );
}
