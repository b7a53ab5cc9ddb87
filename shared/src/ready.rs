//! The ready-stream entry of a step attempt (field `t` of `{ns}:ready:<p>`): a compact
//! [`TaskRef`] that carries only what differs per attempt (run, step, attempt, token, priority,
//! queued time, the run's params, the outputs the step reads) and the digest of the DAG
//! version. The worker resolves the step's definition from the immutable `{ns}:spec:<digest>`
//! ([`crate::redis::keys::Keys::spec`]) and builds the same [`StepTask`] the coordinator planned
//! ([`TaskRef::resolve`]), so a queued one-step run costs ~150 bytes of stream instead of the
//! whole task.
//!
//! Entries written by versions before the compact form hold a whole msgpack [`StepTask`];
//! [`decode`] reads both.

use serde::{Deserialize, Serialize};

use crate::dag::{BoundParam, Dag, EnvVar, Priority, Step, DEFAULT_CLEANUP_MS};
use crate::model::{self, DagValues, Evaluate, Resolved, StepTask};

/// The compact ready-stream entry of one step attempt (msgpack, named short fields, so fields
/// can be added later; unknown fields are ignored by older readers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Run id ([`StepTask::run_id`]).
    #[serde(rename = "r")]
    pub run_id: String,
    /// Step (or handler) name ([`StepTask::step`]).
    #[serde(rename = "s")]
    pub step: String,
    /// Attempt number, from 1.
    #[serde(rename = "a")]
    pub attempt: u32,
    /// Fencing token of the attempt.
    #[serde(rename = "k")]
    pub token: String,
    /// The run's priority (the stream the entry is on); left out when normal, which readers,
    /// those of earlier versions too, take for an absent one.
    #[serde(rename = "p", default, skip_serializing_if = "is_normal")]
    pub priority: Priority,
    /// When the attempt was queued (ms).
    #[serde(rename = "q")]
    pub queued_ms: u64,
    /// Digest of the run's DAG version: the key `{ns}:spec:<digest>` holds its msgpack.
    #[serde(rename = "d")]
    pub spec: String,
    /// The run's bound params in order: `(name, value)`, no name for a positional one. Named
    /// ones become env entries, all of them `$1..$n`.
    #[serde(rename = "P", default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(Option<String>, String)>,
    /// `DAG_RUN_STATUS` of a handler step.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub run_status: Option<String>,
    /// The outputs of earlier steps the step sees, in order (set between the DAG's and the
    /// step's `env`).
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<(String, String)>,
    /// The attempt checks the DAG's `preconditions` (the run's first task).
    #[serde(rename = "g", default, skip_serializing_if = "is_false")]
    pub dag_gate: bool,
    /// [`StepTask::ignore_preconditions`].
    #[serde(rename = "i", default, skip_serializing_if = "is_false")]
    pub ignore_preconditions: bool,
    /// [`StepTask::repeats`].
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// The attempt evaluates the run's once-per-run values ([`DagValues::evaluate`]).
    #[serde(rename = "v", default, skip_serializing_if = "is_false")]
    pub evaluate: bool,
    /// The run's evaluated values ([`DagValues::resolved`]).
    #[serde(rename = "R", default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Box<Resolved>>,
}

/// The DAG-level values of an attempt of a run of `dag` bound to `params`: `dotenv` and
/// `working_dir` from the DAG; with `evaluate`, what to evaluate (the DAG's `env` entries,
/// which start at index `env_from` of the task's env, and the `eval` params the run has no
/// value for); `resolved`, the run's values once evaluated. The planner and
/// [`TaskRef::resolve`] build it with this one function.
#[must_use]
pub fn dag_values(
    dag: &Dag,
    params: &[BoundParam],
    env_from: usize,
    evaluate: bool,
    resolved: Option<&Resolved>,
) -> DagValues {
    let evaluate = evaluate.then(|| Evaluate {
        at: env_from as u32,
        env: (env_from..env_from + dag.env.len())
            .map(|i| i as u32)
            .collect(),
        params: dag
            .params
            .iter()
            .filter(|p| p.typed.as_ref().is_some_and(|t| t.eval.is_some()))
            .filter(|p| !params.iter().any(|b| b.name.is_some() && b.name == p.name))
            .cloned()
            .collect(),
    });
    DagValues {
        dotenv: dag.dotenv.clone(),
        working_dir: dag.working_dir.clone(),
        evaluate,
        resolved: resolved.cloned(),
    }
}

