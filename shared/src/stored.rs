//! The compact form in which a run's step states and params are stored in its hash
//! ([`crate::redis::keys::Keys::run`]), apart from the JSON shape the API shows ([`StepState`]).
//!
//! A step state is msgpack with one- or two-letter field names and every absent, zero or false
//! field left out, so a queued step takes about 40 bytes: under Redis's
//! `hash-max-listpack-value` (64 bytes), which keeps the hash of a queued run a listpack rather
//! than a hashtable. Step states written by earlier versions (msgpack of [`StepState`] with
//! full field names) are still read ([`decode_step`]).

use serde::{Deserialize, Serialize};

use crate::dag::{BoundParam, HandlerOn};
use std::collections::BTreeMap;

use crate::dag::Priority;
use crate::model::{
    AttemptRecord, RecordError, RunRecord, RunStatus, StepState, StepStatus, UnknownStatus,
};
use crate::redis::fields::run_field;

/// The stored code of a step status (field `s`).
fn status_code(s: StepStatus) -> u8 {
    match s {
        StepStatus::Pending => 0,
        StepStatus::Queued => 1,
        StepStatus::Running => 2,
        StepStatus::Succeeded => 3,
        StepStatus::Failed => 4,
        StepStatus::Skipped => 5,
        StepStatus::Retrying => 6,
        StepStatus::Aborted => 7,
        StepStatus::Lost => 8,
    }
}

/// The step status of a stored code; `None` for an unknown code.
fn status_of(code: u8) -> Option<StepStatus> {
    Some(match code {
        0 => StepStatus::Pending,
        1 => StepStatus::Queued,
        2 => StepStatus::Running,
        3 => StepStatus::Succeeded,
        4 => StepStatus::Failed,
        5 => StepStatus::Skipped,
        6 => StepStatus::Retrying,
        7 => StepStatus::Aborted,
        8 => StepStatus::Lost,
        _ => return None,
    })
}

fn no(b: &bool) -> bool {
    !*b
}

fn zero(n: &u32) -> bool {
    *n == 0
}

/// The stored form of a [`StepState`]: the same fields under short names, absent when empty.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "s")]
    status: u8,
    #[serde(rename = "a", default, skip_serializing_if = "zero")]
    attempt: u32,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    worker: Option<String>,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    queued_ms: Option<u64>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    finished_ms: Option<u64>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    output: Option<(String, String)>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    log_path: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    retry_at_ms: Option<u64>,
    #[serde(rename = "n", default, skip_serializing_if = "zero")]
    lost: u32,
    #[serde(rename = "i", default, skip_serializing_if = "no")]
    ignore_preconditions: bool,
    #[serde(rename = "c", default, skip_serializing_if = "no")]
    continued: bool,
    #[serde(rename = "u", default, skip_serializing_if = "no")]
    dag_preconditions_unmet: bool,
    #[serde(rename = "hd", default, skip_serializing_if = "Option::is_none")]
    handler: Option<HandlerOn>,
    #[serde(rename = "ds", default, skip_serializing_if = "Option::is_none")]
    dag_run_status: Option<RunStatus>,
    #[serde(rename = "h", default, skip_serializing_if = "Vec::is_empty")]
    history: Vec<StoredAttempt>,
    #[serde(rename = "ab", default, skip_serializing_if = "zero")]
    attempt_base: u32,
    #[serde(rename = "rp", default, skip_serializing_if = "zero")]
    repeats: u32,
    #[serde(rename = "ch", default, skip_serializing_if = "zero")]
    children: u32,
}

/// The stored form of an [`AttemptRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredAttempt {
    #[serde(rename = "a")]
    attempt: u32,
    #[serde(rename = "s")]
    status: u8,
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    worker: Option<String>,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    queued_ms: Option<u64>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    finished_ms: Option<u64>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    log_path: Option<String>,
}

/// Why a stored step state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StepDecodeError {
    /// Neither the compact form nor an earlier version's form.
    #[error("not a stored step state: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    /// A status code this version does not know (written by a newer version).
    #[error("unknown step status code {0}")]
    UnknownStatus(u8),
}

