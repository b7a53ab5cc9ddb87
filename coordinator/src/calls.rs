//! Sub-DAG steps on the coordinators (docs/architecture.md, "Sub-DAGs"). The orchestrator hands
//! this module a call step's `call` report, to create the step's child runs before the report
//! is applied, and the results-stream entry `c` that says they have all finished, to turn their
//! results into the step's final report (Dagu's output shapes).

use std::collections::BTreeMap;

use dagrid_shared::dag::{CallPlan, Dag, DEFAULT_MAX_OUTPUT_SIZE, MAX_CALL_DEPTH};
use dagrid_shared::model::{
    self, ChildResult, ParentLink, ReportKind, RunRecord, RunStatus, StepReport,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::store::admission::{
    dedup_key, parallel_queue, Idempotency, NewRun, Outcome, QueueOf, Trigger,
};
use crate::store::calls::{ArmedChild, Fan};
use crate::store::{Store, StoreResult};

/// Creates the child runs of the call step `report` (a [`ReportKind::Call`] report) is about,
/// through the queues, and records in `report.children` how many the step waits for. When the
/// children cannot be created (no such DAG, params that do not bind, too deep), the report
/// becomes a `failed` one saying why. A report whose attempt is no longer current is left as it
/// is (the plan ignores it).
///
/// Idempotent: the children are submitted under an `Idempotency-Key` of the attempt, so a
/// coordinator that takes the report over from one that died half-way creates none twice.
///
/// # Errors
/// Redis errors; the report stays pending and is handled again.
pub(crate) async fn create_children(store: &Store, report: &mut StepReport) -> StoreResult<()> {
    let Some(plan) = report.call.clone() else {
        return Ok(());
    };
    let Some(parent) = store.run(&report.run_id).await? else {
        return Ok(());
    };
    let current = parent
        .steps
        .get(&report.step)
        .is_some_and(|s| s.token.as_deref() == Some(report.token.as_str()) && !s.status.is_final());
    if !current {
        return Ok(());
    }
    let runs = match child_runs(store, &parent, &report.step, &plan).await? {
        Ok(runs) => runs,
        Err(why) => {
            fail(report, why);
            return Ok(());
        }
    };
    let keys = store.keys();
    store
        .fan_reset(&parent.id, &report.step, &report.token)
        .await?;
    let body = model::encode(&plan).unwrap_or_default();
    let idem = Idempotency {
        key: keys.idempotency(&format!(
            "call:{}:{}:{}",
            parent.id, report.step, report.token
        )),
        digest: hex::encode(Sha256::digest(&body)),
    };
    let submitted = store.submit(&runs, Some(&idem)).await?;
    // Distinct children in the order of their first item; items with the same params share a
    // run (dedup), as Dagu gives them one run id.
    let mut order: Vec<String> = Vec::new();
    let mut items: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut deduplicated = Vec::new();
    for (i, s) in submitted.iter().enumerate() {
        if s.outcome == Outcome::KeyReused {
            fail(
                report,
                "the child runs' Idempotency-Key was used for other children".into(),
            );
            return Ok(());
        }
        let seen = items.entry(s.id.clone()).or_default();
        if seen.is_empty() {
            order.push(s.id.clone());
            if s.outcome.deduplicated() {
                deduplicated.push(s.id.clone());
            }
        }
        seen.push(i);
    }
    // A child deduplicated onto a run that has finished (a `dedup: window` DAG, or a rerun
    // parent) counts with that run's result: it will not finish again.
    let mut finished: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (id, run) in deduplicated.iter().zip(store.runs(&deduplicated).await?) {
        let Some(run) = run.filter(|r| r.status.is_final()) else {
            continue;
        };
        if let Some(dag) = store.spec(&run.spec).await? {
            let result = child_result(&dag, &run);
            finished.insert(id.clone(), model::encode(&result).unwrap_or_default());
        }
    }
    let armed: Vec<ArmedChild> = order
        .iter()
        .map(|id| {
            let list = items[id]
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",");
            (id.clone(), list, finished.remove(id))
        })
        .collect();
    let left = store
        .fan_arm(&parent.id, &report.step, &report.token, &armed)
        .await?;
    if left < 0 {
        // A newer attempt of the step took the fan hash: this report is stale.
        return Ok(());
    }
    report.children = u32::try_from(order.len()).unwrap_or(u32::MAX);
    info!(
        run.id = %parent.id,
        step = %report.step,
        dag = %plan.dag,
        children = order.len(),
        items = submitted.len(),
        "child runs created"
    );
    Ok(())
}