/// The DAG's `env` values a task carries: the run's evaluated ones when it has them (then
/// they are data, never expanded again), else the text as written.
pub fn dag_env<'a>(
    dag: &'a Dag,
    resolved: Option<&'a Resolved>,
) -> impl Iterator<Item = (&'a str, &'a str, bool)> + 'a {
    let values = resolved.filter(|r| r.env.len() == dag.env.len());
    dag.env.iter().enumerate().map(move |(i, e)| match values {
        Some(r) => (e.name.as_str(), r.env[i].as_str(), false),
        None => (e.name.as_str(), e.value.as_str(), true),
    })
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_normal(p: &Priority) -> bool {
    *p == Priority::NORMAL
}

/// The three Dagu variables every task's env starts with.
const DAGU_VARS: usize = 3;

impl TaskRef {
    /// The compact form of `task`, an attempt of a run of `dag` (digest `spec`) with `params`.
    /// `None` when `task` is not what [`TaskRef::resolve`] would build back from it (a task not
    /// planned from this DAG version): the caller then queues the whole task.
    #[must_use]
    pub fn of(task: &StepTask, dag: &Dag, spec: &str, params: &[BoundParam]) -> Option<Self> {
        let step = dag.step_or_handler(&task.step)?;
        let named = params.iter().filter(|p| p.name.is_some()).count();
        let run_status = task
            .env
            .get(DAGU_VARS)
            .filter(|(k, _)| k == "DAG_RUN_STATUS")
            .filter(|_| dag.step_index(&task.step).is_none())
            .map(|(_, v)| v.clone());
        let resolved = task.dag_values.resolved.clone().map(Box::new);
        let computed = resolved.as_ref().map_or(0, |r| r.params.len());
        let pre = DAGU_VARS + usize::from(run_status.is_some()) + named + computed;
        let from = pre + dag.env.len();
        let to = task.env.len().checked_sub(step.env.len())?;
        let r = TaskRef {
            run_id: task.run_id.clone(),
            step: task.step.clone(),
            attempt: task.attempt,
            token: task.token.clone(),
            priority: task.priority,
            queued_ms: task.queued_ms,
            spec: spec.to_string(),
            params: params
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
            run_status,
            outputs: task.env.get(from..to)?.to_vec(),
            dag_gate: !task.dag_preconditions.is_empty(),
            ignore_preconditions: task.ignore_preconditions,
            repeats: task.repeats,
            evaluate: task.dag_values.evaluate.is_some(),
            resolved,
        };
        // The task must be exactly what resolve builds back (checked without allocating).
        let same = task.dag == dag.name
            && task.step == step.name
            && task.args.iter().map(String::as_str).eq(r.args())
            && task
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .eq(r.env(dag, step))
            && task.expand.iter().copied().eq(r.expand(dag, step))
            && task.dag_values == r.dag_values(dag);
        if !same {
            return None;
        }
        debug_assert_eq!(
            r.resolve(dag).as_ref(),
            Ok(task),
            "the compact task resolves back"
        );
        Some(r)
    }

