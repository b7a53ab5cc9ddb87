//! The run and step state machines, as pure functions: what a new run queues first, and what a
//! batch of step reports changes. The orchestrator applies the result to Redis atomically.
//!
//! A step is queued once every step it depends on has succeeded (Dagu's graph semantics: a step
//! without `depends` is queued at once). A step whose dependency failed or was skipped is
//! skipped. A run succeeds when no step failed, and fails otherwise, once every step is final.

use std::collections::BTreeMap;

use dagrid_shared::dag::{BoundParam, Dag};
use dagrid_shared::model::{
    Priority, ReportKind, RunRecord, RunStatus, StepReport, StepState, StepStatus, StepTask,
};

/// A fresh fencing token for one step attempt: 16 random hex digits.
pub(crate) fn new_token() -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(16);
    s
}

/// The run a step task belongs to: what every task of it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunCtx<'a> {
    pub(crate) id: &'a str,
    pub(crate) params: &'a [BoundParam],
    pub(crate) priority: Priority,
}

/// The steps of a new run and the tasks to queue for its root steps (at most the DAG's
/// `maxActiveSteps`).
pub(crate) fn start(
    dag: &Dag,
    run: RunCtx<'_>,
    now_ms: u64,
) -> (BTreeMap<String, StepState>, Vec<StepTask>) {
    let mut steps: BTreeMap<String, StepState> = dag
        .steps
        .iter()
        .map(|s| (s.name.clone(), StepState::pending()))
        .collect();
    let tasks = release(dag, run, &mut steps, now_ms);
    (steps, tasks)
}

/// What applying reports to a run changes.
#[derive(Debug)]
pub(crate) struct Transition {
    /// Steps whose state changed, by name.
    pub(crate) changed: BTreeMap<String, StepState>,
    /// Tasks to put on the ready stream.
    pub(crate) tasks: Vec<StepTask>,
    /// The run's status afterwards.
    pub(crate) status: RunStatus,
    /// Set when the run's first step started with these reports (ms).
    pub(crate) started_ms: Option<u64>,
    /// Set when the run finished with these reports (ms).
    pub(crate) finished_ms: Option<u64>,
    /// Reports that did not count: stale token, unknown step, or a step already final.
    pub(crate) ignored: Vec<String>,
}

/// Applies `reports` to `run`, then queues what became ready and skips what cannot run.
pub(crate) fn advance(
    dag: &Dag,
    run: &RunRecord,
    reports: &[StepReport],
    now_ms: u64,
) -> Transition {
    let mut steps = run.steps.clone();
    let mut t = Transition {
        changed: BTreeMap::new(),
        tasks: Vec::new(),
        status: run.status,
        started_ms: None,
        finished_ms: None,
        ignored: Vec::new(),
    };
    if run.status.is_final() {
        t.ignored = reports
            .iter()
            .map(|r| format!("step {}: the run has finished", r.step))
            .collect();
        return t;
    }
    for r in reports {
        if let Err(why) = apply_report(&mut steps, r) {
            t.ignored
                .push(format!("step {} attempt {}: {why}", r.step, r.attempt));
        }
    }
    let any_started = steps.values().any(|s| s.started_ms.is_some());
    if run.status == RunStatus::Queued && any_started {
        t.status = RunStatus::Running;
        t.started_ms = steps.values().filter_map(|s| s.started_ms).min();
    }
    let ctx = RunCtx {
        id: &run.id,
        params: &run.params,
        priority: run.priority,
    };
    t.tasks = release(dag, ctx, &mut steps, now_ms);
    if steps.values().all(|s| s.status.is_final()) {
        let failed = steps.values().any(|s| s.status == StepStatus::Failed);
        t.status = if failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        t.finished_ms = Some(now_ms);
        if run.started_ms.is_none() && t.started_ms.is_none() {
            t.started_ms = steps.values().filter_map(|s| s.started_ms).min();
        }
    }
    t.changed = steps
        .into_iter()
        .filter(|(name, s)| run.steps.get(name) != Some(s))
        .collect();
    t
}

fn apply_report(
    steps: &mut BTreeMap<String, StepState>,
    r: &StepReport,
) -> Result<(), &'static str> {
    let s = steps.get_mut(&r.step).ok_or("no such step in this run")?;
    if s.token.as_deref() != Some(r.token.as_str()) {
        return Err("stale attempt (token does not match the current attempt)");
    }
    if s.status.is_final() {
        return Err("duplicate report (the attempt has finished already)");
    }
    s.worker = Some(r.worker.clone());
    s.started_ms = Some(r.started_ms);
    s.log_path = r.log_path.clone().or(s.log_path.take());
    match r.kind {
        ReportKind::Started => s.status = StepStatus::Running,
        ReportKind::Lost | ReportKind::Released => return Err("not handled yet"),
        ReportKind::Succeeded | ReportKind::Failed => {
            s.status = if r.kind == ReportKind::Succeeded {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            };
            s.finished_ms = r.finished_ms;
            s.exit_code = r.exit_code;
            s.error = r.error.clone();
            s.output = r.output.clone();
        }
    }
    Ok(())
}

