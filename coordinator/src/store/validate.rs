//! Checking submit requests against their DAGs before anything is written: the DAG exists,
//! the params bind, and priority, `delay` / `at`, dedup policy and dedup key are valid. The
//! result is the [`NewRun`]s that [`Store::submit`] creates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dagrid_shared::dag::{BoundParam, Dag, DagError, DagErrors};
use dagrid_shared::dag::{DedupPolicy, Priority};
use dagrid_shared::redis::conn::ConnError;
use dagrid_shared::{duration, model};
use serde_json::Value;

use super::admission::{dedup_key, NewRun, Trigger};
use super::Store;

/// One submit request, as the API received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunRequest<'a> {
    /// DAG name.
    pub(crate) dag: &'a str,
    /// Params by name, or by 1-based position (`"1"`); JSON strings, numbers or booleans.
    pub(crate) params: &'a BTreeMap<String, Value>,
    /// `"high"`, `"normal"`, `"low"` or 0..=9 (a string or a number); `None` or JSON null:
    /// the DAG's `priority:`, else normal.
    pub(crate) priority: Option<&'a Value>,
    /// Start no sooner than this long from now (humantime).
    pub(crate) delay: Option<&'a str>,
    /// Start no sooner than this time (RFC 3339).
    pub(crate) at: Option<&'a str>,
    /// Overrides the DAG's `dedup:` policy.
    pub(crate) dedup: Option<&'a str>,
    /// A dedup key to use instead of the one computed from the params.
    pub(crate) dedup_key: Option<&'a str>,
}

/// Why a submit request is refused. Field names in the errors are relative to the item; a
/// batch item's carry `prefix` (`runs[<i>].`), empty for a single run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    /// No DAG has this name (404 `unknown_dag`).
    #[error("no DAG named {0:?} is registered")]
    UnknownDag(String),
    /// The params do not bind to the DAG's (422 `invalid_params`).
    #[error("{errors}")]
    Params {
        /// What is wrong, by field.
        errors: DagErrors,
        /// The item's field prefix.
        prefix: String,
    },
    /// Priority, delay, at, dedup or dedup key is invalid (422 `invalid_submit`).
    #[error("{errors}")]
    Submit {
        /// What is wrong, by field.
        errors: DagErrors,
        /// The item's field prefix.
        prefix: String,
    },
    /// Redis failed while reading a DAG (503 `redis_unavailable`).
    #[error(transparent)]
    Unavailable(#[from] ConnError),
}

impl Store {
    /// Checks `items` against their DAGs (each DAG read once) without writing anything; a
    /// [`Trigger::Batch`] names fields `runs[<i>].<field>` in its errors.
    ///
    /// # Errors
    /// The first item's [`Invalid`] that fails, in order.
    pub(crate) async fn prepare_runs(
        &self,
        items: &[RunRequest<'_>],
        trigger: Trigger,
    ) -> Result<Vec<NewRun>, Invalid> {
        let batch = trigger == Trigger::Batch;
        let mut dags: HashMap<&str, (String, Arc<Dag>)> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        let now = model::now_ms();
        for (i, item) in items.iter().enumerate() {
            // Built only for an error message.
            let prefix = || {
                if batch {
                    format!("runs[{i}].")
                } else {
                    String::new()
                }
            };
            if !dags.contains_key(item.dag) {
                let (record, dag) = self
                    .dag(item.dag)
                    .await?
                    .ok_or_else(|| Invalid::UnknownDag(item.dag.to_string()))?;
                dags.insert(item.dag, (record.digest, dag));
            }
            let (digest, dag) = &dags[item.dag];
            let params_error = |errors| Invalid::Params {
                errors,
                prefix: prefix(),
            };
            let given = param_strings(item.params).map_err(params_error)?;
            let params: Vec<BoundParam> = dag.bind_params(&given).map_err(params_error)?;
            let invalid = |field: &str, message: String| Invalid::Submit {
                errors: DagErrors(vec![DagError {
                    field: field.into(),
                    message,
                }]),
                prefix: prefix(),
            };
            let priority = match item.priority {
                None | Some(Value::Null) => dag.priority.unwrap_or_default(),
                Some(v) => {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    text.parse::<Priority>()
                        .map_err(|e| invalid("priority", e.to_string()))?
                }
            };
            let due_ms = match (item.delay, item.at) {
                (Some(_), Some(_)) => {
                    return Err(invalid("delay", "give either delay or at, not both".into()))
                }
                (Some(d), None) => {
                    let ms = duration::parse_duration_ms(d).map_err(|e| invalid("delay", e))?;
                    Some(now + ms)
                }
                (None, Some(t)) => {
                    let at = chrono::DateTime::parse_from_rfc3339(t.trim()).map_err(|e| {
                        invalid(
                            "at",
                            format!(
                                "\"{t}\" is not an RFC 3339 time ({e}); write for example \
                                 2026-11-21T10:00:00Z"
                            ),
                        )
                    })?;
                    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
                    if ms > now + duration::MAX_DURATION_MS {
                        return Err(invalid(
                            "at",
                            format!(
                                "\"{t}\" is too far ahead; a run may be due at most {} from now",
                                duration::MAX_DURATION_TEXT
                            ),
                        ));
                    }
                    Some(ms)
                }
                (None, None) => None,
            };
            let policy = match item.dedup {
                Some(p) => p
                    .parse::<DedupPolicy>()
                    .map_err(|e| invalid("dedup", e.to_string()))?,
                None => dag.dedup.unwrap_or_default(),
            };
            if let Some(k) = item.dedup_key {
                if k.is_empty() || k.len() > 256 || k.chars().any(char::is_control) {
                    return Err(invalid(
                        "dedup_key",
                        format!(
                            "a dedup key is 1 to 256 bytes (UTF-8) without control characters; \
                             this one is {} bytes",
                            k.len()
                        ),
                    ));
                }
            }
            let dedup = dedup_key(self.keys(), &dag.name, &params, policy, item.dedup_key);
            out.push(NewRun {
                dag: dag.clone(),
                digest: digest.clone(),
                params,
                priority,
                dedup,
                due_ms,
                trigger,
                cron_slot: None,
                restart: false,
                parent: None,
                queue: None,
            });
        }
        Ok(out)
    }
}

/// Params arrive as JSON scalars; they are bound as strings.
fn param_strings(given: &BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, DagErrors> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (k, v) in given {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => {
                errors.push(DagError {
                    field: format!("params.{k}"),
                    message: "a param value must be a string, number or boolean".into(),
                });
                continue;
            }
        };
        out.insert(k.clone(), s);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DagErrors(errors))
    }
}