    /// The env of the attempt in [`StepTask::env`] order.
    fn env<'a>(
        &'a self,
        dag: &'a Dag,
        step: &'a Step,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let dagu = [
            ("DAG_NAME", dag.name.as_str()),
            ("DAG_RUN_ID", self.run_id.as_str()),
            ("DAG_RUN_STEP_NAME", step.name.as_str()),
        ];
        let status = self.run_status.as_deref().map(|s| ("DAG_RUN_STATUS", s));
        let params = self
            .params
            .iter()
            .filter_map(|(n, v)| n.as_deref().map(|n| (n, v.as_str())));
        let computed = self
            .resolved
            .iter()
            .flat_map(|r| r.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let authored = |e: &'a [EnvVar]| e.iter().map(|e| (e.name.as_str(), e.value.as_str()));
        dagu.into_iter()
            .chain(status)
            .chain(params)
            .chain(computed)
            .chain(dag_env(dag, self.resolved.as_deref()).map(|(n, v, _)| (n, v)))
            .chain(self.outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain(authored(&step.env))
    }

    /// Where the DAG's `env` entries start in [`TaskRef::env`].
    fn dag_env_from(&self) -> usize {
        DAGU_VARS
            + usize::from(self.run_status.is_some())
            + self.params.iter().filter(|(n, _)| n.is_some()).count()
            + self.resolved.as_deref().map_or(0, |r| r.params.len())
    }

    /// The indexes into [`TaskRef::env`] of the DAG's `env` entries (unless the run's values
    /// are evaluated) and the step's.
    fn expand(&self, dag: &Dag, step: &Step) -> impl Iterator<Item = u32> {
        let dag_from = self.dag_env_from();
        let step_from = dag_from + dag.env.len() + self.outputs.len();
        let evaluated = self
            .resolved
            .as_ref()
            .is_some_and(|r| r.env.len() == dag.env.len());
        let dag_count = if evaluated { 0 } else { dag.env.len() };
        (dag_from..dag_from + dag_count)
            .chain(step_from..step_from + step.env.len())
            .map(|i| i as u32)
    }

    /// `$1..$n`: the bound params' values, then the computed ones.
    fn args(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(_, v)| v.as_str()).chain(
            self.resolved
                .iter()
                .flat_map(|r| r.params.iter().map(|(_, v)| v.as_str())),
        )
    }

    /// [`StepTask::dag_values`] of this attempt.
    fn dag_values(&self, dag: &Dag) -> DagValues {
        let bound: Vec<BoundParam> = self
            .params
            .iter()
            .map(|(name, value)| BoundParam {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        dag_values(
            dag,
            &bound,
            self.dag_env_from(),
            self.evaluate,
            self.resolved.as_deref(),
        )
    }

    /// The [`StepTask`] of this attempt, with the step's definition from `dag` (the DAG version
    /// [`TaskRef::spec`] names): env in the order [`StepTask::env`] documents, the DAG's and
    /// the step's `env` listed in [`StepTask::expand`].
    ///
    /// # Errors
    /// When `dag` has no step or handler of that name (the message says so).
    pub fn resolve(&self, dag: &Dag) -> Result<StepTask, String> {
        let step = dag.step_or_handler(&self.step).ok_or_else(|| {
            format!(
                "DAG {} (version {}) has no step \"{}\"",
                dag.name, self.spec, self.step
            )
        })?;
        let env = self
            .env(dag, step)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expand = self.expand(dag, step).collect();
        Ok(StepTask {
            call: step.call.clone(),
            run_id: self.run_id.clone(),
            dag: dag.name.clone(),
            step: step.name.clone(),
            attempt: self.attempt,
            token: self.token.clone(),
            command: step.command.clone(),
            script: step.script.clone(),
            shell: step.shell.clone(),
            dir: step.dir.clone(),
            env,
            expand,
            args: self.args().map(str::to_string).collect(),
            output: step.output.clone(),
            queued_ms: self.queued_ms,
            priority: self.priority,
            timeout_ms: step.timeout_ms,
            stop_signal: step.signal_on_stop.clone(),
            cleanup_ms: dag.max_cleanup_ms.unwrap_or(DEFAULT_CLEANUP_MS),
            ignore_preconditions: self.ignore_preconditions,
            preconditions: step.preconditions.clone(),
            dag_preconditions: if self.dag_gate {
                dag.preconditions.clone()
            } else {
                Vec::new()
            },
            continue_on_output: step
                .continue_on
                .as_ref()
                .map(|c| c.output.clone())
                .unwrap_or_default(),
            repeat: step.repeat.clone(),
            max_output_size: dag.max_output_size,
            repeats: self.repeats,
            dag_values: self.dag_values(dag),
        })
    }

    /// A task with this attempt's identity and nothing to run, for reporting an attempt whose
    /// definition cannot be resolved (its DAG version is gone).
    #[must_use]
    pub fn unresolved(&self) -> StepTask {
        StepTask {
            call: None,
            run_id: self.run_id.clone(),
            dag: String::new(),
            step: self.step.clone(),
            attempt: self.attempt,
            token: self.token.clone(),
            command: None,
            script: None,
            shell: None,
            dir: None,
            env: Vec::new(),
            expand: Vec::new(),
            args: Vec::new(),
            output: None,
            queued_ms: self.queued_ms,
            priority: self.priority,
            timeout_ms: None,
            stop_signal: None,
            cleanup_ms: DEFAULT_CLEANUP_MS,
            ignore_preconditions: false,
            preconditions: Vec::new(),
            dag_preconditions: Vec::new(),
            continue_on_output: Vec::new(),
            repeat: None,
            max_output_size: None,
            repeats: 0,
            dag_values: DagValues::default(),
        }
    }
}

/// A decoded ready-stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyTask {
    /// The compact form: resolve it against its DAG version.
    Ref(TaskRef),
    /// A whole task (written by versions before the compact form, or for a task the compact
    /// form cannot express).
    Full(Box<StepTask>),
}