/// Queues every pending step whose dependencies all succeeded (in DAG file order, while fewer
/// than the DAG's `maxActiveSteps` are queued or running) and skips every pending step with a
/// dependency that failed or was skipped, until nothing changes. Returns the tasks to queue.
fn release(
    dag: &Dag,
    run: RunCtx<'_>,
    steps: &mut BTreeMap<String, StepState>,
    now_ms: u64,
) -> Vec<StepTask> {
    let mut newly_queued = Vec::new();
    let mut active = steps
        .values()
        .filter(|s| matches!(s.status, StepStatus::Queued | StepStatus::Running))
        .count();
    let limit = dag.max_active_steps.map_or(usize::MAX, |n| n as usize);
    loop {
        let mut changed = false;
        for step in &dag.steps {
            if steps.get(&step.name).map(|s| s.status) != Some(StepStatus::Pending) {
                continue;
            }
            let mut blocked_by = None;
            let mut ready = true;
            for d in &step.depends {
                match steps.get(d).map(|s| s.status) {
                    Some(StepStatus::Succeeded) => {}
                    Some(StepStatus::Failed) | Some(StepStatus::Skipped) => {
                        blocked_by = Some(d.clone());
                        break;
                    }
                    _ => ready = false,
                }
            }
            let Some(state) = steps.get_mut(&step.name) else {
                continue;
            };
            if let Some(dep) = blocked_by {
                state.status = StepStatus::Skipped;
                state.finished_ms = Some(now_ms);
                state.error = Some(format!("skipped: dependency \"{dep}\" did not succeed"));
                changed = true;
            } else if ready && active < limit {
                active += 1;
                state.status = StepStatus::Queued;
                state.attempt += 1;
                state.token = Some(new_token());
                state.queued_ms = Some(now_ms);
                newly_queued.push(step);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let outputs: Vec<(String, String)> = dag
        .steps
        .iter()
        .filter_map(|s| steps.get(&s.name))
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.output.clone())
        .collect();
    newly_queued
        .into_iter()
        .filter_map(|step| {
            let state = steps.get(&step.name)?;
            Some(task(dag, run, &outputs, step, state, now_ms))
        })
        .collect()
}

/// The ready-stream payload of one step attempt; see [`StepTask::env`] for the env order.
fn task(
    dag: &Dag,
    run: RunCtx<'_>,
    outputs: &[(String, String)],
    step: &dagrid_shared::dag::Step,
    state: &StepState,
    now_ms: u64,
) -> StepTask {
    let mut env: Vec<(String, String)> = vec![
        ("DAG_NAME".into(), dag.name.clone()),
        ("DAG_RUN_ID".into(), run.id.to_string()),
        ("DAG_RUN_STEP_NAME".into(), step.name.clone()),
    ];
    env.extend(
        run.params
            .iter()
            .filter_map(|p| p.name.clone().map(|n| (n, p.value.clone()))),
    );
    env.extend(dag.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    env.extend(outputs.iter().cloned());
    env.extend(step.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    StepTask {
        run_id: run.id.to_string(),
        dag: dag.name.clone(),
        step: step.name.clone(),
        attempt: state.attempt,
        token: state.token.clone().unwrap_or_default(),
        command: step.command.clone(),
        script: step.script.clone(),
        shell: step.shell.clone(),
        dir: step.dir.clone(),
        env,
        args: run.params.iter().map(|p| p.value.clone()).collect(),
        output: step.output.clone(),
        queued_ms: now_ms,
        priority: run.priority,
        timeout_ms: step.timeout_ms,
        stop_signal: step.signal_on_stop.clone(),
        cleanup_ms: dag
            .max_cleanup_ms
            .unwrap_or(dagrid_shared::dag::DEFAULT_CLEANUP_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrid_shared::model::ReportKind;

    const DIAMOND: &str = "name: d\nsteps:\n  - name: a\n    command: echo a\n    output: A\n  - name: b\n    depends: [a]\n    command: echo b\n  - name: c\n    depends: [a]\n    command: echo c\n  - name: d\n    depends: [b, c]\n    command: echo d\n";

    fn run_of(dag: &Dag) -> (RunRecord, Vec<StepTask>) {
        let ctx = RunCtx {
            id: "r1",
            params: &[],
            priority: Priority::HIGH,
        };
        let (steps, tasks) = start(dag, ctx, 1);
        let run = RunRecord {
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
            queue: dag.name.clone(),
            reason: None,
            due_ms: None,
            dedup_key: None,
            dedup_window_ms: 0,
            trigger: "api".into(),
            slot_ms: None,
        };
        (run, tasks)
    }

    fn report(task: &StepTask, kind: ReportKind, output: Option<(&str, &str)>) -> StepReport {
        StepReport {
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
}