/// The stored form of a step state that a run is created with: [`encode_step`] without its
/// queued time, which [`RunRecord::from_fields`] reads as the run's creation time (11 bytes
/// less in every new run hash).
///
/// # Errors
/// Only when msgpack cannot represent the value (never for a [`StepState`]).
pub fn encode_new_step(s: &StepState) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    encode_step(&StepState {
        queued_ms: None,
        ..s.clone()
    })
}

/// Encodes a step state in its stored form (the `s:<step>` and `rs:<step>` fields of a run
/// hash): msgpack with short field names, absent values left out.
///
/// # Errors
/// Only when msgpack cannot represent the value (never for a [`StepState`]).
pub fn encode_step(s: &StepState) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let stored = Stored {
        status: status_code(s.status),
        attempt: s.attempt,
        token: s.token.clone(),
        worker: s.worker.clone(),
        queued_ms: s.queued_ms,
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
        exit_code: s.exit_code,
        error: s.error.clone(),
        output: s.output.clone(),
        log_path: s.log_path.clone(),
        retry_at_ms: s.retry_at_ms,
        lost: s.lost,
        ignore_preconditions: s.ignore_preconditions,
        continued: s.continued,
        dag_preconditions_unmet: s.dag_preconditions_unmet,
        handler: s.handler,
        dag_run_status: s.dag_run_status,
        history: s
            .history
            .iter()
            .map(|h| StoredAttempt {
                attempt: h.attempt,
                status: status_code(h.status),
                worker: h.worker.clone(),
                queued_ms: h.queued_ms,
                started_ms: h.started_ms,
                finished_ms: h.finished_ms,
                exit_code: h.exit_code,
                error: h.error.clone(),
                log_path: h.log_path.clone(),
            })
            .collect(),
        attempt_base: s.attempt_base,
        repeats: s.repeats,
        children: s.children,
    };
    rmp_serde::to_vec_named(&stored)
}

/// Reads a stored step state: the compact form of [`encode_step`], or the msgpack of
/// [`StepState`] with full field names that versions before it wrote.
///
/// # Errors
/// [`StepDecodeError`] when the bytes are neither.
pub fn decode_step(bytes: &[u8]) -> Result<StepState, StepDecodeError> {
    let stored: Stored = match rmp_serde::from_slice(bytes) {
        Ok(s) => s,
        // An earlier version's StepState has no `s` field (it says `status`).
        Err(compact) => {
            return rmp_serde::from_slice::<StepState>(bytes).map_err(|_| compact.into());
        }
    };
    let status = |code| status_of(code).ok_or(StepDecodeError::UnknownStatus(code));
    let history = stored
        .history
        .into_iter()
        .map(|h| {
            Ok(AttemptRecord {
                attempt: h.attempt,
                status: status(h.status)?,
                worker: h.worker,
                queued_ms: h.queued_ms,
                started_ms: h.started_ms,
                finished_ms: h.finished_ms,
                exit_code: h.exit_code,
                error: h.error,
                log_path: h.log_path,
            })
        })
        .collect::<Result<_, StepDecodeError>>()?;
    Ok(StepState {
        status: status(stored.status)?,
        attempt: stored.attempt,
        token: stored.token,
        worker: stored.worker,
        queued_ms: stored.queued_ms,
        started_ms: stored.started_ms,
        finished_ms: stored.finished_ms,
        exit_code: stored.exit_code,
        error: stored.error,
        output: stored.output,
        log_path: stored.log_path,
        retry_at_ms: stored.retry_at_ms,
        lost: stored.lost,
        ignore_preconditions: stored.ignore_preconditions,
        continued: stored.continued,
        dag_preconditions_unmet: stored.dag_preconditions_unmet,
        handler: stored.handler,
        dag_run_status: stored.dag_run_status,
        history,
        attempt_base: stored.attempt_base,
        repeats: stored.repeats,
        children: stored.children,
    })
}

