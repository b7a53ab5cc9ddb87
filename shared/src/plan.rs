//! The run and step state machines, as pure functions: what a new run queues first, and what a
//! batch of step reports changes. Whoever applies a batch (the coordinator's orchestrator, or
//! the worker that ran the step) writes the result to Redis atomically ([`crate::transition`]).
//!
//! A step is queued once every step it depends on has succeeded (Dagu's graph semantics: a step
//! without `depends` is queued at once). A step whose dependency failed or was skipped is
//! skipped, unless its `continueOn` covers that ([`StepState::continued`]): then its dependants
//! run as if it had succeeded. A run's final status is [`final_status`].
//!
//! Preconditions are checked by the workers: a step's by the worker that claims it, the DAG's
//! by the worker of the run's first task. While a DAG with `preconditions` has not passed that
//! gate ([`dag_gate_open`]), only one step is queued (the first root, carrying the DAG's
//! conditions); the others wait, so no step starts when they do not hold.

//!
//! Handlers (Dagu `handlerOn`): once every main step is final, the run does not finish yet.
//! The handler matching the main steps' outcome ([`final_status`]: `success` or `failure`;
//! `abort` after a stop) is queued first, then `exit`, one after the other, each a task on the
//! ready stream like a step, with `DAG_RUN_STATUS` in its env. The run finishes once they are
//! final: with the main steps' outcome, except that a failed handler turns a success into a
//! failure (as in Dagu). Handler states are created when queued, carry
//! [`StepState::handler`] and [`StepState::dag_run_status`], and are not main steps.

use std::collections::BTreeMap;

use crate::dag::{BoundParam, ContinueOn, Dag, HandlerOn, Priority, RepeatPolicy, RetryPolicy};
use crate::metrics::StepEvents;
use crate::model::{
    ReportKind, Resolved, RunRecord, RunStatus, StepReport, StepState, StepStatus, StepTask,
};
use crate::ready;
use crate::redis::fields::{delayed_member, run_field};

/// A fresh fencing token for one step attempt: 12 random hex digits (48 bits; a stale
/// attempt's report counts only if its token equals the current one, about one chance in
/// 2^48). Every run hash and ready entry holds one, so it is no longer than that.
pub fn new_token() -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(12);
    s
}

/// The run a step task belongs to: what every task of it carries.
#[derive(Debug, Clone, Copy)]
pub struct RunCtx<'a> {
    /// The run id.
    pub id: &'a str,
    /// The run's bound params.
    pub params: &'a [BoundParam],
    /// The run's priority level (its tasks' ready stream).
    pub priority: Priority,
    /// The DAG-level values the run evaluated once, when it has (see
    /// [`crate::model::DagValues`]).
    pub resolved: Option<&'a Resolved>,
}

/// True while the run still has to evaluate its DAG-level values once
/// ([`Dag::evaluates_once`]): then at most one of its steps is queued or running, and its task
/// evaluates them ([`crate::model::DagValues::evaluate`]); the others wait for the
/// report that brings the values, so one evaluation wins and every step sees its values.
pub fn evaluation_pending(dag: &Dag, resolved: Option<&Resolved>) -> bool {
    resolved.is_none() && dag.evaluates_once()
}

/// The steps of a new run and the tasks to queue for its root steps (at most the DAG's
/// `maxActiveSteps`).
pub fn start(
    dag: &Dag,
    run: RunCtx<'_>,
    now_ms: u64,
) -> (BTreeMap<String, StepState>, Vec<StepTask>) {
    let mut steps: BTreeMap<String, StepState> = dag
        .steps
        .iter()
        .map(|s| (s.name.clone(), StepState::pending()))
        .collect();
    let names = release(
        dag,
        &mut steps,
        now_ms,
        evaluation_pending(dag, run.resolved),
    );
    let tasks = names
        .iter()
        .filter_map(|name| task_of(dag, run, &[], name, &steps, now_ms))
        .collect();
    (steps, tasks)
}

/// How many times a step is run again after losing its worker (its ready entry reclaimed once
/// the worker's heartbeat stopped), when its `retryPolicy` allows fewer retries. Each loss
/// uses one retry of the policy too; the cap stops a step that kills its worker from looping
/// for ever.
pub const LOST_RETRIES: u32 = 3;

/// A retry that waits in the delayed set until `due_ms`.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The next attempt's task.
    pub task: StepTask,
    /// The step's state once the retry falls due (status `queued`).
    pub queued: StepState,
    /// When it falls due (ms).
    pub due_ms: u64,
}

