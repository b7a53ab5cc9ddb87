//! Prometheus metrics of this process (coordinator, workers, or both under `dagrid start-all`):
//! one registry per process, rendered in the Prometheus/OpenMetrics text format by [`render`].
//!
//! The metric families themselves are defined here too (one module names them all, as
//! [`crate::redis::keys`] names all keys), so a coordinator and the workers of one process share them:
//! they are made and registered once, on first use, into the one process-wide registry.
//!
//! Two kinds of metric:
//! - **Events** (counters and histograms of this process, [`steps`], [`runs_finished`],
//!   [`queue_wait`], [`dispatch_latency`], [`step_finished`], [`redis_error`]): counted where the
//!   event happens, once cluster-wide (a step report is applied by exactly one coordinator, a
//!   step runs on exactly one worker), so summing a counter over every process is right. An
//!   increment is an atomic add; a histogram observation takes a short uncontended mutex (never
//!   held across an await).
//! - **Cluster state** ([`ClusterGauges`]): read from Redis by the coordinator at scrape time,
//!   put into a fresh registry per scrape and rendered with `render(Some(&extra))`. Every
//!   coordinator replica reports the same values: take `max` (or any one), not `sum`.
//!
//! Labels are low-cardinality: outcomes, statuses, error kinds, priority levels (0–9), queue
//! names and the label sets of live workers (as many as the fleet's distinct `--label`
//! combinations); never a run id or a step name.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// One label with a fixed value (an outcome, a status, an error kind).
type Label = [(&'static str, &'static str); 1];
/// One label with a value known only at scrape time (a queue name, a priority level).
type DynLabel = [(&'static str, String); 1];

/// Step attempt counters of the coordinators, counted when a report is applied (so once
/// cluster-wide); see [`steps`] and [`StepEvents`] for what each counts.
#[derive(Debug)]
pub struct Steps {
    /// `dagrid_steps_started_total`: attempts begun on a worker (the first report of an attempt
    /// was applied; a process that could not be spawned counts too, and then fails).
    pub started: Counter,
    /// `dagrid_steps_succeeded_total`: attempts that exited 0.
    pub succeeded: Counter,
    /// `dagrid_steps_failed_total`: attempts that failed (non-zero exit, signal, timeout, spawn
    /// error), whether or not a retry follows.
    pub failed: Counter,
    /// `dagrid_steps_retried_total`: new attempts scheduled after a failed attempt (per its
    /// `retryPolicy`) or after a reclaimed one.
    pub retried: Counter,
    /// `dagrid_steps_reclaimed_total`: attempts given up as lost: their worker stopped
    /// heartbeating and the reaper took the entry back (or the reconciler found it gone).
    pub reclaimed: Counter,
}

/// Every event metric of this process.
struct Metrics {
    steps: Steps,
    runs_finished: Family<Label, Counter>,
    queue_wait: Histogram,
    dispatch_latency: Histogram,
    step_duration: Family<Label, Histogram>,
    redis_errors: Family<Label, Counter>,
}

/// The final run statuses, the values of `dagrid_runs_finished_total{status}`.
pub const RUN_FINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "aborted"];
/// The values of `dagrid_step_duration_seconds{outcome}`.
pub const STEP_OUTCOMES: [&str; 4] = ["succeeded", "failed", "released", "lost"];
/// The values of `dagrid_redis_errors_total{kind}`: see [`redis_error`].
pub const REDIS_ERROR_KINDS: [&str; 5] = ["timeout", "connection", "pool", "server", "other"];

/// Buckets (s) of the wait histograms: 1 ms to about 4.6 h, ×4 each.
fn wait_buckets() -> impl Iterator<Item = f64> {
    times_four(0.001)
}

/// Buckets (s) of the step duration: 10 ms to about 11.6 h, ×4 each.
fn duration_buckets() -> impl Iterator<Item = f64> {
    times_four(0.01)
}

/// 13 buckets (s) from `start`, ×4 each: the values of prometheus-client's
/// `exponential_buckets(start, 4.0, 13)` (4^i is exact, so the products are the same), without
/// its `f64::powf`, which is the worker's one use of libm: leaving it out leaves libm unloaded
/// (about 0.3 MiB of each worker's resident memory).
fn times_four(start: f64) -> impl Iterator<Item = f64> {
    (0..13u32).map(move |i| start * f64::from(1u32 << (2 * i)))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = Metrics {
            steps: Steps {
                started: Counter::default(),
                succeeded: Counter::default(),
                failed: Counter::default(),
                retried: Counter::default(),
                reclaimed: Counter::default(),
            },
            runs_finished: Family::default(),
            queue_wait: Histogram::new(wait_buckets()),
            dispatch_latency: Histogram::new(wait_buckets()),
            step_duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            redis_errors: Family::default(),
        };
        // Every known label value from 0, so `increase()` sees the first event.
        for s in RUN_FINAL_STATUSES {
            let _ = m.runs_finished.get_or_create(&[("status", s)]);
        }
        for o in STEP_OUTCOMES {
            let _ = m.step_duration.get_or_create(&[("outcome", o)]);
        }
        for k in REDIS_ERROR_KINDS {
            let _ = m.redis_errors.get_or_create(&[("kind", k)]);
        }
        m
    })
}