impl ReadyTask {
    /// The attempt's identity: run id, step, attempt, token.
    #[must_use]
    pub fn identity(&self) -> (&str, &str, u32, &str) {
        match self {
            ReadyTask::Ref(r) => (&r.run_id, &r.step, r.attempt, &r.token),
            ReadyTask::Full(t) => (&t.run_id, &t.step, t.attempt, &t.token),
        }
    }
}

/// The bytes of field `t` for `task`: the compact [`TaskRef`] when it expresses the task,
/// else the whole task.
///
/// # Errors
/// When msgpack encoding fails.
pub fn encode(
    task: &StepTask,
    dag: &Dag,
    spec: &str,
    params: &[BoundParam],
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    match TaskRef::of(task, dag, spec, params) {
        Some(r) => model::encode(&r),
        None => model::encode(task),
    }
}

/// The run id of field `t` of a ready entry, in either form (`r` of a [`TaskRef`],
/// `run_id` of a whole task), without decoding the rest; `None` when it has neither.
#[must_use]
pub fn run_id_of(bytes: &[u8]) -> Option<String> {
    /// Only the run id; every other field is skipped.
    #[derive(Deserialize)]
    struct RunOf {
        #[serde(rename = "r", alias = "run_id")]
        run_id: String,
    }
    model::decode::<RunOf>(bytes).ok().map(|r| r.run_id)
}