/// What applying reports (or a stop) to a run changes.
#[derive(Debug)]
pub struct Transition {
    /// Steps whose state changed, by name.
    pub changed: BTreeMap<String, StepState>,
    /// Tasks to put on the ready stream now.
    pub tasks: Vec<StepTask>,
    /// Retries to park in the delayed set.
    pub retries: Vec<Retry>,
    /// The run's status afterwards.
    pub status: RunStatus,
    /// Set when the run's first step started with these reports (ms).
    pub started_ms: Option<u64>,
    /// Set when the run finished with these reports (ms).
    pub finished_ms: Option<u64>,
    /// Reports that did not count: stale token, unknown step, or a step already final.
    pub ignored: Vec<String>,
    /// Ready-stream entries to acknowledge and delete (the steps a stop removes), as (step
    /// name, entry id): the entry is on the step's stream ([`Dag::selector_of`]).
    pub ack_entries: Vec<(String, String)>,
    /// Run hash fields to delete (entry ids of finished steps, cancelled retries).
    pub clear_fields: Vec<String>,
    /// Delayed-set members to add, with their due time (ms): the run's deadline.
    pub schedule: Vec<(String, u64)>,
    /// Delayed-set members to remove: cancelled retries, the deadline of a finished run.
    pub unschedule: Vec<String>,
    /// What the reports that counted did, for the step counters (counted once written).
    pub events: StepEvents,
    /// Run hash fields to set besides the step states and times (the automatic-retry count
    /// and due time of the DAG's `retry_policy`).
    pub set_fields: Vec<(&'static str, String)>,
    /// The run's DAG-level values, evaluated by the worker of a report that counted, to store
    /// in the run ([`run_field::RESOLVED`]); set once per run.
    pub resolved: Option<Resolved>,
}

impl Transition {
    /// A transition that changes nothing yet, the run keeping `status`.
    fn new(status: RunStatus) -> Self {
        Self {
            changed: BTreeMap::new(),
            tasks: Vec::new(),
            retries: Vec::new(),
            status,
            started_ms: None,
            finished_ms: None,
            ignored: Vec::new(),
            ack_entries: Vec::new(),
            clear_fields: Vec::new(),
            schedule: Vec::new(),
            unschedule: Vec::new(),
            events: StepEvents::default(),
            set_fields: Vec::new(),
            resolved: None,
        }
    }
}

/// What one report asks for beyond the step's new state.
enum Effect {
    /// Nothing more.
    None,
    /// Queue the step's next attempt now.
    Requeue,
    /// Queue the step's next attempt at this time (ms).
    RetryAt(u64),
    /// The DAG's preconditions did not hold: skip every step not final and end the run.
    DagUnmet,
}

/// Applies `reports` to `run`, then queues what became ready and skips what cannot run.
pub fn advance(dag: &Dag, run: &RunRecord, reports: &[StepReport], now_ms: u64) -> Transition {
    let mut steps = run.steps.clone();
    let mut t = Transition::new(run.status);
    if run.status.is_final() {
        t.ignored = reports
            .iter()
            .map(|r| format!("step {}: the run has finished", r.step))
            .collect();
        return t;
    }
    let mut requeue = Vec::new();
    let mut retry_at = BTreeMap::new();
    let mut dag_unmet = false;
    // Starts of the attempts these reports ended: a retry or a repetition replaces the
    // attempt's state at once, so its start is not left in `steps`.
    let mut reported_start: Option<u64> = None;
    for r in reports {
        let step = dag.step_or_handler(&r.step);
        let policy = step.and_then(|s| s.retry.as_ref());
        let continue_on = step.and_then(|s| s.continue_on.as_ref());
        let repeat = step.and_then(|s| s.repeat.as_ref());
        let policies = Policies {
            retry: policy,
            continue_on,
            repeat,
        };
        let applied = apply_report(&mut steps, r, policies, now_ms, &mut t.events);
        if applied.is_ok() && r.kind == ReportKind::Call && run.entries.contains_key(&r.step) {
            // Its ready entry is gone: a running call step has none.
            t.clear_fields
                .push(format!("{}{}", run_field::ENTRY_PREFIX, r.step));
        }
        if applied.is_ok()
            && matches!(
                r.kind,
                ReportKind::Started | ReportKind::Succeeded | ReportKind::Failed | ReportKind::Call
            )
        {
            reported_start = Some(reported_start.map_or(r.started_ms, |s| s.min(r.started_ms)));
        }
        if applied.is_ok() && run.resolved.is_none() && t.resolved.is_none() {
            t.resolved = r.resolved.clone();
        }
        match applied {
            Ok(Effect::None) => {}
            Ok(Effect::DagUnmet) => dag_unmet = true,
            Ok(Effect::Requeue) => requeue.push(r.step.clone()),
            Ok(Effect::RetryAt(due)) => {
                retry_at.insert(r.step.clone(), due);
            }
            Err(why) => t
                .ignored
                .push(format!("step {} attempt {}: {why}", r.step, r.attempt)),
        }
    }
    let first_start = steps
        .values()
        .filter_map(|s| s.started_ms)
        .chain(reported_start)
        .min();
    if run.status == RunStatus::Queued && first_start.is_some() {
        t.status = RunStatus::Running;
        t.started_ms = first_start;
        if let Some(limit) = dag.timeout_ms {
            let from = t.started_ms.unwrap_or(now_ms);
            t.schedule.push((
                delayed_member::deadline(&run.id),
                from.saturating_add(limit),
            ));
        }
    }
    let new_values = t.resolved.clone();
    let resolved = run.resolved.as_ref().or(new_values.as_ref());
    let ctx = RunCtx {
        id: &run.id,
        params: &run.params,
        priority: run.priority,
        resolved,
    };
    if dag_unmet {
        skip_rest(run, &mut steps, &mut t, now_ms);
    }
    let released = release(dag, &mut steps, now_ms, evaluation_pending(dag, resolved));
    let outputs = outputs_of(dag, &steps);
    let mut queue_now = requeue;
    queue_now.extend(released);
    for name in &queue_now {
        if let Some(task) = task_of(dag, ctx, &outputs, name, &steps, now_ms) {
            t.tasks.push(task);
        }
    }
    for (name, due) in retry_at {
        let Some(state) = steps.get(&name) else {
            continue;
        };
        let mut queued = state.clone();
        queued.status = StepStatus::Queued;
        queued.queued_ms = Some(due);
        queued.retry_at_ms = None;
        if let Some(mut task) = task_of(dag, ctx, &outputs, &name, &steps, due) {
            // Dagu checks a step's preconditions once per start, not per retry: the failed
            // attempt passed them, unless it failed evaluating the run's values (the worker
            // evaluates them before any precondition).
            if !evaluation_pending(dag, resolved) {
                task.ignore_preconditions = true;
            }
            t.retries.push(Retry {
                task,
                queued,
                due_ms: due,
            });
        }
    }
    for (name, s) in &steps {
        let was = run.steps.get(name).map(|s| s.status);
        let left_queue = matches!(s.status, StepStatus::Retrying) || s.status.is_final();
        if left_queue && was != Some(s.status) && run.entries.contains_key(name) {
            t.clear_fields
                .push(format!("{}{name}", run_field::ENTRY_PREFIX));
        }
    }
    if main_steps_final(dag, &steps) {
        let outcome = recorded_outcome(&steps).unwrap_or_else(|| final_status(dag, &steps));
        let first = match outcome {
            RunStatus::Succeeded => HandlerOn::Success,
            RunStatus::Aborted => HandlerOn::Abort,
            _ => HandlerOn::Failure,
        };
        match next_handler(dag, &steps, first) {
            NextHandler::Wait => {}
            NextHandler::Queue(on) => {
                if let Some(task) =
                    queue_handler(dag, ctx, &outputs, &mut steps, on, outcome, now_ms)
                {
                    t.tasks.push(task);
                }
            }
            NextHandler::Finish => {
                let status = status_after_handlers(outcome, &steps);
                finish(dag, run, &steps, status, &mut t, now_ms);
            }
        }
    }
    t.changed = steps
        .into_iter()
        .filter(|(name, s)| run.steps.get(name) != Some(s))
        .collect();
    t
}

/// The status the main steps (not the handlers) give a run once they are all final (the one
/// place of this rule):
/// - `aborted` when the DAG's `preconditions` did not hold (no step ran; Dagu's spec 023 ends
///   such a run `aborted`);
/// - `failed` when a main step failed or was aborted, even when its `continueOn` let its
///   dependants run (Dagu ends such a run with an error, or "partially succeeded" in recent
///   versions, which dagrid does not have yet); a failure covered by `continueOn.markSuccess`
///   is a succeeded step and does not count;
/// - `succeeded` otherwise, skipped steps included.
///
/// Handlers may still turn a success into a failure ([`status_after_handlers`]).
pub fn final_status(dag: &Dag, steps: &BTreeMap<String, StepState>) -> RunStatus {
    if steps.values().any(|s| s.dag_preconditions_unmet) {
        return RunStatus::Aborted;
    }
    let failed = dag
        .steps
        .iter()
        .filter_map(|s| steps.get(&s.name))
        .any(|s| matches!(s.status, StepStatus::Failed | StepStatus::Aborted));
    if failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    }
}

