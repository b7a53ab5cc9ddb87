//! What writes a [`crate::plan::Transition`] to Redis: the `apply_transition` script call
//! ([`call`]), its events section ([`transition_events`], [`push_section`]) and what it adds to
//! the metrics once written ([`Counted`]). Shared by the coordinator (reports from the results
//! stream, stops, retries) and the workers (which apply their own final reports).

use std::time::Duration;

use crate::dag::Dag;
use crate::model::{self, Event, RunRecord, RunStatus};
use crate::plan;
use crate::redis::conn::ConnError;
use crate::redis::fields::{run_field, EVENTS_CAP};
use crate::redis::keys::{Keys, COORDINATOR_GROUP, WORKER_GROUP};
use crate::redis::scripts;
use crate::{ready, stored};

/// A client-side encoding failure as a [`ConnError`].
pub fn encoding(e: impl std::fmt::Display) -> ConnError {
    ConnError::Redis(redis::RedisError::from((
        redis::ErrorKind::Client,
        "encoding",
        e.to_string(),
    )))
}

/// What a transition adds to the metrics once it is written (the compare-and-set won): its
/// step events, the run's finish, the run's queue wait (its first step started).
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    events: crate::metrics::StepEvents,
    finished: Option<&'static str>,
    queue_wait_ms: Option<u64>,
}

impl Counted {
    /// What `t` applied to `run` counts.
    pub fn of(run: &RunRecord, t: &plan::Transition) -> Self {
        let waited_from = run.created_ms.max(run.due_ms.unwrap_or(0));
        Self {
            events: t.events,
            finished: (t.status.is_final() && !run.status.is_final()).then(|| t.status.as_str()),
            queue_wait_ms: t
                .started_ms
                .filter(|_| run.started_ms.is_none())
                .map(|started| started.saturating_sub(waited_from)),
        }
    }

    /// Counts it: call once the transition was written.
    pub fn count(&self) {
        use crate::metrics;
        metrics::steps_applied(&self.events);
        if let Some(status) = self.finished {
            metrics::run_finished(status);
        }
        if let Some(ms) = self.queue_wait_ms {
            metrics::queue_wait(Duration::from_millis(ms));
        }
    }
}

/// What a worker applying its own final reports adds to the `apply_transition` call, so that
/// the call also does what `complete_step.lua` does on the results-stream path.
#[derive(Debug, Clone, Default)]
pub struct WorkerPart {
    /// Ready-stream entries of the finished attempts, as (step name, entry id): each on its
    /// step's stream (the run's priority and [`Dag::selector_of`] the step), to acknowledge and
    /// delete.
    pub entries: Vec<(String, String)>,
    /// Log tails of the finished attempts, to store.
    pub tails: Vec<TailWrite>,
}

/// One finished attempt's log tail, for [`WorkerPart::tails`].
#[derive(Debug, Clone)]
pub struct TailWrite {
    /// The step's log tail key ([`Keys::log_tail`]).
    pub key: String,
    /// The end of the attempt's combined output (bytes).
    pub tail: Vec<u8>,
    /// Total bytes of output.
    pub size: u64,
    /// The attempt number.
    pub attempt: u32,
}

