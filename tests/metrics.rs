//! `/metrics` end to end: the text parses as OpenMetrics, and running a DAG moves the step and
//! run counters and the histograms by the right amounts while the gauges read from Redis show
//! queued work. The registry is process-wide (the coordinator and workers of the test cluster
//! share it), so these tests are a test binary of their own, apart from `tests/it/` whose
//! clusters would count into it, and assert deltas.

#[path = "it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Cluster, Options};
use serde_json::json;

/// Every sample of an exposition, `name{labels}` → value, after checking its format: each line a
/// `# TYPE`/`# HELP`/`# UNIT` comment or `name{labels} value`, each sample of a family declared
/// by `# TYPE` before it, `# EOF` last.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    let mut families = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.split(' ');
            let kind = words.next().unwrap_or("");
            let name = words.next().unwrap_or("");
            assert!(
                matches!(kind, "TYPE" | "HELP" | "UNIT") && !name.is_empty(),
                "bad comment line {line:?}"
            );
            if kind == "TYPE" {
                let t = words.next().unwrap_or("");
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram"),
                    "bad type in {line:?}"
                );
                assert!(families.insert(name.to_string()), "{name} declared twice");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "bad label in {line:?}"
                    );
                }
            }
        }
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "{name} has no # TYPE before it:\n{text}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

async fn scrape(c: &Cluster) -> BTreeMap<String, f64> {
    let resp = c.http.get(c.url("/metrics")).send().await.expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    parse(&resp.text().await.expect("body"))
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing in {m:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_steps_runs_and_show_queued_work() {
    let c = Cluster::start_with(
        &[
            ("ok.yaml", "name: ok\ndedup: none\nsteps:\n  - name: a\n    command: \"true\"\n"),
            (
                "flaky.yaml",
                "name: flaky\nsteps:\n  - name: a\n    command: \"true\"\n  - name: b\n    command: exit 3\n    retryPolicy:\n      limit: 1\n      intervalSec: 0\n",
            ),
            (
                "held.yaml",
                "name: held\nqueue: p\nsteps:\n  - name: a\n    command: \"true\"\n",
            ),
        ],
        Options {
            queues: vec![("p", 1)],
            ..Options::default()
        },
    )
    .await;
    let before = scrape(&c).await;
    for family in [
        "dagrid_steps_started_total",
        "dagrid_steps_reclaimed_total",
        "dagrid_redis_errors_total{kind=\"server\"}",
        "dagrid_runs{status=\"queued\"}",
        "dagrid_ready_steps{priority=\"9\"}",
        "dagrid_delayed",
        "dagrid_queue_waiting_runs{queue=\"p\"}",
    ] {
        get(&before, family);
    }

    // Queued work: a run waiting in a paused queue and a delayed run.
    let (status, _) = c.post_to(0, "/api/v1/queues/p/pause", json!({})).await;
    assert_eq!(status, 200);
    let held = c.submit("held", json!({})).await;
    let (status, body) = c
        .post_to(0, "/api/v1/runs", json!({"dag": "ok", "delay": "1h"}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Work done: one run with one step; one with a succeeding step and a step failing twice
    // (one retry).
    let ok = c.submit("ok", json!({})).await;
    let flaky = c.submit("flaky", json!({})).await;
    assert_eq!(c.wait(&ok).await["status"], "succeeded");
    assert_eq!(c.wait(&flaky).await["status"], "failed");
    assert_eq!(c.run(&held).await["status"], "queued");

    let after = scrape(&c).await;
    let delta = |s: &str| get(&after, s) - get(&before, s);
    for (series, want) in [
        ("dagrid_steps_started_total", 4.0),
        ("dagrid_steps_succeeded_total", 2.0),
        ("dagrid_steps_failed_total", 2.0),
        ("dagrid_steps_retried_total", 1.0),
        ("dagrid_steps_reclaimed_total", 0.0),
        ("dagrid_runs_finished_total{status=\"succeeded\"}", 1.0),
        ("dagrid_runs_finished_total{status=\"failed\"}", 1.0),
        ("dagrid_runs_finished_total{status=\"aborted\"}", 0.0),
        ("dagrid_run_queue_wait_seconds_count", 2.0),
        ("dagrid_step_dispatch_latency_seconds_count", 4.0),
        (
            "dagrid_step_duration_seconds_count{outcome=\"succeeded\"}",
            2.0,
        ),
        (
            "dagrid_step_duration_seconds_count{outcome=\"failed\"}",
            2.0,
        ),
    ] {
        assert_eq!(delta(series), want, "{series}");
    }
    // The histograms' +Inf bucket is their count.
    assert_eq!(
        get(
            &after,
            "dagrid_step_dispatch_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        get(&after, "dagrid_step_dispatch_latency_seconds_count")
    );
    for (series, want) in [
        ("dagrid_runs{status=\"queued\"}", 2.0),
        ("dagrid_runs{status=\"running\"}", 0.0),
        ("dagrid_runs{status=\"succeeded\"}", 1.0),
        ("dagrid_runs{status=\"failed\"}", 1.0),
        ("dagrid_queue_waiting_runs{queue=\"p\"}", 1.0),
        ("dagrid_queue_active_runs{queue=\"p\"}", 0.0),
        ("dagrid_queue_paused{queue=\"p\"}", 1.0),
        ("dagrid_delayed", 1.0),
        ("dagrid_ready_steps{priority=\"5\"}", 0.0),
        ("dagrid_claimed_steps{priority=\"5\"}", 0.0),
        ("dagrid_workers_alive", 2.0),
        ("dagrid_worker_slots", 4.0),
    ] {
        assert_eq!(get(&after, series), want, "{series}");
    }
    // Finished DAG-named queues with nothing active or waiting are not listed.
    assert!(!after.contains_key("dagrid_queue_waiting_runs{queue=\"ok\"}"));
    c.stop().await;
}

/// A coordinator with nothing yet (no DAG, queue or worker) still serves the gauges read from
/// Redis: the scrape sends no empty pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_cluster_is_scraped_whole() {
    let c = Cluster::start_with(
        &[],
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let m = scrape(&c).await;
    assert_eq!(m.get("dagrid_workers_alive"), Some(&0.0), "{m:?}");
    assert_eq!(
        m.get("dagrid_runs{status=\"succeeded\"}"),
        Some(&0.0),
        "{m:?}"
    );
    c.stop().await;
}