/// True when every main step (handlers aside) is final.
fn main_steps_final(dag: &Dag, steps: &BTreeMap<String, StepState>) -> bool {
    dag.steps
        .iter()
        .all(|s| steps.get(&s.name).is_none_or(|st| st.status.is_final()))
}

/// A handler step that has been queued at least once in this round of handlers (a reset
/// handler is pending again and does not count).
fn started_handler(s: &StepState) -> bool {
    s.handler.is_some() && s.status != StepStatus::Pending
}

/// The run status the handlers already queued run for: the `exit` handler's if it was queued,
/// else any other's; `None` before the first handler.
fn recorded_outcome(steps: &BTreeMap<String, StepState>) -> Option<RunStatus> {
    let started = || steps.values().filter(|s| started_handler(s));
    started()
        .find(|s| s.handler == Some(HandlerOn::Exit))
        .or_else(|| started().next())
        .and_then(|s| s.dag_run_status)
}

/// What a run whose main steps are all final does next about its handlers.
#[derive(Debug, PartialEq, Eq)]
enum NextHandler {
    /// A handler is queued or running: wait for it.
    Wait,
    /// Queue this handler.
    Queue(HandlerOn),
    /// No handler is left to run: the run finishes.
    Finish,
}

/// The next handler: `first` (the outcome's) when no handler ran yet and it is defined, else
/// `exit` once, then nothing.
fn next_handler(dag: &Dag, steps: &BTreeMap<String, StepState>, first: HandlerOn) -> NextHandler {
    let started: Vec<&StepState> = steps.values().filter(|s| started_handler(s)).collect();
    if started.iter().any(|s| !s.status.is_final()) {
        return NextHandler::Wait;
    }
    let defined = |on: HandlerOn| dag.handlers.get(on).is_some();
    let exit_ran = started.iter().any(|s| s.handler == Some(HandlerOn::Exit));
    if started.is_empty() && first != HandlerOn::Exit && defined(first) {
        NextHandler::Queue(first)
    } else if !exit_ran && defined(HandlerOn::Exit) {
        NextHandler::Queue(HandlerOn::Exit)
    } else {
        NextHandler::Finish
    }
}

/// The run's final status once its handlers are final: `outcome` (the main steps'), except
/// that a failed handler turns a success into a failure (Dagu: "if a handler exits with a
/// non-zero status, the overall DAG run ends in failed").
fn status_after_handlers(outcome: RunStatus, steps: &BTreeMap<String, StepState>) -> RunStatus {
    let handler_failed = steps
        .values()
        .any(|s| started_handler(s) && s.status == StepStatus::Failed);
    if outcome == RunStatus::Succeeded && handler_failed {
        RunStatus::Failed
    } else {
        outcome
    }
}

/// Queues handler `on` (first attempt, or the next attempt after a reset) for a run whose
/// status will be `outcome`: its state goes into `steps` under the handler's name and its
/// task, with `DAG_RUN_STATUS=<outcome>` in its env, is returned. `None` when the DAG does
/// not define `on`.
fn queue_handler(
    dag: &Dag,
    run: RunCtx<'_>,
    outputs: &[(String, String)],
    steps: &mut BTreeMap<String, StepState>,
    on: HandlerOn,
    outcome: RunStatus,
    now_ms: u64,
) -> Option<StepTask> {
    let step = dag.handlers.get(on)?;
    let state = steps
        .entry(step.name.clone())
        .or_insert_with(StepState::pending);
    *state = StepState {
        status: StepStatus::Queued,
        attempt: state.attempt + 1,
        token: Some(new_token()),
        queued_ms: Some(now_ms),
        handler: Some(on),
        dag_run_status: Some(outcome),
        ..StepState::pending()
    };
    Some(task(dag, run, outputs, step, state, now_ms))
}

/// Puts every handler step of a run back to pending (its state keeps only
/// [`StepState::handler`] and its attempt count), so the handlers run again once the main
/// steps are final again: for a manual retry of a finished run ([`retry`]). Their attempts
/// go to their history and their `retryPolicy` counts afresh, as for a retried step. Returns
/// the names of the handler steps it changed.
pub fn reset_handlers(steps: &mut BTreeMap<String, StepState>) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, s) in steps.iter_mut() {
        if s.handler.is_none() || s.status == StepStatus::Pending {
            continue;
        }
        s.supersede();
        *s = StepState {
            attempt: s.attempt,
            attempt_base: s.attempt,
            history: std::mem::take(&mut s.history),
            handler: s.handler,
            ..StepState::pending()
        };
        changed.push(name.clone());
    }
    changed
}

