//! Sub-DAG steps: Dagu's `call:` (and its older `run:`) with `params:` and `parallel:`. A call
//! step runs no process: its worker expands the child params, a coordinator submits the child
//! runs through the queues, and the step finishes when they all have (docs/architecture.md,
//! "Sub-DAGs").

/// The most child runs one `parallel` step may start (Dagu allows 1,000).
pub const MAX_PARALLEL_ITEMS: usize = 100_000;

/// Dagu's default `max_concurrent` of a `parallel` step.
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;

/// How deep runs may call runs: a child of a run at this depth is refused (the step fails).
/// A top-level run has depth 0.
pub const MAX_CALL_DEPTH: u32 = 10;

/// A step that runs another DAG as child runs instead of a command (Dagu `call:`, or `run:`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Call {
    /// The DAG to run: a registered DAG's name, or for a local DAG of the same file (a later
    /// `---` document) its registered name `<file's DAG>.<local name>`. May hold `${VAR}`
    /// references, expanded by the worker (then looked up when the step runs).
    pub dag: String,
    /// The child's params (Dagu `params:` on the step): the string form split like a command
    /// line, or the map form's entries, as `(name, value template)` pairs (`None`: positional).
    /// Each value is expanded by the worker, per item for `parallel` (with `ITEM` set).
    /// Empty: no params (with `parallel`: the item itself is the params).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(Option<String>, String)>,
    /// Dagu `parallel:`: one child run per item. `None`: one child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,
}

/// Dagu's `parallel:` of a call step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parallel {
    /// The items: a list, or a variable reference.
    pub items: ParallelItems,
    /// Most child runs of the step active at once (Dagu `max_concurrent` / `maxConcurrent`,
    /// default [`DEFAULT_MAX_CONCURRENT`]); enforced in Redis by a queue of the step's own.
    pub max_concurrent: u32,
}

/// Where a `parallel` step's items come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ParallelItems {
    /// Items written in the file.
    List(Vec<ParallelItem>),
    /// A template such as `${FILES}`, expanded by the worker and split into items as Dagu
    /// does: a JSON array, else one item per non-empty line.
    Variable(String),
}

/// One item written in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ParallelItem {
    /// A scalar item (a template: `${VAR}` is expanded): `ITEM` is its text.
    Value(String),
    /// A map item: its entries are the child's named params (values are templates); `ITEM` is
    /// its JSON object.
    Params(Vec<(String, String)>),
}

/// What the worker of a call step sends back ([`crate::model::StepReport::call`]): the child
/// runs to create, expanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallPlan {
    /// The child DAG's name, expanded.
    pub dag: String,
    /// One entry per child run, in item order: its params as `(name, value)` pairs (`None`:
    /// positional), ready for [`crate::dag::Dag::bind_params`] (positions as `"1"`, `"2"`…).
    pub children: Vec<Vec<(Option<String>, String)>>,
    /// `Some(max_concurrent)` for a `parallel` step, `None` for a single call.
    pub parallel: Option<u32>,
}