/// Encodes a run's bound params for its `params` field: msgpack of `[name or nil, value]`
/// pairs (no field names). `None` when there are none: the field is then left out.
///
/// # Errors
/// Only when msgpack cannot represent the value (never for params).
pub fn encode_params(params: &[BoundParam]) -> Result<Option<Vec<u8>>, rmp_serde::encode::Error> {
    if params.is_empty() {
        return Ok(None);
    }
    let pairs: Vec<(&Option<String>, &String)> =
        params.iter().map(|p| (&p.name, &p.value)).collect();
    rmp_serde::to_vec(&pairs).map(Some)
}

/// Reads a run's `params` field: the pairs of [`encode_params`], or the msgpack of
/// `Vec<BoundParam>` with field names that earlier versions wrote (msgpack decoding of a
/// struct takes either a map or an array).
///
/// # Errors
/// When the bytes are neither.
pub fn decode_params(bytes: &[u8]) -> Result<Vec<BoundParam>, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// The fields of a new run's hash ([`crate::redis::keys::Keys::run`]) other than its steps, as
/// written by the submit script. Values equal to what a reader assumes when the field is
/// absent are left out (no `params` when there are none, `queue` when it is the DAG's own,
/// `pri` when normal, `dlim` when 0, `trigger` when `api`, `ver` when 0), and there is no
/// creation time, which the run id holds ([`crate::run_id::created_ms`]), so a run hash stays
/// small.
#[derive(Debug, Clone)]
pub struct NewRunFields<'a> {
    /// DAG name (`dag`).
    pub dag: &'a str,
    /// Digest of the DAG version (`spec`).
    pub spec: &'a str,
    /// Bound params (`params`).
    pub params: &'a [BoundParam],
    /// Priority (`pri`).
    pub priority: crate::dag::Priority,
    /// The DAG version's worker selector (`ws`, canonical; left out when empty).
    pub selector: &'a crate::labels::Labels,
    /// Queue (`queue`).
    pub queue: &'a str,
    /// The DAG's own `maxActiveRuns` apart from the queue (`dlim`, 0: none).
    pub dag_limit: u32,
    /// `api`, `batch`, `schedule` or `retry` (`trigger`).
    pub trigger: &'a str,
    /// The dedup key held (the full Redis key) and its window after success, ms
    /// (`dedup`, `dedupwin`).
    pub dedup: Option<(&'a str, u64)>,
    /// When a delayed run is due, ms (`due`).
    pub due_ms: Option<u64>,
    /// The cron slot of a scheduled run, ms (`slot`).
    pub slot_ms: Option<u64>,
    /// A child run's parent (`pr`, `ps`, `pd`).
    pub parent: Option<&'a crate::model::ParentLink>,
}

impl NewRunFields<'_> {
    /// The field/value pairs to `HSET`, status `queued`.
    ///
    /// # Errors
    /// Only when msgpack cannot represent the params (never).
    pub fn to_pairs(&self) -> Result<Vec<(&'static str, Vec<u8>)>, rmp_serde::encode::Error> {
        let mut out = self.shared_pairs();
        out.extend(self.own_pairs()?);
        Ok(out)
    }

    /// The pairs of [`NewRunFields::to_pairs`] that every run of one submit chunk has alike
    /// (DAG, version, status, priority, queue, limit, trigger): all but those of
    /// [`NewRunFields::own_pairs`].
    pub fn shared_pairs(&self) -> Vec<(&'static str, Vec<u8>)> {
        use crate::dag::Priority;
        use crate::redis::fields::run_field as f;
        let mut out: Vec<(&'static str, Vec<u8>)> = vec![
            (f::DAG, self.dag.into()),
            (f::SPEC, self.spec.into()),
            (f::STATUS, RunStatus::Queued.as_str().into()),
        ];
        if self.priority != Priority::NORMAL {
            out.push((f::PRIORITY, self.priority.to_string().into_bytes()));
        }
        if !self.selector.is_empty() {
            out.push((f::SELECTOR, self.selector.canonical().into_bytes()));
        }
        if self.queue != self.dag {
            out.push((f::QUEUE, self.queue.into()));
        }
        if self.dag_limit > 0 {
            out.push((f::DAG_LIMIT, self.dag_limit.to_string().into_bytes()));
        }
        if self.trigger != "api" {
            out.push((f::TRIGGER, self.trigger.into()));
        }
        if let Some(p) = self.parent {
            out.push((f::PARENT_RUN, p.run.as_bytes().to_vec()));
            out.push((f::PARENT_STEP, p.step.as_bytes().to_vec()));
            out.push((f::PARENT_DEPTH, p.depth.to_string().into_bytes()));
        }
        out
    }

    /// The pairs of [`NewRunFields::to_pairs`] of a run's own: its params, dedup key, due time
    /// and cron slot.
    ///
    /// # Errors
    /// Only when msgpack cannot represent the params (never).
    pub fn own_pairs(&self) -> Result<Vec<(&'static str, Vec<u8>)>, rmp_serde::encode::Error> {
        use crate::redis::fields::run_field as f;
        let mut out: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(4);
        if let Some(p) = encode_params(self.params)? {
            out.push((f::PARAMS, p));
        }
        if let Some((key, window_ms)) = self.dedup {
            out.push((f::DEDUP, key.into()));
            if window_ms > 0 {
                out.push((f::DEDUP_WINDOW, window_ms.to_string().into_bytes()));
            }
        }
        if let Some(due) = self.due_ms {
            out.push((f::DUE, due.to_string().into_bytes()));
        }
        if let Some(slot) = self.slot_ms {
            out.push((f::SLOT, slot.to_string().into_bytes()));
        }
        Ok(out)
    }
}