/// True once the run has passed its DAG's `preconditions` (or the DAG has none): a step has
/// started or become final, so the worker of the first task found them holding. Until then
/// only that task is queued, and it carries the DAG's conditions.
pub fn dag_gate_open(dag: &Dag, steps: &BTreeMap<String, StepState>) -> bool {
    dag.preconditions.is_empty()
        || steps.values().any(|s| {
            s.started_ms.is_some() || !matches!(s.status, StepStatus::Pending | StepStatus::Queued)
        })
}

/// After the DAG's preconditions did not hold: every step not final is skipped (a queued one's
/// ready entry acknowledged and deleted, a waiting retry cancelled).
fn skip_rest(
    run: &RunRecord,
    steps: &mut BTreeMap<String, StepState>,
    t: &mut Transition,
    now_ms: u64,
) {
    for (name, s) in steps.iter_mut() {
        if s.status.is_final() {
            continue;
        }
        if s.status == StepStatus::Retrying {
            t.unschedule.push(delayed_member::retry(&run.id, name));
            t.clear_fields.extend([
                format!("{}{name}", run_field::RETRY_TASK_PREFIX),
                format!("{}{name}", run_field::RETRY_STATE_PREFIX),
            ]);
            s.retry_at_ms = None;
        }
        if let Some(entry) = run.entries.get(name) {
            t.ack_entries.push((name.clone(), entry.clone()));
        }
        s.status = StepStatus::Skipped;
        s.finished_ms = Some(now_ms);
        s.error = Some("not run: the DAG's preconditions did not hold".into());
    }
}

/// Sets the final status of a run whose steps (handlers included) are all final.
fn finish(
    dag: &Dag,
    run: &RunRecord,
    steps: &BTreeMap<String, StepState>,
    status: RunStatus,
    t: &mut Transition,
    now_ms: u64,
) {
    t.status = status;
    t.finished_ms = Some(now_ms);
    if run.started_ms.is_none() && t.started_ms.is_none() {
        t.started_ms = steps.values().filter_map(|s| s.started_ms).min();
    }
    if dag.timeout_ms.is_some() {
        t.unschedule.push(delayed_member::deadline(&run.id));
    }
    schedule_run_retry(dag, run, t, now_ms);
}

/// When a run ends `failed` and its DAG's `retry_policy` (Dagu's DAG-level `retryPolicy`)
/// allows another automatic retry, parks it in the delayed set (`rr:<run id>`) for
/// `delay_ms(n)` (the n-th retry: Dagu's `interval × backoff^(n-1)`, capped) and records its
/// due time in the run ([`run_field::RUN_RETRY_AT`]), in the same transition. Dagu retries
/// failed runs only, not aborted ones.
fn schedule_run_retry(dag: &Dag, run: &RunRecord, t: &mut Transition, now_ms: u64) {
    let Some(policy) = &dag.run_policy.retry else {
        return;
    };
    if t.status != RunStatus::Failed || run.auto_retries >= policy.limit {
        return;
    }
    let due = now_ms.saturating_add(policy.delay_ms(run.auto_retries + 1));
    t.schedule.push((delayed_member::run_retry(&run.id), due));
    t.set_fields
        .push((run_field::RUN_RETRY_AT, due.to_string()));
}

/// The automatic retry of a failed run that fell due (`rr:<run id>`): [`retry`] with the
/// default selection (every failed or aborted step and everything downstream), counted in
/// [`run_field::AUTO_RETRIES`], the delayed member removed in the same transition. `None`
/// when there is nothing to do: the run is no longer `failed` (retried by hand meanwhile) or
/// nothing can run again.
pub fn auto_retry(dag: &Dag, run: &RunRecord, now_ms: u64) -> Option<Transition> {
    if run.status != RunStatus::Failed {
        return None;
    }
    let mut t = retry(dag, run, &RetrySelection::default(), now_ms).ok()?;
    t.set_fields
        .push((run_field::AUTO_RETRIES, (run.auto_retries + 1).to_string()));
    Some(t)
}