/// The child runs of `plan`, checked against their DAG, or why they cannot run.
async fn child_runs(
    store: &Store,
    parent: &RunRecord,
    step: &str,
    plan: &CallPlan,
) -> StoreResult<Result<Vec<NewRun>, String>> {
    let depth = parent.parent.as_ref().map_or(0, |p| p.depth) + 1;
    if depth > MAX_CALL_DEPTH {
        return Ok(Err(format!(
            "a child run here would be {depth} calls deep, over the limit of {MAX_CALL_DEPTH}: \
             DAG {} is calling DAGs in a loop; break the cycle",
            parent.dag
        )));
    }
    let Some((record, dag)) = store.dag(&plan.dag).await? else {
        return Ok(Err(format!(
            "no DAG named {:?} is registered; register it (dagrid dags add, or the \
             coordinator's --dags) or fix the step's `call:`",
            plan.dag
        )));
    };
    let priority = dag.priority.unwrap_or(parent.priority);
    let policy = dag.dedup.unwrap_or_default();
    let queue = plan.parallel.map(|max| QueueOf {
        name: parallel_queue(max, &parent.id, step),
        limit: max,
        dag_limit: dag.max_active_runs.unwrap_or(0),
    });
    let link = ParentLink {
        run: parent.id.clone(),
        step: step.to_string(),
        depth,
    };
    let mut runs = Vec::with_capacity(plan.children.len());
    for (i, given) in plan.children.iter().enumerate() {
        let mut named = BTreeMap::new();
        let mut position = 0;
        for (name, value) in given {
            let key = match name {
                Some(n) => n.clone(),
                None => {
                    position += 1;
                    position.to_string()
                }
            };
            named.insert(key, value.clone());
        }
        let params = match dag.bind_params(&named) {
            Ok(p) => p,
            Err(errors) => {
                let which = if plan.parallel.is_some() {
                    format!("item {i}")
                } else {
                    "the child run".to_string()
                };
                return Ok(Err(format!(
                    "{which}: its params do not fit DAG {}: {errors}",
                    dag.name
                )));
            }
        };
        // Dedup is scoped to the parent's step: the same params under it make one child (as
        // Dagu derives the child run id from them), and a rerun of the step finds the
        // children that succeeded within the child DAG's dedup window.
        let scope = format!(
            "{}\u{1f}{step}\u{1f}{}",
            parent.id,
            dagrid_shared::transition::params_line(&params)
        );
        let dedup = dedup_key(store.keys(), &dag.name, &params, policy, Some(&scope));
        runs.push(NewRun {
            dag: dag.clone(),
            digest: record.digest.clone(),
            params,
            priority,
            dedup,
            due_ms: None,
            trigger: Trigger::Call,
            cron_slot: None,
            restart: false,
            parent: Some(link.clone()),
            queue: queue.clone(),
        });
    }
    Ok(Ok(runs))
}

/// What a finished child run gives its parent.
fn child_result(dag: &Dag, run: &RunRecord) -> ChildResult {
    ChildResult {
        status: run.status,
        dag: run.dag.clone(),
        params: dagrid_shared::transition::params_line(&run.params),
        outputs: dagrid_shared::plan::outputs_of(dag, &run.steps),
    }
}

/// Turns `report` into a failed one with `why`.
fn fail(report: &mut StepReport, why: String) {
    warn!(run.id = %report.run_id, step = %report.step, reason = %why, "call step failed");
    report.kind = ReportKind::Failed;
    report.call = None;
    report.children = 0;
    report.exit_code = Some(1);
    report.error = Some(why);
    report.finished_ms = Some(model::now_ms());
}