/// The process-wide registry, holding every event metric.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let m = metrics();
        let mut r = Registry::default();
        let s = &m.steps;
        r.register(
            "dagrid_steps_started",
            "Step attempts begun on a worker (counted by the coordinator applying the report)",
            s.started.clone(),
        );
        r.register(
            "dagrid_steps_succeeded",
            "Step attempts that succeeded",
            s.succeeded.clone(),
        );
        r.register(
            "dagrid_steps_failed",
            "Step attempts that failed (non-zero exit, signal, timeout, spawn error), retried or not",
            s.failed.clone(),
        );
        r.register(
            "dagrid_steps_retried",
            "New step attempts scheduled after a failed or reclaimed attempt",
            s.retried.clone(),
        );
        r.register(
            "dagrid_steps_reclaimed",
            "Step attempts given up as lost because their worker stopped heartbeating",
            s.reclaimed.clone(),
        );
        r.register(
            "dagrid_runs_finished",
            "Runs that reached a final status, by status",
            m.runs_finished.clone(),
        );
        r.register_with_unit(
            "dagrid_run_queue_wait",
            "From a run's submission (or the end of its delay) to the start of its first step",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register_with_unit(
            "dagrid_step_dispatch_latency",
            "From a step attempt's ready-stream entry to its process start, on the worker",
            Unit::Seconds,
            m.dispatch_latency.clone(),
        );
        r.register_with_unit(
            "dagrid_step_duration",
            "Run time of a step attempt's process on the worker, by outcome",
            Unit::Seconds,
            m.step_duration.clone(),
        );
        r.register(
            "dagrid_redis_errors",
            "Redis commands or connections that failed, by kind",
            m.redis_errors.clone(),
        );
        r
    })
}

/// The step attempt counters (`dagrid_steps_*_total`).
pub fn steps() -> &'static Steps {
    &metrics().steps
}

/// What applying one batch of reports to one run counted, for [`steps_applied`]. Filled by the
/// coordinator's pure transition code and counted only once the transition was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepEvents {
    /// Attempts begun.
    pub started: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Attempts scheduled again after a failure or a loss.
    pub retried: u64,
    /// Attempts given up as lost.
    pub reclaimed: u64,
}

/// Adds `e` to the step counters.
pub fn steps_applied(e: &StepEvents) {
    let s = steps();
    for (c, n) in [
        (&s.started, e.started),
        (&s.succeeded, e.succeeded),
        (&s.failed, e.failed),
        (&s.retried, e.retried),
        (&s.reclaimed, e.reclaimed),
    ] {
        if n > 0 {
            c.inc_by(n);
        }
    }
}

/// Counts a run that reached the final status `status` (`succeeded`, `failed`, `aborted`):
/// `dagrid_runs_finished_total{status}`.
pub fn run_finished(status: &'static str) {
    metrics()
        .runs_finished
        .get_or_create(&[("status", status)])
        .inc();
}

/// Observes `dagrid_run_queue_wait_seconds`: from the run's submission, or the end of its delay
/// for a delayed run, to the start of its first step.
pub fn queue_wait(wait: Duration) {
    metrics().queue_wait.observe(wait.as_secs_f64());
}

/// Observes `dagrid_step_dispatch_latency_seconds`: from the creation of an attempt's ready
/// entry (its stream id's ms part) to its process start.
pub fn dispatch_latency(latency: Duration) {
    metrics().dispatch_latency.observe(latency.as_secs_f64());
}