/// Ends a run that has not finished: every step not final is aborted with `why` (its ready
/// entry acknowledged and deleted, so the worker running it loses its claim and stops the
/// process group; a waiting retry is cancelled), and the run ends with `status` (aborted for a
/// stop, failed for a DAG `timeoutSec`). `None` when the run has finished already.
///
/// Handlers: a run that has started (status `running`) and defines handlers does not end yet.
/// Before any handler ran, its `abort` handler is queued (else `exit`), with
/// `DAG_RUN_STATUS=<status>`; while a handler other than `exit` runs, it is aborted and `exit`
/// is queued (exit always runs once); a stop while `exit` is queued or running (or once it
/// ran) aborts it and ends the run. The run then ends with `status` once the handlers are
/// final. A run stopped before any step started ends at once, no handler running (as in
/// Dagu, whose handlers only run in a started run).
pub fn stop(
    dag: &Dag,
    run: &RunRecord,
    status: RunStatus,
    why: &str,
    now_ms: u64,
) -> Option<Transition> {
    if run.status.is_final() {
        // A failed run waiting for its automatic retry (DAG `retry_policy`): a stop (`aborted`:
        // `dagrid stop`, a schedule slot) cancels that retry; the run stays as it ended. A late
        // DAG deadline (`failed`) leaves it: a timed-out run is retried.
        if status == RunStatus::Aborted
            && run.status == RunStatus::Failed
            && run.retry_at_ms.is_some()
        {
            let mut t = Transition::new(run.status);
            t.unschedule.push(delayed_member::run_retry(&run.id));
            t.clear_fields.push(run_field::RUN_RETRY_AT.to_string());
            return Some(t);
        }
        return None;
    }
    let mut t = Transition::new(status);
    t.finished_ms = Some(now_ms);
    for (name, s) in &run.steps {
        if s.status.is_final() {
            continue;
        }
        let mut aborted = s.clone();
        if s.status == StepStatus::Retrying {
            t.unschedule.push(delayed_member::retry(&run.id, name));
            t.clear_fields.extend([
                format!("{}{name}", run_field::RETRY_TASK_PREFIX),
                format!("{}{name}", run_field::RETRY_STATE_PREFIX),
            ]);
            aborted.retry_at_ms = None;
        }
        if let Some(entry) = run.entries.get(name) {
            t.ack_entries.push((name.clone(), entry.clone()));
            t.clear_fields
                .push(format!("{}{name}", run_field::ENTRY_PREFIX));
        }
        if s.handler.is_some() && s.status == StepStatus::Pending {
            // A handler reset by a retry that has not run again: it stays pending.
            continue;
        }
        aborted.status = StepStatus::Aborted;
        aborted.finished_ms = Some(now_ms);
        aborted.error = Some(why.to_string());
        t.changed.insert(name.clone(), aborted);
    }
    if dag.timeout_ms.is_some() {
        t.unschedule.push(delayed_member::deadline(&run.id));
    }
    schedule_run_retry(dag, run, &mut t, now_ms);
    if run.status == RunStatus::Running {
        if let Some(on) = handler_after_stop(dag, &run.steps) {
            let mut steps = run.steps.clone();
            steps.extend(t.changed.clone());
            let ctx = RunCtx {
                id: &run.id,
                params: &run.params,
                priority: run.priority,
                resolved: run.resolved.as_ref(),
            };
            let outputs = outputs_of(dag, &steps);
            if let Some(task) = queue_handler(dag, ctx, &outputs, &mut steps, on, status, now_ms) {
                t.changed
                    .insert(task.step.clone(), steps[&task.step].clone());
                t.tasks.push(task);
                t.status = run.status;
                t.finished_ms = None;
                // The run ends once its handlers are final; the retry is scheduled then.
                t.schedule
                    .retain(|(m, _)| *m != delayed_member::run_retry(&run.id));
                t.set_fields.clear();
            }
        }
    }
    Some(t)
}

/// The handler a stop queues, given the run's steps before the stop: `abort` (else `exit`)
/// when no handler ran yet, `exit` when another handler was queued or ran but `exit` did not,
/// else none.
fn handler_after_stop(dag: &Dag, steps: &BTreeMap<String, StepState>) -> Option<HandlerOn> {
    let defined = |on: HandlerOn| dag.handlers.get(on).is_some();
    let mut started = steps.values().filter(|s| started_handler(s)).peekable();
    if started.peek().is_none() && defined(HandlerOn::Abort) {
        return Some(HandlerOn::Abort);
    }
    let exit_ran = started.any(|s| s.handler == Some(HandlerOn::Exit));
    (!exit_ran && defined(HandlerOn::Exit)).then_some(HandlerOn::Exit)
}

/// The policies of a step that decide what follows one of its attempts.
#[derive(Clone, Copy)]
struct Policies<'a> {
    retry: Option<&'a RetryPolicy>,
    continue_on: Option<&'a ContinueOn>,
    repeat: Option<&'a RepeatPolicy>,
}