/// The `apply_transition` call writing `t` to `run` and acknowledging the results-stream
/// entries `entry_ids` (none for a stop). With `worker` (a worker applying its own reports),
/// it also acknowledges and deletes the attempts' ready entries, stores their log tails, and
/// leaves admission to the coordinators: when the run finishes and runs wait in its queue, the
/// script adds an admission request (field `a`) to the results stream.
pub fn call<'a>(
    keys: &Keys,
    dag: &Dag,
    run: &RunRecord,
    entry_ids: &[String],
    t: &plan::Transition,
    worker: Option<&WorkerPart>,
) -> Result<redis::ScriptInvocation<'a>, ConnError> {
    let enc = encoding;
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, state) in &t.changed {
        fields.push((
            format!("{}{name}", run_field::STEP_PREFIX),
            stored::encode_step(state).map_err(enc)?,
        ));
    }
    for r in &t.retries {
        let name = &r.task.step;
        fields.push((
            format!("{}{name}", run_field::RETRY_TASK_PREFIX),
            ready::encode(&r.task, dag, &run.spec, &run.params).map_err(enc)?,
        ));
        fields.push((
            format!("{}{name}", run_field::RETRY_STATE_PREFIX),
            stored::encode_step(&r.queued).map_err(enc)?,
        ));
    }
    if t.status != run.status {
        fields.push((
            run_field::STATUS.into(),
            t.status.as_str().as_bytes().to_vec(),
        ));
    }
    if let Some(ms) = t.started_ms {
        fields.push((run_field::STARTED.into(), ms.to_string().into_bytes()));
    }
    if let Some(ms) = t.finished_ms {
        fields.push((run_field::FINISHED.into(), ms.to_string().into_bytes()));
    }
    for (f, v) in &t.set_fields {
        fields.push(((*f).to_string(), v.clone().into_bytes()));
    }
    // A step's ready-entry field (`e:<step>`) is blanked in the script's one HSET rather than
    // deleted with an HDEL of its own (a command fewer each time a step leaves its queue);
    // readers take an empty one as none ([`crate::stored`]). A task queued again by the same
    // transition sets it after the blank, in the same HSET.
    let (blanked, cleared): (Vec<&String>, Vec<&String>) = t
        .clear_fields
        .iter()
        .partition(|f| f.starts_with(run_field::ENTRY_PREFIX));
    for f in blanked {
        fields.push((f.clone(), Vec::new()));
    }
    if let Some(resolved) = &t.resolved {
        fields.push((
            run_field::RESOLVED.into(),
            model::encode(resolved).map_err(enc)?,
        ));
    }
    let finished = if t.status.is_final() && !run.status.is_final() {
        t.status.as_str()
    } else if run.status.is_final() && !t.status.is_final() {
        // A manual retry (plan::retry): the run becomes active again.
        "reopen"
    } else {
        ""
    };
    // The run's ready streams: its own (field `ws`), then those of its steps' own selectors,
    // after the fixed keys; tasks and entries name theirs by index.
    let selectors = dag.selectors();
    let stream_of = |step: &str| -> usize {
        if selectors.len() == 1 {
            return 0;
        }
        let of = dag.selector_of(step);
        selectors.iter().position(|s| *s == of).unwrap_or(0)
    };
    let mut inv = scripts::APPLY_TRANSITION.prepare_invoke();
    inv.key(keys.run(&run.id))
        .key(keys.ready_of(run.priority.get(), &run.selector))
        .key(keys.results())
        .key(keys.runs_by_status(run.status.as_str()))
        .key(keys.runs_by_status(t.status.as_str()))
        .key(keys.active(&run.queue))
        .key(keys.active_dag(&run.dag))
        .key(
            run.dedup_key
                .as_deref()
                .map_or_else(|| keys.dedup(&run.dag, "-"), |f| keys.dedup_named(f)),
        )
        .key(keys.waiting(&run.queue))
        .key(keys.delayed())
        .key(keys.events())
        .arg(run.version)
        .arg(COORDINATOR_GROUP)
        .arg(&run.id)
        .arg(finished)
        .arg(if run.dedup_key.is_some() { "1" } else { "0" })
        .arg(run.dedup_window_ms)
        .arg(WORKER_GROUP)
        .arg(if run.dag_limit > 0 { "1" } else { "0" })
        .arg(if may_wait(run) { "1" } else { "0" })
        .arg(if worker.is_some() {
            run.queue.as_str()
        } else {
            ""
        })
        .arg(selectors.len() - 1);
    for selector in &selectors[1..] {
        inv.key(keys.ready_of(run.priority.get(), selector));
    }
    if let Some(w) = worker {
        for tail in &w.tails {
            inv.key(&tail.key);
        }
    }
    inv.key(keys.dedup_holders());
    inv.arg(entry_ids.len());
    for id in entry_ids {
        inv.arg(id);
    }
    inv.arg(fields.len());
    for (f, v) in &fields {
        inv.arg(f).arg(v);
    }
    inv.arg(cleared.len());
    for f in cleared {
        inv.arg(f);
    }
    inv.arg(t.tasks.len());
    for task in &t.tasks {
        inv.arg(&task.step)
            .arg(stream_of(&task.step))
            .arg(ready::encode(task, dag, &run.spec, &run.params).map_err(enc)?);
    }
    let ready_entries = worker.map_or(&[][..], |w| w.entries.as_slice());
    inv.arg(t.ack_entries.len() + ready_entries.len());
    for (step, id) in t.ack_entries.iter().chain(ready_entries) {
        inv.arg(stream_of(step)).arg(id);
    }
    let tails = worker.map_or(&[][..], |w| w.tails.as_slice());
    inv.arg(tails.len());
    for tail in tails {
        inv.arg(tail.tail.as_slice())
            .arg(tail.size)
            .arg(tail.attempt);
    }
    let schedule: Vec<(String, u64)> = t
        .schedule
        .iter()
        .cloned()
        .chain(t.retries.iter().map(|r| {
            (
                crate::redis::fields::delayed_member::retry(&run.id, &r.task.step),
                r.due_ms,
            )
        }))
        .collect();
    inv.arg(schedule.len());
    for (member, due) in &schedule {
        inv.arg(member).arg(*due);
    }
    inv.arg(t.unschedule.len());
    for member in &t.unschedule {
        inv.arg(member);
    }
    let events = transition_events(run, t);
    push_section(&mut inv, &run.id, &run.dag, &events).map_err(encoding)?;
    match (&run.parent, t.status.is_final() && !run.status.is_final()) {
        (Some(parent), true) => {
            let mut steps = run.steps.clone();
            steps.extend(t.changed.iter().map(|(k, v)| (k.clone(), v.clone())));
            let result = model::ChildResult {
                status: t.status,
                dag: run.dag.clone(),
                params: params_line(&run.params),
                outputs: plan::outputs_of(dag, &steps),
            };
            inv.key(keys.fan(&parent.run, &parent.step))
                .arg(1)
                .arg(model::encode(&result).map_err(enc)?)
                .arg(format!("{}\n{}", parent.run, parent.step));
        }
        _ => {
            inv.arg(0);
        }
    }
    Ok(inv)
}