/// Observes `dagrid_step_duration_seconds{outcome}` for an attempt whose process ran for
/// `took`; `outcome` is one of [`STEP_OUTCOMES`].
pub fn step_finished(outcome: &'static str, took: Duration) {
    metrics()
        .step_duration
        .get_or_create(&[("outcome", outcome)])
        .observe(took.as_secs_f64());
}

/// Counts a failed Redis command or connection, `dagrid_redis_errors_total{kind}`, `kind` one
/// of [`REDIS_ERROR_KINDS`]: `timeout` (no reply in time), `connection` (refused, dropped,
/// I/O), `pool` (no pooled connection in time), `server` (an error reply), `other`.
pub fn redis_error(kind: &'static str) {
    metrics()
        .redis_errors
        .get_or_create(&[("kind", kind)])
        .inc();
}

/// The cluster's state as read from Redis at one scrape, rendered as gauges by
/// [`ClusterGauges::registry`].
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    /// `dagrid_runs{status}`: runs in each status (the runs-by-status indexes; finished runs
    /// until retention deletes them).
    pub runs_by_status: Vec<(&'static str, u64)>,
    /// `dagrid_ready_steps{priority}`: step attempts in the ready stream of each priority level
    /// not yet claimed by a worker.
    pub ready_by_priority: Vec<(u8, u64)>,
    /// `dagrid_claimed_steps{priority}`: ready entries claimed by a worker and not finished.
    pub claimed_by_priority: Vec<(u8, u64)>,
    /// `dagrid_delayed`: members of the delayed set (delayed runs, step retries waiting for
    /// their time, run deadlines).
    pub delayed: u64,
    /// Per queue: `dagrid_queue_waiting_runs{queue}` (runs waiting for admission),
    /// `dagrid_queue_active_runs{queue}` (admitted, unfinished) and `dagrid_queue_paused{queue}`
    /// (1 when paused).
    pub queues: Vec<QueueGauges>,
    /// `dagrid_workers_alive`: workers whose heartbeat has not expired.
    pub workers_alive: u64,
    /// `dagrid_worker_slots_busy`: slots running a step, summed over live workers' last
    /// heartbeats.
    pub slots_busy: u64,
    /// `dagrid_worker_slots`: slots of live workers (their `--concurrency`).
    pub slots_total: u64,
    /// Per distinct label set of the live workers (`dagrid worker --label`):
    /// `dagrid_workers_alive_by_labels{labels}`, `dagrid_worker_slots_busy_by_labels{labels}`
    /// and `dagrid_worker_slots_by_labels{labels}`.
    pub label_sets: Vec<LabelSetGauges>,
    /// Per registered worker selector (DAG `workerSelector`, canonical):
    /// `dagrid_selector_ready_steps{selector}` (its steps not yet claimed, all levels) and
    /// `dagrid_selector_matching_workers{selector}` (live workers whose labels satisfy it; 0
    /// with ready steps means they wait for a worker to join).
    pub selectors: Vec<(String, u64, u64)>,
}

/// The live workers of one label set in [`ClusterGauges`].
#[derive(Debug, Clone, Default)]
pub struct LabelSetGauges {
    /// The label set's canonical text, `k1=v1,k2=v2` sorted by key
    /// ([`crate::labels::Labels::canonical`]); empty for workers without labels.
    pub labels: String,
    /// Live workers with exactly these labels.
    pub alive: u64,
    /// Their slots running a step.
    pub slots_busy: u64,
    /// Their slots.
    pub slots_total: u64,
}

/// One queue's gauges in [`ClusterGauges`].
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    /// The queue name.
    pub name: String,
    /// Runs waiting for admission.
    pub waiting: u64,
    /// Admitted runs not finished.
    pub active: u64,
    /// Whether the queue is paused.
    pub paused: bool,
}