/// Applies one report to its step. A report counts only while its token is the step's current
/// one and the step is not final.
///
/// After a succeeded or failed attempt, in Dagu's order (`runtime/runner.go`): a failure that
/// the `retryPolicy` retries is retried (the repeat check is not consulted); otherwise, when
/// the worker's repeat check said so ([`StepReport::repeat`]) and the `repeatPolicy`'s
/// `limit` allows, the step runs again ([`repeat_next`]), whatever the attempt's outcome;
/// otherwise the attempt's outcome is final, and `continueOn` applies to a failure.
fn apply_report(
    steps: &mut BTreeMap<String, StepState>,
    r: &StepReport,
    policies: Policies<'_>,
    now_ms: u64,
    events: &mut StepEvents,
) -> Result<Effect, &'static str> {
    let Policies {
        retry: policy,
        continue_on,
        repeat,
    } = policies;
    let s = steps.get_mut(&r.step).ok_or("no such step in this run")?;
    if s.token.as_deref() != Some(r.token.as_str()) {
        return Err("stale attempt (token does not match the current attempt)");
    }
    if s.status.is_final() {
        return Err("duplicate report (the attempt has finished already)");
    }
    // Attempts before this one that were retries or lost-worker re-runs (not repetitions).
    let retries_used = s
        .attempt
        .saturating_sub(1)
        .saturating_sub(s.attempt_base)
        .saturating_sub(s.repeats);
    // The attempt's first report that counts (a final one when its `started` came late).
    if s.status != StepStatus::Running
        && matches!(
            r.kind,
            ReportKind::Started | ReportKind::Succeeded | ReportKind::Failed | ReportKind::Call
        )
    {
        events.started += 1;
    }
    match r.kind {
        ReportKind::Call => {
            // The children exist: the step waits for them, holding no worker (its ready entry
            // was acknowledged with the report, see complete_step.lua).
            s.worker = Some(r.worker.clone());
            s.started_ms = Some(r.started_ms);
            s.children = r.children;
            s.status = StepStatus::Running;
            Ok(Effect::None)
        }
        ReportKind::Started => {
            s.worker = Some(r.worker.clone());
            s.started_ms = Some(r.started_ms);
            s.log_path = r.log_path.clone().or(s.log_path.take());
            s.status = StepStatus::Running;
            Ok(Effect::None)
        }
        ReportKind::Succeeded | ReportKind::Failed => {
            s.worker = Some(r.worker.clone());
            s.started_ms = Some(r.started_ms);
            s.log_path = r.log_path.clone().or(s.log_path.take());
            s.finished_ms = r.finished_ms;
            s.exit_code = r.exit_code;
            s.error = r.error.clone();
            s.output = r.output.clone();
            if r.kind == ReportKind::Succeeded {
                s.status = StepStatus::Succeeded;
                events.succeeded += 1;
                return Ok(repeat_next(s, repeat, r.repeat, now_ms).unwrap_or(Effect::None));
            }
            events.failed += 1;
            match policy {
                Some(p) if retries_used < p.limit && p.retries_exit(r.exit_code) => {
                    events.retried += 1;
                    let due = now_ms.saturating_add(p.delay_ms(retries_used + 1));
                    *s = next_attempt(s, 1, StepStatus::Retrying, None);
                    s.retry_at_ms = Some(due);
                    Ok(Effect::RetryAt(due))
                }
                _ => {
                    s.status = StepStatus::Failed;
                    if let Some(effect) = repeat_next(s, repeat, r.repeat, now_ms) {
                        return Ok(effect);
                    }
                    let covered =
                        continue_on.filter(|c| c.covers_failure(r.exit_code, r.output_matched));
                    if let Some(c) = covered {
                        continue_failure(s, c);
                    }
                    Ok(Effect::None)
                }
            }
        }
        ReportKind::Skipped | ReportKind::DagPreconditionsUnmet => {
            s.worker = Some(r.worker.clone());
            s.status = StepStatus::Skipped;
            s.finished_ms = r.finished_ms.or(Some(now_ms));
            s.exit_code = None;
            s.error = r.error.clone();
            s.output = None;
            if r.kind == ReportKind::DagPreconditionsUnmet {
                s.dag_preconditions_unmet = true;
                return Ok(Effect::DagUnmet);
            }
            s.continued = continue_on.is_some_and(|c| c.skipped);
            Ok(Effect::None)
        }
        ReportKind::Lost => {
            s.lost += 1;
            events.reclaimed += 1;
            let limit = policy.map_or(0, |p| p.limit).max(LOST_RETRIES);
            if retries_used < limit {
                events.retried += 1;
                // The attempt's record says it was lost, and when it was taken back.
                s.status = StepStatus::Lost;
                s.finished_ms = r.finished_ms.or(Some(now_ms));
                s.exit_code = None;
                s.error = r.error.clone();
                *s = next_attempt(s, 1, StepStatus::Queued, Some(now_ms));
                return Ok(Effect::Requeue);
            }
            s.status = StepStatus::Failed;
            s.finished_ms = Some(now_ms);
            s.exit_code = None;
            s.error = Some(format!(
                "{}; the step lost its worker {} time(s), giving up (at most {} retries)",
                r.error
                    .as_deref()
                    .unwrap_or("its worker stopped sending heartbeats"),
                s.lost,
                limit
            ));
            if let Some(c) = continue_on.filter(|c| c.covers_failure(None, false)) {
                continue_failure(s, c);
            }
            Ok(Effect::None)
        }
        ReportKind::Released => {
            // A shutdown burns no attempt: same number, new token.
            *s = next_attempt(s, 0, StepStatus::Queued, Some(now_ms));
            Ok(Effect::Requeue)
        }
    }
}

/// After an execution of step `s` that ended (its status and fields set): when its
/// `repeatPolicy` runs it again (the worker's check said so and the `limit` is not reached),
/// the next attempt, as a retry is: the ended attempt goes to the history, and the next one
/// waits in the delayed set for [`RepeatPolicy::delay_ms`] (status `retrying`, with
/// `retry_at_ms`), or is queued now when there is no wait. Repetitions do not check the
/// step's preconditions again (Dagu checks them once, before the first execution). `None`:
/// the execution's outcome is final.
fn repeat_next(
    s: &mut StepState,
    policy: Option<&RepeatPolicy>,
    wanted: bool,
    now_ms: u64,
) -> Option<Effect> {
    let policy = policy?;
    let done = s.repeats.saturating_add(1);
    if !wanted || !policy.allows_after(done) {
        return None;
    }
    let delay = policy.delay_ms(done);
    let effect = if delay == 0 {
        *s = next_attempt(s, 1, StepStatus::Queued, Some(now_ms));
        Effect::Requeue
    } else {
        let due = now_ms.saturating_add(delay);
        *s = next_attempt(s, 1, StepStatus::Retrying, None);
        s.retry_at_ms = Some(due);
        Effect::RetryAt(due)
    };
    s.repeats = done;
    s.ignore_preconditions = true;
    Some(effect)
}

/// A failed step whose `continueOn` covers the failure: its dependants run, and with
/// `markSuccess` it counts as succeeded (its exit code and error stay visible).
fn continue_failure(s: &mut StepState, c: &ContinueOn) {
    s.continued = true;
    if c.mark_success {
        s.status = StepStatus::Succeeded;
        let why = s.error.take().unwrap_or_else(|| match s.exit_code {
            Some(code) => format!("exit code {code}"),
            None => "failed".into(),
        });
        s.error = Some(format!("{why}; marked succeeded (continueOn.markSuccess)"));
    }
}

/// The step's next attempt after `s`: its number `step` more (0 keeps it), a new token, in
/// `status`, queued at `queued_ms`, no worker or times yet. The last attempt's exit code and
/// error stay visible until the next one ends.
fn next_attempt(s: &StepState, step: u32, status: StepStatus, queued_ms: Option<u64>) -> StepState {
    let mut s = s.clone();
    if step > 0 {
        s.supersede();
    }
    StepState {
        status,
        attempt: s.attempt + step,
        token: Some(new_token()),
        worker: None,
        queued_ms,
        started_ms: None,
        finished_ms: None,
        output: None,
        ..s
    }
}