// A run read back from its hash lives here, with the stored forms it decodes, so that the
// model does not depend on how it is stored.
impl RunRecord {
    /// Rebuilds a run from its hash fields (HGETALL). Returns `Ok(None)` for an empty hash.
    ///
    /// # Errors
    /// [`RecordError`] when a field is missing or malformed.
    pub fn from_fields(
        id: &str,
        fields: BTreeMap<String, Vec<u8>>,
    ) -> Result<Option<Self>, RecordError> {
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &'static str| -> Result<String, RecordError> {
            let raw = fields.get(name).ok_or(RecordError::Missing(name))?;
            String::from_utf8(raw.clone()).map_err(|e| RecordError::Malformed {
                field: name.into(),
                reason: e.to_string(),
            })
        };
        let number = |name: &'static str| -> Result<Option<u64>, RecordError> {
            match fields.get(name) {
                None => Ok(None),
                Some(raw) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .map(Some)
                    .ok_or_else(|| RecordError::Malformed {
                        field: name.into(),
                        reason: "not a number".into(),
                    }),
            }
        };
        let status = text(run_field::STATUS)?
            .parse()
            .map_err(|e: UnknownStatus| RecordError::Malformed {
                field: run_field::STATUS.into(),
                reason: e.to_string(),
            })?;
        let params = match fields.get(run_field::PARAMS) {
            None => Vec::new(),
            Some(raw) => decode_params(raw).map_err(|e| RecordError::Malformed {
                field: run_field::PARAMS.into(),
                reason: e.to_string(),
            })?,
        };
        let mut steps = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for (name, raw) in &fields {
            // Blanked (not deleted) once its step left the queue: none.
            if let Some(step) = name.strip_prefix(run_field::ENTRY_PREFIX) {
                if !raw.is_empty() {
                    entries.insert(step.to_string(), String::from_utf8_lossy(raw).into_owned());
                }
            }
            if let Some(step) = name.strip_prefix(run_field::STEP_PREFIX) {
                let state = decode_step(raw).map_err(|e| RecordError::Malformed {
                    field: name.clone(),
                    reason: e.to_string(),
                })?;
                steps.insert(step.to_string(), state);
            }
        }
        let optional = |name: &'static str| -> Option<String> {
            fields
                .get(name)
                .and_then(|raw| String::from_utf8(raw.clone()).ok())
                .filter(|s| !s.is_empty())
        };
        let dag = text(run_field::DAG)?;
        let created_ms = number(run_field::CREATED)?
            .or_else(|| crate::run_id::created_ms(id))
            .unwrap_or(0);
        // A step queued with its run is stored without a time of its own (see
        // `encode_new_step`): it was queued when the run was created.
        for s in steps.values_mut() {
            if s.queued_ms.is_none() && s.attempt > 0 && s.status != StepStatus::Pending {
                s.queued_ms = Some(created_ms);
            }
        }
        let priority = number(run_field::PRIORITY)?
            .and_then(|n| u8::try_from(n).ok())
            .and_then(Priority::new)
            .unwrap_or_default();
        Ok(Some(Self {
            id: id.to_string(),
            priority,
            selector: optional(run_field::SELECTOR).unwrap_or_default(),
            queue: optional(run_field::QUEUE).unwrap_or_else(|| dag.clone()),
            dag_limit: number(run_field::DAG_LIMIT)?
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            reason: optional(run_field::REASON),
            due_ms: number(run_field::DUE)?,
            dedup_key: optional(run_field::DEDUP),
            dedup_window_ms: number(run_field::DEDUP_WINDOW)?.unwrap_or(0),
            trigger: optional(run_field::TRIGGER).unwrap_or_else(|| "api".into()),
            slot_ms: number(run_field::SLOT)?,
            dag,
            spec: text(run_field::SPEC)?,
            status,
            params,
            created_ms,
            started_ms: number(run_field::STARTED)?,
            finished_ms: number(run_field::FINISHED)?,
            version: number(run_field::VERSION)?.unwrap_or(0),
            steps,
            entries,
            auto_retries: number(run_field::AUTO_RETRIES)?
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            retry_at_ms: number(run_field::RUN_RETRY_AT)?,
            resolved: match fields.get(run_field::RESOLVED) {
                None => None,
                Some(raw) => {
                    Some(
                        crate::model::decode(raw).map_err(|e| RecordError::Malformed {
                            field: run_field::RESOLVED.into(),
                            reason: e.to_string(),
                        })?,
                    )
                }
            },
            parent: match (
                optional(run_field::PARENT_RUN),
                optional(run_field::PARENT_STEP),
            ) {
                (Some(run), Some(step)) => Some(crate::model::ParentLink {
                    run,
                    step,
                    depth: number(run_field::PARENT_DEPTH)?
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1),
                }),
                _ => None,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = StepStatus> {
        (0u8..=8).prop_map(|c| status_of(c).unwrap())
    }

    fn any_attempt() -> impl Strategy<Value = AttemptRecord> {
        (
            any::<u32>(),
            any_status(),
            proptest::option::of(".{0,20}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(".{0,30}"),
        )
            .prop_map(|(attempt, status, worker, queued, finished, exit, error)| {
                AttemptRecord {
                    attempt,
                    status,
                    worker: worker.clone(),
                    queued_ms: queued,
                    started_ms: queued,
                    finished_ms: finished,
                    exit_code: exit,
                    error,
                    log_path: worker,
                }
            })
    }

    prop_compose! {
        fn any_step()(
            status in any_status(),
            attempt in any::<u32>(),
            token in proptest::option::of("[0-9a-f]{16}"),
            worker in proptest::option::of(".{0,30}"),
            times in (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()),
                      proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
            exit_code in proptest::option::of(any::<i32>()),
            error in proptest::option::of(".{0,40}"),
            output in proptest::option::of((".{0,8}", ".{0,20}")),
            log_path in proptest::option::of(".{0,40}"),
            counts in (any::<u32>(), any::<u32>(), any::<u32>()),
            flags in (any::<bool>(), any::<bool>(), any::<bool>()),
            handler in proptest::option::of(prop_oneof![
                Just(HandlerOn::Success), Just(HandlerOn::Failure),
                Just(HandlerOn::Abort), Just(HandlerOn::Exit)]),
            dag_run_status in proptest::option::of(prop_oneof![
                Just(RunStatus::Succeeded), Just(RunStatus::Failed), Just(RunStatus::Aborted)]),
            history in proptest::collection::vec(any_attempt(), 0..4),
        ) -> StepState {
            StepState {
                status,
                attempt,
                token,
                worker,
                queued_ms: times.0,
                started_ms: times.1,
                finished_ms: times.2,
                exit_code,
                error,
                output,
                log_path,
                retry_at_ms: times.3,
                lost: counts.0,
                ignore_preconditions: flags.0,
                continued: flags.1,
                dag_preconditions_unmet: flags.2,
                handler,
                dag_run_status,
                history,
                attempt_base: counts.1,
                repeats: counts.2,
                children: counts.1.wrapping_mul(7),
            }
        }
    }

    proptest! {
        #[test]
        fn step_states_round_trip(s in any_step()) {
            let bytes = encode_step(&s).unwrap();
            prop_assert_eq!(&decode_step(&bytes).unwrap(), &s);
            // What earlier versions wrote is still read.
            let legacy = crate::model::encode(&s).unwrap();
            prop_assert_eq!(&decode_step(&legacy).unwrap(), &s);
        }

        #[test]
        fn params_round_trip(p in proptest::collection::vec(
            (proptest::option::of("[A-Z]{1,5}"), ".{0,20}"), 0..5)) {
            let params: Vec<BoundParam> = p
                .into_iter()
                .map(|(name, value)| BoundParam { name, value })
                .collect();
            let stored = encode_params(&params).unwrap().unwrap_or_else(|| vec![0x90]);
            prop_assert_eq!(&decode_params(&stored).unwrap(), &params);
            let legacy = crate::model::encode(&params).unwrap();
            prop_assert_eq!(&decode_params(&legacy).unwrap(), &params);
        }
    }

    #[test]
    fn a_queued_step_fits_a_listpack_value() {
        let mut s = StepState::pending();
        assert!(encode_step(&s).unwrap().len() <= 4);
        s.status = StepStatus::Queued;
        s.attempt = 1;
        s.token = Some("0123456789abcdef".into());
        s.queued_ms = Some(1_800_000_000_000);
        let n = encode_step(&s).unwrap().len();
        assert!(n <= 64, "{n} bytes");
    }

    /// A run hash of this version has no `created` field, and the steps queued with the run
    /// no queued time: both are read from the run id.
    #[test]
    fn a_new_run_takes_its_times_from_its_id() {
        let id = crate::run_id::new();
        let made = crate::run_id::created_ms(&id).unwrap();
        let queued = StepState {
            status: StepStatus::Queued,
            attempt: 1,
            token: Some("0123456789ab".into()),
            queued_ms: Some(made + 3),
            ..StepState::pending()
        };
        let mut fields: BTreeMap<String, Vec<u8>> =
            [("dag", "d"), ("spec", "0123"), ("status", "queued")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
        fields.insert("s:a".into(), encode_new_step(&queued).unwrap());
        fields.insert(
            "s:b".into(),
            encode_new_step(&StepState::pending()).unwrap(),
        );
        assert!(
            encode_new_step(&queued).unwrap().len() + 11 <= encode_step(&queued).unwrap().len()
        );
        let run = RunRecord::from_fields(&id, fields.clone())
            .unwrap()
            .unwrap();
        assert_eq!(run.created_ms, made);
        assert_eq!(run.steps["a"].queued_ms, Some(made));
        assert_eq!(run.steps["b"].queued_ms, None);
        // A run of an earlier version keeps its own times.
        fields.insert("created".into(), b"7".to_vec());
        fields.insert("s:a".into(), encode_step(&queued).unwrap());
        let run = RunRecord::from_fields(&id, fields).unwrap().unwrap();
        assert_eq!(
            (run.created_ms, run.steps["a"].queued_ms),
            (7, Some(made + 3))
        );
    }

    #[test]
    fn a_blanked_ready_entry_field_is_no_entry() {
        let mut fields: BTreeMap<String, Vec<u8>> = [
            ("dag", "d"),
            ("spec", "0123456789abcdef"),
            ("status", "running"),
            ("created", "1"),
            ("e:a", "1-0"),
            ("e:b", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        fields.insert("s:a".into(), encode_step(&StepState::pending()).unwrap());
        let run = RunRecord::from_fields("r", fields).unwrap().unwrap();
        assert_eq!(run.entries.len(), 1, "{:?}", run.entries);
        assert_eq!(run.entries["a"], "1-0");
    }

    #[test]
    fn an_unknown_status_code_is_an_error() {
        let bytes = rmp_serde::to_vec_named(&Stored {
            status: 42,
            ..Stored::default()
        })
        .unwrap();
        assert!(matches!(
            decode_step(&bytes),
            Err(StepDecodeError::UnknownStatus(42))
        ));
    }
}