impl ClusterGauges {
    /// A fresh registry holding these values, for `render(Some(&registry))`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let gauge = |v: u64| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        let family = |values: &mut dyn Iterator<Item = (&'static str, String, u64)>| {
            let f: Family<DynLabel, Gauge> = Family::default();
            for (label, value, n) in values {
                f.get_or_create(&[(label, value)])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            f
        };
        r.register(
            "dagrid_runs",
            "Runs in each status (finished runs stay until retention deletes them)",
            family(
                &mut self
                    .runs_by_status
                    .iter()
                    .map(|(s, n)| ("status", s.to_string(), *n)),
            ),
        );
        r.register(
            "dagrid_ready_steps",
            "Step attempts in a ready stream not yet claimed, by priority level",
            family(
                &mut self
                    .ready_by_priority
                    .iter()
                    .map(|(p, n)| ("priority", p.to_string(), *n)),
            ),
        );
        r.register(
            "dagrid_claimed_steps",
            "Ready entries claimed by a worker and not finished, by priority level",
            family(
                &mut self
                    .claimed_by_priority
                    .iter()
                    .map(|(p, n)| ("priority", p.to_string(), *n)),
            ),
        );
        r.register(
            "dagrid_delayed",
            "Members of the delayed set: delayed runs, waiting step retries, run deadlines",
            gauge(self.delayed),
        );
        r.register(
            "dagrid_queue_waiting_runs",
            "Runs waiting for admission, by queue",
            family(
                &mut self
                    .queues
                    .iter()
                    .map(|q| ("queue", q.name.clone(), q.waiting)),
            ),
        );
        r.register(
            "dagrid_queue_active_runs",
            "Admitted, unfinished runs, by queue",
            family(
                &mut self
                    .queues
                    .iter()
                    .map(|q| ("queue", q.name.clone(), q.active)),
            ),
        );
        r.register(
            "dagrid_queue_paused",
            "1 when the queue is paused, by queue",
            family(
                &mut self
                    .queues
                    .iter()
                    .map(|q| ("queue", q.name.clone(), u64::from(q.paused))),
            ),
        );
        r.register(
            "dagrid_workers_alive",
            "Workers whose heartbeat has not expired",
            gauge(self.workers_alive),
        );
        r.register(
            "dagrid_worker_slots_busy",
            "Slots running a step, over the live workers' last heartbeats",
            gauge(self.slots_busy),
        );
        r.register(
            "dagrid_worker_slots",
            "Slots of the live workers",
            gauge(self.slots_total),
        );
        let by_labels = |n: fn(&LabelSetGauges) -> u64| {
            family(
                &mut self
                    .label_sets
                    .iter()
                    .map(move |l| ("labels", l.labels.clone(), n(l))),
            )
        };
        r.register(
            "dagrid_workers_alive_by_labels",
            "Live workers by label set (canonical k1=v1,k2=v2; empty: no labels)",
            by_labels(|l| l.alive),
        );
        r.register(
            "dagrid_worker_slots_busy_by_labels",
            "Slots running a step, over the live workers' last heartbeats, by label set",
            by_labels(|l| l.slots_busy),
        );
        r.register(
            "dagrid_worker_slots_by_labels",
            "Slots of the live workers, by label set",
            by_labels(|l| l.slots_total),
        );
        let by_selector = |n: fn(&(String, u64, u64)) -> u64| {
            family(
                &mut self
                    .selectors
                    .iter()
                    .map(move |s| ("selector", s.0.clone(), n(s))),
            )
        };
        r.register(
            "dagrid_selector_ready_steps",
            "Steps ready on a worker selector's streams, not yet claimed (all levels)",
            by_selector(|s| s.1),
        );
        r.register(
            "dagrid_selector_matching_workers",
            "Live workers whose labels satisfy a worker selector",
            by_selector(|s| s.2),
        );
        r
    }
}