/// The final report of call step `step` of `run` once every child in `fan` has finished:
/// `succeeded` when all succeeded, else `failed`; its `output` (when the step has one) in
/// Dagu's shape. `None` when `fan` is not for the step's current attempt, or the step has
/// finished.
pub(crate) fn finish_report(
    dag: &Dag,
    run: &RunRecord,
    step: &str,
    fan: &Fan,
    now_ms: u64,
) -> Option<StepReport> {
    let state = run.steps.get(step)?;
    if state.token.as_deref() != Some(fan.token.as_str()) || state.status.is_final() {
        return None;
    }
    // A `c` entry of an earlier attempt can meet the hash of a newer one, not complete yet.
    if fan.children.is_empty() || fan.children.iter().any(|(_, _, r)| r.is_none()) {
        return None;
    }
    let def = dag.step_or_handler(step)?;
    let call = def.call.as_ref()?;
    let (value, failed) = results_json(fan, call.parallel.is_some());
    let mut error = (!failed.is_empty()).then(|| {
        let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
        format!(
            "{} of {} child runs did not succeed: {}{}",
            failed.len(),
            fan.children.len(),
            shown.join(", "),
            if failed.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )
    });
    let mut output = None;
    if let Some(var) = &def.output {
        let text = value.to_string();
        let limit = dag.max_output_size.unwrap_or(DEFAULT_MAX_OUTPUT_SIZE);
        if text.len() as u64 > limit {
            error = Some(format!(
                "the child runs' results are {} bytes of JSON, over maxOutputSize ({limit} \
                 bytes) for output {var}; raise maxOutputSize or drop `output`",
                text.len()
            ));
        } else {
            output = Some((var.clone(), text));
        }
    }
    let ok = error.is_none();
    Some(StepReport {
        run_id: run.id.clone(),
        step: step.to_string(),
        attempt: state.attempt,
        token: fan.token.clone(),
        worker: state.worker.clone().unwrap_or_default(),
        kind: if ok {
            ReportKind::Succeeded
        } else {
            ReportKind::Failed
        },
        started_ms: state.started_ms.unwrap_or(now_ms),
        finished_ms: Some(now_ms),
        exit_code: Some(if ok { 0 } else { 1 }),
        error,
        output: if ok { output } else { None },
        log_path: None,
        output_matched: false,
        repeat: false,
        resolved: None,
        call: None,
        children: 0,
    })
}

/// Dagu's output of a call step, and the children that did not succeed (`id (status)`): for
/// one child its run status `{"name", "dagRunId", "params", "outputs", "status"}`; for
/// `parallel`, `{"summary": {"total", "succeeded", "failed"}, "results": [...], "outputs":
/// [...]}` in item order, `outputs` holding the outputs of the children that succeeded.
fn results_json(fan: &Fan, parallel: bool) -> (Value, Vec<String>) {
    let mut results = Vec::with_capacity(fan.children.len());
    let mut outputs = Vec::new();
    let mut failed = Vec::new();
    for (id, _, result) in &fan.children {
        let Some(r) = result else {
            failed.push(format!("{id} (no result)"));
            continue;
        };
        let map: Map<String, Value> = r
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if r.status == RunStatus::Succeeded {
            outputs.push(Value::Object(map.clone()));
        } else {
            failed.push(format!("{id} ({})", r.status.as_str()));
        }
        results.push(json!({
            "name": r.dag,
            "dagRunId": id,
            "params": r.params,
            "outputs": map,
            "status": r.status.as_str(),
        }));
    }
    if !parallel {
        let one = results.into_iter().next().unwrap_or(Value::Null);
        return (one, failed);
    }
    let total = fan.children.len();
    let value = json!({
        "summary": {"total": total, "succeeded": total - failed.len(), "failed": failed.len()},
        "results": results,
        "outputs": outputs,
    });
    (value, failed)
}