/// Whether `run` may be in its queue's waiting set or in the delayed set (ARGV[9] of
/// `apply_transition`, which then removes it from both when it finishes): it is `queued` and
/// either not admitted yet (no step has a ready entry: its root tasks are still held) or
/// shows why it waits (field `reason`, set while it waits and removed on admission). An
/// admitted run (any ready entry) is in neither, so its finish skips two ZREMs.
fn may_wait(run: &RunRecord) -> bool {
    run.status == RunStatus::Queued && (run.entries.is_empty() || run.reason.is_some())
}

/// A run's params as one line, as Dagu shows a run's `params`: `NAME=value` for a named
/// param, the value for a positional one, space-separated.
pub fn params_line(params: &[crate::dag::BoundParam]) -> String {
    params
        .iter()
        .map(|p| match &p.name {
            Some(n) => format!("{n}={}", p.value),
            None => p.value.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One event of a script's events section: step name (`""` for the run), status, attempt
/// (`""` for the run).
pub type SectionEvent = (String, &'static str, String);

/// The events of a transition of `run`: each step whose status or attempt changes (in step
/// name order), then the run when its status changes.
pub fn transition_events(run: &RunRecord, t: &plan::Transition) -> Vec<SectionEvent> {
    let mut out = Vec::new();
    for (name, state) in &t.changed {
        let old = run.steps.get(name).map(|s| (s.status, s.attempt));
        if old != Some((state.status, state.attempt)) {
            out.push((
                name.clone(),
                state.status.as_str(),
                state.attempt.to_string(),
            ));
        }
    }
    if t.status != run.status {
        out.push((String::new(), t.status.as_str(), String::new()));
    }
    out
}

/// Appends an events section (lua/events.lua `add_events`) to a script call: the number of
/// entries, then the cap and each entry's packed fields ([`section_entries`]; the time of the
/// events is their entry's id).
///
/// # Errors
/// Only when an entry cannot be packed as MessagePack (never for strings).
pub fn push_section(
    inv: &mut redis::ScriptInvocation<'_>,
    run_id: &str,
    dag: &str,
    events: &[SectionEvent],
) -> Result<(), rmp_serde::encode::Error> {
    let entries = section_entries(run_id, dag, events)?;
    inv.arg(entries.len());
    if entries.is_empty() {
        return Ok(());
    }
    inv.arg(EVENTS_CAP);
    for e in &entries {
        inv.arg(e.as_slice());
    }
    Ok(())
}

/// The events-stream entries of `events` of run `run_id`, each as the value of its field `e`
/// ([`crate::model::Event::pack`]): one per step change, the run's status change (its step
/// `""`) riding in `rs` of the first when it is `queued` (a run is queued before its steps),
/// else of the last; an entry of its own only when no step changed.
pub fn section_entries(
    run_id: &str,
    dag: &str,
    events: &[SectionEvent],
) -> Result<Vec<Vec<u8>>, rmp_serde::encode::Error> {
    let rs = events
        .iter()
        .rev()
        .find(|(step, _, _)| step.is_empty())
        .map_or("", |(_, status, _)| *status);
    let steps: Vec<_> = events.iter().filter(|(s, _, _)| !s.is_empty()).collect();
    if steps.is_empty() {
        return if rs.is_empty() {
            Ok(Vec::new())
        } else {
            Ok(vec![Event::pack(run_id, dag, "", rs, "", "")?])
        };
    }
    let carrier = if rs == RunStatus::Queued.as_str() {
        0
    } else {
        steps.len() - 1
    };
    steps
        .iter()
        .enumerate()
        .map(|(j, (step, status, attempt))| {
            let rs = if j == carrier { rs } else { "" };
            Event::pack(run_id, dag, step, status, attempt, rs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of an events section, read back (`Event::from_entry`): the run's `queued`
    /// rides on the first step's entry, another run status on the last's, and a run change with
    /// no step change has an entry of its own.
    #[test]
    fn section_entries_carry_the_run_change_on_one_step() {
        let read = |events: &[SectionEvent]| -> Vec<Vec<(Option<String>, String)>> {
            section_entries("r", "d", events)
                .unwrap()
                .iter()
                .map(|e| {
                    Event::from_entry([("e", e.as_slice())])
                        .into_iter()
                        .map(|e| (e.step, e.status))
                        .collect()
                })
                .collect()
        };
        let ev = |step: &str, status: &'static str, attempt: &str| {
            (step.to_string(), status, attempt.to_string())
        };
        let step = |s: &str, st: &str| (Some(s.to_string()), st.to_string());
        let run = |st: &str| (None, st.to_string());
        assert_eq!(
            read(&[
                ev("a", "queued", "1"),
                ev("b", "queued", "1"),
                ev("", "queued", "")
            ]),
            [
                vec![run("queued"), step("a", "queued")],
                vec![step("b", "queued")]
            ]
        );
        assert_eq!(
            read(&[
                ev("a", "succeeded", "1"),
                ev("b", "skipped", "0"),
                ev("", "succeeded", "")
            ]),
            [
                vec![step("a", "succeeded")],
                vec![step("b", "skipped"), run("succeeded")]
            ]
        );
        assert_eq!(read(&[ev("", "aborted", "")]), [vec![run("aborted")]]);
        assert_eq!(
            read(&[ev("a", "running", "1")]),
            [vec![step("a", "running")]]
        );
        assert!(read(&[]).is_empty());
    }
}