/// This process's metrics, then those of `extra` (values read at scrape time, such as queue
/// depths read from Redis), in the OpenMetrics text format (`# EOF` at the end), as served at
/// `/metrics` with content type [`CONTENT_TYPE`].
pub fn render(extra: Option<&Registry>) -> String {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, registry());
    if let Some(extra) = extra {
        let _ = encode_registry(&mut out, extra);
    }
    let _ = encode_eof(&mut out);
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name` (labels included, as rendered) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn buckets_are_those_of_exponential_buckets() {
        use prometheus_client::metrics::histogram::exponential_buckets;
        assert!(wait_buckets().eq(exponential_buckets(0.001, 4.0, 13)));
        assert!(duration_buckets().eq(exponential_buckets(0.01, 4.0, 13)));
    }

    #[test]
    fn renders_every_family_with_types_and_eof() {
        let text = render(None);
        for (name, kind) in [
            ("dagrid_steps_started", "counter"),
            ("dagrid_steps_succeeded", "counter"),
            ("dagrid_steps_failed", "counter"),
            ("dagrid_steps_retried", "counter"),
            ("dagrid_steps_reclaimed", "counter"),
            ("dagrid_runs_finished", "counter"),
            ("dagrid_run_queue_wait_seconds", "histogram"),
            ("dagrid_step_dispatch_latency_seconds", "histogram"),
            ("dagrid_step_duration_seconds", "histogram"),
            ("dagrid_redis_errors", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(sample(&text, "dagrid_runs_finished_total{status=\"aborted\"}").is_some());
        assert!(sample(&text, "dagrid_redis_errors_total{kind=\"pool\"}").is_some());
    }

    #[test]
    fn counts_events() {
        let before = render(None);
        let get = |t: &str, n: &str| sample(t, n).unwrap_or(0.0);
        steps_applied(&StepEvents {
            started: 2,
            succeeded: 1,
            failed: 1,
            retried: 1,
            reclaimed: 0,
        });
        run_finished("failed");
        step_finished("succeeded", Duration::from_millis(1500));
        redis_error("timeout");
        let after = render(None);
        for (name, delta) in [
            ("dagrid_steps_started_total", 2.0),
            ("dagrid_steps_failed_total", 1.0),
            ("dagrid_steps_reclaimed_total", 0.0),
            ("dagrid_runs_finished_total{status=\"failed\"}", 1.0),
            (
                "dagrid_step_duration_seconds_count{outcome=\"succeeded\"}",
                1.0,
            ),
            ("dagrid_redis_errors_total{kind=\"timeout\"}", 1.0),
        ] {
            // Other tests of this binary count too: at least the delta.
            assert!(
                get(&after, name) - get(&before, name) >= delta,
                "{name}: {before} then {after}"
            );
        }
    }

    #[test]
    fn cluster_gauges_render_with_labels() {
        let g = ClusterGauges {
            runs_by_status: vec![("queued", 3), ("running", 1)],
            ready_by_priority: vec![(9, 0), (5, 4)],
            claimed_by_priority: vec![(5, 2)],
            delayed: 7,
            queues: vec![QueueGauges {
                name: "q1".into(),
                waiting: 2,
                active: 1,
                paused: true,
            }],
            workers_alive: 2,
            slots_busy: 2,
            slots_total: 8,
            label_sets: vec![
                LabelSetGauges {
                    labels: String::new(),
                    alive: 1,
                    slots_busy: 0,
                    slots_total: 4,
                },
                LabelSetGauges {
                    labels: "gpu=true,region=eu".into(),
                    alive: 1,
                    slots_busy: 2,
                    slots_total: 4,
                },
            ],
            selectors: vec![("gpu=true".into(), 3, 0)],
        };
        let text = render(Some(&g.registry()));
        for (name, v) in [
            ("dagrid_runs{status=\"queued\"}", 3.0),
            ("dagrid_ready_steps{priority=\"5\"}", 4.0),
            ("dagrid_claimed_steps{priority=\"5\"}", 2.0),
            ("dagrid_delayed", 7.0),
            ("dagrid_queue_waiting_runs{queue=\"q1\"}", 2.0),
            ("dagrid_queue_paused{queue=\"q1\"}", 1.0),
            ("dagrid_workers_alive", 2.0),
            ("dagrid_worker_slots", 8.0),
            ("dagrid_workers_alive_by_labels{labels=\"\"}", 1.0),
            (
                "dagrid_workers_alive_by_labels{labels=\"gpu=true,region=eu\"}",
                1.0,
            ),
            (
                "dagrid_worker_slots_busy_by_labels{labels=\"gpu=true,region=eu\"}",
                2.0,
            ),
            ("dagrid_worker_slots_by_labels{labels=\"\"}", 4.0),
            ("dagrid_selector_ready_steps{selector=\"gpu=true\"}", 3.0),
            (
                "dagrid_selector_matching_workers{selector=\"gpu=true\"}",
                0.0,
            ),
        ] {
            assert_eq!(sample(&text, name), Some(v), "{name} in:\n{text}");
        }
        assert!(text.contains("# TYPE dagrid_workers_alive gauge\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