/// Reads field `t` of a ready entry, in either form.
///
/// # Errors
/// When the bytes are neither form (the message of the whole-task decode).
pub fn decode(bytes: &[u8]) -> Result<ReadyTask, String> {
    if let Ok(r) = model::decode::<TaskRef>(bytes) {
        return Ok(ReadyTask::Ref(r));
    }
    model::decode::<StepTask>(bytes)
        .map(|t| ReadyTask::Full(Box::new(t)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAG: &str = "name: d\nparams: \"p1 N=3\"\nenv:\n  - A: a\n  - B: ${A}\npreconditions:\n  - condition: \"1\"\n    expected: \"1\"\nsteps:\n  - name: s1\n    command: echo $1\n    output: OUT\n  - name: s2\n    script: echo ${OUT}\n    depends: [s1]\n    env:\n      - C: ${B}c\n    continueOn:\n      output: [\"warn\"]\n    repeatPolicy: {repeat: until, exitCode: [0], limit: 3}\nmaxOutputSize: 4096\nhandlerOn:\n  failure:\n    command: echo $DAG_RUN_STATUS\n";

    /// A task laid out as the coordinator's planner does (see `StepTask::env`).
    fn planned(
        dag: &Dag,
        step: &str,
        status: Option<&str>,
        outputs: &[(&str, &str)],
        gate: bool,
    ) -> (StepTask, Vec<BoundParam>) {
        let params = vec![
            BoundParam {
                name: None,
                value: "p1".into(),
            },
            BoundParam {
                name: Some("N".into()),
                value: "7".into(),
            },
        ];
        let s = dag.step_or_handler(step).unwrap();
        let mut env = vec![
            ("DAG_NAME".to_string(), dag.name.clone()),
            ("DAG_RUN_ID".into(), "r1".into()),
            ("DAG_RUN_STEP_NAME".into(), s.name.clone()),
        ];
        if let Some(st) = status {
            env.push(("DAG_RUN_STATUS".into(), st.into()));
        }
        env.push(("N".into(), "7".into()));
        let env_from = env.len();
        let mut expand = Vec::new();
        for e in &dag.env {
            expand.push(env.len() as u32);
            env.push((e.name.clone(), e.value.clone()));
        }
        env.extend(outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        for e in &s.env {
            expand.push(env.len() as u32);
            env.push((e.name.clone(), e.value.clone()));
        }
        let task = StepTask {
            call: None,
            run_id: "r1".into(),
            dag: dag.name.clone(),
            step: s.name.clone(),
            attempt: 3,
            token: "tok".into(),
            command: s.command.clone(),
            script: s.script.clone(),
            shell: s.shell.clone(),
            dir: s.dir.clone(),
            env,
            expand,
            args: vec!["p1".into(), "7".into()],
            output: s.output.clone(),
            queued_ms: 9,
            priority: Priority::new(7).unwrap(),
            timeout_ms: s.timeout_ms,
            stop_signal: s.signal_on_stop.clone(),
            cleanup_ms: dag.max_cleanup_ms.unwrap_or(DEFAULT_CLEANUP_MS),
            ignore_preconditions: true,
            preconditions: s.preconditions.clone(),
            dag_preconditions: if gate {
                dag.preconditions.clone()
            } else {
                Vec::new()
            },
            continue_on_output: s
                .continue_on
                .as_ref()
                .map(|c| c.output.clone())
                .unwrap_or_default(),
            repeat: s.repeat.clone(),
            max_output_size: dag.max_output_size,
            repeats: 0,
            dag_values: dag_values(dag, &params, env_from, false, None),
        };
        (task, params)
    }

    /// The compact form expresses the planned tasks of a first step (DAG preconditions, params
    /// named and positional, DAG env), of a later step (outputs, step env, continueOn,
    /// repeatPolicy, the DAG's maxOutputSize) and of a
    /// handler (DAG_RUN_STATUS), resolves back to the same task, and is far smaller; the run id
    /// reads from either form alone.
    #[test]
    fn compact_tasks_resolve_to_the_planned_task() {
        let dag = Dag::parse(DAG, "d").unwrap();
        for (step, status, outputs, gate) in [
            ("s1", None, &[][..], true),
            ("s2", None, &[("OUT", "x y")][..], false),
            ("onFailure", Some("failed"), &[("OUT", "z")][..], false),
        ] {
            let (task, params) = planned(&dag, step, status, outputs, gate);
            let r = TaskRef::of(&task, &dag, "v1", &params)
                .unwrap_or_else(|| panic!("{step} is expressed"));
            assert_eq!(r.resolve(&dag).unwrap(), task, "{step}");
            let compact = encode(&task, &dag, "v1", &params).unwrap();
            let whole = model::encode(&task).unwrap();
            assert!(
                compact.len() * 2 < whole.len(),
                "{step}: {} vs {}",
                compact.len(),
                whole.len()
            );
            assert_eq!(run_id_of(&compact).as_deref(), Some(task.run_id.as_str()));
            assert_eq!(run_id_of(&whole).as_deref(), Some(task.run_id.as_str()));
            assert_eq!(decode(&compact).unwrap(), ReadyTask::Ref(r));
            assert_eq!(decode(&whole).unwrap(), ReadyTask::Full(Box::new(task)));
        }
        assert_eq!(run_id_of(b"not msgpack"), None);
    }

    /// A task that evaluates the run's values, and one that carries them (DAG env values as
    /// data, a computed param), are expressed compactly and resolve back; `dotenv` and
    /// `working_dir` come from the DAG version.
    #[test]
    fn evaluating_and_evaluated_tasks_are_compact() {
        let yaml = DAG.replacen(
            "env:\n",
            "dotenv: [.env.x]\nworking_dir: /tmp\nparams:\n  - name: T\n    eval: \"`date`\"\nenv:\n",
            1,
        );
        let yaml = yaml.replacen("params: \"p1 N=3\"\n", "", 1);
        let dag = Dag::parse(&yaml, "d").unwrap();
        assert!(dag.evaluates_once());
        let params: Vec<BoundParam> = Vec::new();
        let s1 = dag.step_or_handler("s1").unwrap();
        let base = |task: &mut StepTask| {
            task.env.retain(|(k, _)| k != "N");
            task.args.clear();
        };
        // The evaluating task: the DAG env still raw and expanded, evaluate set.
        let (mut task, _) = planned(&dag, "s1", None, &[], false);
        base(&mut task);
        task.expand = vec![3, 4];
        task.dag_values = dag_values(&dag, &params, 3, true, None);
        assert_eq!(task.dag_values.evaluate.as_ref().unwrap().params.len(), 1);
        assert_eq!(task.dag_values.dotenv, [".env.x"]);
        let r = TaskRef::of(&task, &dag, "v1", &params).expect("expressed");
        assert!(r.evaluate);
        assert_eq!(r.resolve(&dag).unwrap(), task);
        // A later task: computed param T, DAG env values as data.
        let resolved = Resolved {
            env: vec!["a".into(), "b".into()],
            params: vec![("T".into(), "now".into())],
        };
        let (mut task, _) = planned(&dag, "s2", None, &[("OUT", "o")], false);
        base(&mut task);
        task.env.insert(3, ("T".into(), "now".into()));
        task.env[4].1 = "a".into();
        task.env[5].1 = "b".into();
        task.expand = vec![7];
        task.args = vec!["now".into()];
        task.dag_values = dag_values(&dag, &params, 4, false, Some(&resolved));
        let r = TaskRef::of(&task, &dag, "v1", &params).expect("expressed");
        assert_eq!(r.resolved.as_deref(), Some(&resolved));
        assert_eq!(r.resolve(&dag).unwrap(), task);
        let _ = s1;
    }

    /// A normal priority is left out of the entry, and read back as normal; another is written.
    #[test]
    fn only_a_priority_other_than_normal_is_written() {
        let dag = Dag::parse(DAG, "d").unwrap();
        let (task, params) = planned(&dag, "s1", None, &[], false);
        let mut r = TaskRef::of(&task, &dag, "v1", &params).unwrap();
        for p in [Priority::NORMAL, Priority::new(9).unwrap()] {
            r.priority = p;
            let bytes = rmp_serde::to_vec_named(&r).unwrap();
            let fields: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
                rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(fields.contains_key("p"), p != Priority::NORMAL, "{p}");
            assert_eq!(decode(&bytes).unwrap(), ReadyTask::Ref(r.clone()));
        }
    }

    /// A task the compact form cannot express exactly is queued whole.
    #[test]
    fn a_task_not_planned_from_the_dag_is_queued_whole() {
        let dag = Dag::parse(DAG, "d").unwrap();
        let (mut task, params) = planned(&dag, "s1", None, &[], false);
        task.env.insert(3, ("DAG_RUN_STATUS".into(), "odd".into()));
        assert_eq!(TaskRef::of(&task, &dag, "v1", &params), None);
        let bytes = encode(&task, &dag, "v1", &params).unwrap();
        assert_eq!(decode(&bytes).unwrap(), ReadyTask::Full(Box::new(task)));
    }
}