/// Queues every pending step whose dependencies all succeeded (in DAG file order, while fewer
/// than the DAG's `maxActiveSteps` are queued or running) and skips every pending step with a
/// dependency that failed or was skipped, until nothing changes. Returns the names of the
/// steps it queued. While `evaluating` ([`evaluation_pending`]) or the DAG's preconditions
/// are unchecked, at most one step is queued or running.
fn release(
    dag: &Dag,
    steps: &mut BTreeMap<String, StepState>,
    now_ms: u64,
    evaluating: bool,
) -> Vec<String> {
    let mut newly_queued = Vec::new();
    let mut active = steps
        .values()
        .filter(|s| {
            matches!(
                s.status,
                StepStatus::Queued | StepStatus::Running | StepStatus::Retrying
            )
        })
        .count();
    let mut limit = dag.max_active_steps.map_or(usize::MAX, |n| n as usize);
    if !dag_gate_open(dag, steps) || evaluating {
        // One step carries the DAG's preconditions (or evaluates the run's values); the others
        // wait for its verdict.
        limit = limit.min(1);
    }
    loop {
        let mut changed = false;
        for step in &dag.steps {
            if steps.get(&step.name).map(|s| s.status) != Some(StepStatus::Pending) {
                continue;
            }
            let mut blocked_by = None;
            let mut ready = true;
            for d in &step.depends {
                match steps.get(d).map(|s| (s.status, s.continued)) {
                    Some((StepStatus::Succeeded, _)) => {}
                    Some((StepStatus::Failed | StepStatus::Skipped, true)) => {}
                    Some((StepStatus::Failed | StepStatus::Skipped | StepStatus::Aborted, _)) => {
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
                state.continued = step.continue_on.as_ref().is_some_and(|c| c.skipped);
                changed = true;
            } else if ready && active < limit {
                active += 1;
                state.status = StepStatus::Queued;
                state.attempt += 1;
                state.token = Some(new_token());
                state.queued_ms = Some(now_ms);
                newly_queued.push(step.name.clone());
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    newly_queued
}

/// The `output` variables of the steps that succeeded, in DAG file order.
pub fn outputs_of(dag: &Dag, steps: &BTreeMap<String, StepState>) -> Vec<(String, String)> {
    dag.steps
        .iter()
        .filter_map(|s| steps.get(&s.name))
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.output.clone())
        .collect()
}

/// The task of step `name`'s current attempt, queued at `now_ms`.
fn task_of(
    dag: &Dag,
    run: RunCtx<'_>,
    outputs: &[(String, String)],
    name: &str,
    steps: &BTreeMap<String, StepState>,
    now_ms: u64,
) -> Option<StepTask> {
    let step = dag.step_or_handler(name)?;
    let mut task = task(dag, run, outputs, step, steps.get(name)?, now_ms);
    // While the run's values are not stored, no attempt has passed the DAG's gate for sure: an
    // attempt whose evaluation failed never reached it (the worker evaluates first).
    if !dag_gate_open(dag, steps) || evaluation_pending(dag, run.resolved) {
        task.dag_preconditions = dag.preconditions.clone();
    }
    Some(task)
}

/// The ready-stream payload of one step attempt; see [`StepTask::env`] for the env order.
fn task(
    dag: &Dag,
    run: RunCtx<'_>,
    outputs: &[(String, String)],
    step: &crate::dag::Step,
    state: &StepState,
    now_ms: u64,
) -> StepTask {
    let mut env: Vec<(String, String)> = vec![
        ("DAG_NAME".into(), dag.name.clone()),
        ("DAG_RUN_ID".into(), run.id.to_string()),
        ("DAG_RUN_STEP_NAME".into(), step.name.clone()),
    ];
    if let Some(status) = state.dag_run_status.filter(|_| state.handler.is_some()) {
        env.push(("DAG_RUN_STATUS".into(), status.as_str().into()));
    }
    env.extend(
        run.params
            .iter()
            .filter_map(|p| p.name.clone().map(|n| (n, p.value.clone()))),
    );
    let computed = run
        .resolved
        .map(|r| r.params.as_slice())
        .unwrap_or_default();
    env.extend(computed.iter().cloned());
    // Only the DAG's and the step's own `env` text is expanded on the worker; params, outputs
    // and the run's evaluated values are data (see StepTask::expand).
    let mut expand: Vec<u32> = Vec::new();
    let env_from = env.len();
    for (name, value, expands) in ready::dag_env(dag, run.resolved) {
        if expands {
            expand.push(env.len() as u32);
        }
        env.push((name.to_string(), value.to_string()));
    }
    env.extend(outputs.iter().cloned());
    for e in &step.env {
        expand.push(env.len() as u32);
        env.push((e.name.clone(), e.value.clone()));
    }
    let evaluate = evaluation_pending(dag, run.resolved);
    StepTask {
        call: step.call.clone(),
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
        expand,
        args: run
            .params
            .iter()
            .map(|p| p.value.clone())
            .chain(computed.iter().map(|(_, v)| v.clone()))
            .collect(),
        output: step.output.clone(),
        queued_ms: now_ms,
        priority: run.priority,
        timeout_ms: step.timeout_ms,
        stop_signal: step.signal_on_stop.clone(),
        cleanup_ms: dag.max_cleanup_ms.unwrap_or(crate::dag::DEFAULT_CLEANUP_MS),
        ignore_preconditions: state.ignore_preconditions,
        preconditions: step.preconditions.clone(),
        dag_preconditions: Vec::new(),
        continue_on_output: step
            .continue_on
            .as_ref()
            .map(|c| c.output.clone())
            .unwrap_or_default(),
        repeat: step.repeat.clone(),
        max_output_size: dag.max_output_size,
        repeats: state.repeats,
        dag_values: ready::dag_values(dag, run.params, env_from, evaluate, run.resolved),
    }
}

/// What a manual retry (`dagrid retry`, `POST /api/v1/runs/{id}/retry`) runs again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySelection {
    /// Only this step (Dagu's `retry --step`); `None`: every failed or aborted step and
    /// everything downstream of them.
    pub step: Option<String>,
    /// With `step`: the step and all its descendants (Dagu's `--downstream`).
    pub downstream: bool,
    /// The retried steps run even if their own `preconditions` do not hold (Dagu's
    /// `--bypass-preconditions`); sets [`StepState::ignore_preconditions`] on each.
    pub ignore_preconditions: bool,
}

/// Why a manual retry cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// The run is still queued or running.
    #[error("the run is still {0}; stop it or wait for it to finish before retrying it")]
    Active(RunStatus),
    /// The selection names a step the run does not have.
    #[error("the run has no step \"{step}\"; its steps are: {}", steps.join(", "))]
    UnknownStep {
        /// The step asked for.
        step: String,
        /// The run's steps, in DAG file order.
        steps: Vec<String>,
    },
    /// `downstream` without `step`.
    #[error("`downstream` needs `step`: it retries that step and its descendants (a retry without a step already runs everything downstream of the failed steps)")]
    DownstreamWithoutStep,
    /// No step failed or was aborted, and no step was named.
    #[error("no step of the run failed or was aborted; name the step to run again with `step`")]
    NothingToRetry,
    /// The step to retry would be skipped at once: a dependency did not succeed.
    #[error("step \"{step}\" depends on \"{dependency}\", which is {}; retry \"{dependency}\" with `downstream`, or the whole run", status.as_str())]
    DependencyNotSucceeded {
        /// The step asked for.
        step: String,
        /// Its dependency that did not succeed.
        dependency: String,
        /// That dependency's status.
        status: StepStatus,
    },
}

/// A manual retry of a finished run (Dagu's `retry`): a new attempt of the selected steps in
/// the same run. With no step, every failed or aborted step and everything downstream of them
/// (which covers the steps skipped because a dependency failed: a skipped step is retried only
/// when it is downstream of a failed or aborted one, so a step skipped for its own reasons
/// stays skipped); with `step`, that step only, or with `downstream` it and its descendants.
/// Succeeded steps keep their state and their `output` reaches the retried steps.
///
/// Each retried step's current attempt goes to its [`StepState::history`], it becomes pending
/// with its attempt number kept (the next one counts on) and its `retryPolicy` counted afresh
/// ([`StepState::attempt_base`]); then the steps whose dependencies succeeded are queued as for
/// a new run. The run becomes `running` again (its `finished` field cleared; a DAG
/// `timeoutSec` counts again from now).
///
/// # Errors
/// [`RetryError`]: the run is active, the step is unknown, `downstream` without a step,
/// nothing failed, or the step would be skipped at once.
pub fn retry(
    dag: &Dag,
    run: &RunRecord,
    selection: &RetrySelection,
    now_ms: u64,
) -> Result<Transition, RetryError> {
    if !run.status.is_final() {
        return Err(RetryError::Active(run.status));
    }
    if selection.downstream && selection.step.is_none() {
        return Err(RetryError::DownstreamWithoutStep);
    }
    let selected: std::collections::BTreeSet<String> = match &selection.step {
        Some(name) => {
            if dag.step_index(name).is_none() || !run.steps.contains_key(name) {
                return Err(RetryError::UnknownStep {
                    step: name.clone(),
                    steps: dag.steps.iter().map(|s| s.name.clone()).collect(),
                });
            }
            let mut set = std::collections::BTreeSet::from([name.clone()]);
            if selection.downstream {
                set.extend(descendants(dag, &set));
            }
            set
        }
        None => {
            let seeds: std::collections::BTreeSet<String> = run
                .steps
                .iter()
                .filter(|(_, s)| {
                    s.handler.is_none()
                        && matches!(s.status, StepStatus::Failed | StepStatus::Aborted)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if seeds.is_empty() {
                return Err(RetryError::NothingToRetry);
            }
            let mut set = descendants(dag, &seeds);
            set.extend(seeds);
            set
        }
    };
    let mut steps = run.steps.clone();
    for name in &selected {
        let Some(s) = steps.get_mut(name) else {
            continue;
        };
        s.supersede();
        *s = StepState {
            attempt: s.attempt,
            attempt_base: s.attempt,
            history: std::mem::take(&mut s.history),
            ignore_preconditions: selection.ignore_preconditions,
            ..StepState::pending()
        };
    }
    // The handlers (`handlerOn`) run again once the main steps are final again.
    reset_handlers(&mut steps);
    let released = release(
        dag,
        &mut steps,
        now_ms,
        evaluation_pending(dag, run.resolved.as_ref()),
    );
    if let Some(name) = &selection.step {
        if steps.get(name).map(|s| s.status) == Some(StepStatus::Skipped) {
            let step = &dag.steps[dag.step_index(name).unwrap_or_default()];
            let (dependency, status) = step
                .depends
                .iter()
                .filter_map(|d| Some((d.clone(), steps.get(d)?.status)))
                .find(|(_, st)| *st != StepStatus::Succeeded)
                .unwrap_or_else(|| (String::new(), StepStatus::Skipped));
            return Err(RetryError::DependencyNotSucceeded {
                step: name.clone(),
                dependency,
                status,
            });
        }
    }
    if released.is_empty() {
        return Err(RetryError::NothingToRetry);
    }
    let mut t = Transition::new(RunStatus::Running);
    t.clear_fields.push(run_field::FINISHED.to_string());
    // A retry by hand replaces an automatic one that waits (`retry_policy`).
    t.clear_fields.push(run_field::RUN_RETRY_AT.to_string());
    t.unschedule.push(delayed_member::run_retry(&run.id));
    if let Some(limit) = dag.timeout_ms {
        t.schedule.push((
            delayed_member::deadline(&run.id),
            now_ms.saturating_add(limit),
        ));
    }
    let ctx = RunCtx {
        id: &run.id,
        params: &run.params,
        priority: run.priority,
        resolved: run.resolved.as_ref(),
    };
    let outputs = outputs_of(dag, &steps);
    t.tasks = released
        .iter()
        .filter_map(|name| task_of(dag, ctx, &outputs, name, &steps, now_ms))
        .collect();
    t.changed = steps
        .into_iter()
        .filter(|(name, s)| run.steps.get(name) != Some(s))
        .collect();
    Ok(t)
}

/// Every step downstream of `from` (its dependants, theirs, …), not counting `from` itself.
fn descendants(
    dag: &Dag,
    from: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut frontier: Vec<&str> = from.iter().map(String::as_str).collect();
    while let Some(name) = frontier.pop() {
        for s in &dag.steps {
            if s.depends.iter().any(|d| d == name)
                && !from.contains(&s.name)
                && out.insert(s.name.clone())
            {
                frontier.push(&s.name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
