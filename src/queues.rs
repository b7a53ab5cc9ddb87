//! `dagrid queues` (the ready steps per priority level and the state of each named queue, from
//! `GET /api/v1/queues`) and `dagrid queue pause|resume <name>`
//! (`POST /api/v1/queues/{name}/pause|resume`).

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::{json, Value};

use crate::client::Api;
use crate::format::{human_ms, priority_label};

/// `dagrid queues`; `all` also lists the priority levels with nothing ready or claimed.
pub(crate) async fn list(server: &str, all: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let v: Value = api.get("/api/v1/queues").await?;
    print!("{}", render(&v, all));
    Ok(ExitCode::SUCCESS)
}

/// `dagrid queue pause <name>` (`pause`) or `dagrid queue resume <name>`.
pub(crate) async fn set_paused(server: &str, name: &str, pause: bool) -> anyhow::Result<ExitCode> {
    if let Some(problem) = dagrid_coordinator::config::queue_name_problem(name) {
        bail!("queue name {name:?} {problem}");
    }
    let api = Api::new(server)?;
    let verb = if pause { "pause" } else { "resume" };
    let v: Value = api
        .post(&format!("/api/v1/queues/{name}/{verb}"), &json!({}))
        .await?;
    println!("{}", paused_message(&v, name));
    Ok(ExitCode::SUCCESS)
}

/// What `queue pause|resume` prints from the answer `{"name", "paused"}`.
fn paused_message(v: &Value, asked: &str) -> String {
    let name = v["name"].as_str().unwrap_or(asked);
    if v["paused"].as_bool().unwrap_or(false) {
        format!(
            "queue {name} paused: its waiting runs stay queued (running ones finish); `dagrid queue resume {name}` lets them start"
        )
    } else {
        format!("queue {name} resumed: its waiting runs start as capacity allows")
    }
}

fn age(v: &Value) -> String {
    v.as_u64().map(human_ms).unwrap_or_else(|| "-".into())
}

/// The answer of `GET /api/v1/queues` as two tables: priority levels (highest first; only the
/// ones with steps ready or claimed unless `all`) and named queues.
fn render(v: &Value, all: bool) -> String {
    let mut out = String::new();
    let levels: Vec<&Value> = v["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            all || l["ready"].as_u64().unwrap_or(0) + l["claimed"].as_u64().unwrap_or(0) > 0
        })
        .collect();
    if levels.is_empty() {
        let _ = writeln!(
            out,
            "no steps ready or claimed at any priority (--all lists every level)"
        );
    } else {
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>8}  OLDEST READY",
            "PRIORITY", "READY", "CLAIMED"
        );
        for l in levels {
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>8}  {}",
                l["priority"]
                    .as_u64()
                    .map(priority_label)
                    .unwrap_or_else(|| "?".into()),
                l["ready"].as_u64().unwrap_or(0),
                l["claimed"].as_u64().unwrap_or(0),
                age(&l["oldest_ready_ms"]),
            );
        }
    }
    let _ = writeln!(out);
    let selectors: Vec<&Value> = v["selectors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            all || s["ready"].as_u64().unwrap_or(0) + s["claimed"].as_u64().unwrap_or(0) > 0
        })
        .collect();
    if !selectors.is_empty() {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>8} {:>8}  {:<12} WAITING FOR",
            "WORKER SELECTOR", "READY", "CLAIMED", "WORKERS", "OLDEST READY"
        );
        for s in selectors {
            let _ = writeln!(
                out,
                "{:<32} {:>8} {:>8} {:>8}  {:<12} {}",
                s["selector"].as_str().unwrap_or_default(),
                s["ready"].as_u64().unwrap_or(0),
                s["claimed"].as_u64().unwrap_or(0),
                s["matching_workers"].as_u64().unwrap_or(0),
                age(&s["oldest_ready_ms"]),
                s["waiting_for"].as_str().unwrap_or("-"),
            );
        }
        let _ = writeln!(out);
    }
    let queues = v["queues"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if queues.is_empty() {
        let _ = writeln!(out, "no queues");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<6} {:>10} {:>8} {:>8}  {:<12} WAITING BY PRIORITY",
        "QUEUE", "PAUSED", "ACTIVE/MAX", "WAITING", "DELAYED", "OLDEST WAIT"
    );
    for q in queues {
        let max = q["max_concurrency"]
            .as_u64()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into());
        let mut by_priority: Vec<(u64, u64)> = q["waiting_by_priority"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(p, n)| Some((p.parse().ok()?, n.as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        by_priority.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
        let by_priority: Vec<String> = by_priority
            .iter()
            .map(|(p, n)| format!("{p}:{n}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<24} {:<6} {:>10} {:>8} {:>8}  {:<12} {}",
            q["name"].as_str().unwrap_or_default(),
            if q["paused"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            format!("{}/{max}", q["active"].as_u64().unwrap_or(0)),
            q["waiting"].as_u64().unwrap_or(0),
            q["delayed"].as_u64().unwrap_or(0),
            age(&q["oldest_wait_ms"]),
            by_priority.join(" "),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        let mut levels: Vec<Value> = (0..=9u64)
            .rev()
            .map(|p| json!({"priority": p, "ready": 0, "claimed": 0, "oldest_ready_ms": null}))
            .collect();
        levels[1] = json!({"priority": 8, "ready": 12, "claimed": 4, "oldest_ready_ms": 182_000});
        levels[4] = json!({"priority": 5, "ready": 0, "claimed": 2, "oldest_ready_ms": null});
        json!({
            "levels": levels,
            "queues": [
                {"name": "batch", "paused": true, "max_concurrency": 2, "active": 2,
                 "waiting": 120, "waiting_by_priority": {"5": 100, "8": 20, "2": 0},
                 "delayed": 3, "oldest_wait_ms": 252_000},
                {"name": "default", "paused": false, "max_concurrency": null, "active": 5,
                 "waiting": 0, "waiting_by_priority": {}, "delayed": 0, "oldest_wait_ms": null},
            ]
        })
    }

    #[test]
    fn only_busy_levels_unless_all() {
        let text = render(&sample(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PRIORITY"), "{text}");
        assert_eq!(lines[1], "8 (high)         12        4  3m 2s");
        assert_eq!(lines[2], "5 (normal)        0        2  -");
        assert_eq!(lines[3], "");
        let all = render(&sample(), true);
        assert_eq!(
            all.lines().take_while(|l| !l.is_empty()).count(),
            11,
            "{all}"
        );
        assert!(all.contains("\n9                 0        0  -\n"), "{all}");
    }

    #[test]
    fn queues_show_capacity_waits_and_ages() {
        let text = render(&sample(), false);
        let batch = text.lines().find(|l| l.starts_with("batch")).unwrap();
        assert_eq!(
            batch,
            "batch                    yes           2/2      120        3  4m 12s       8:20 5:100"
        );
        let default = text.lines().find(|l| l.starts_with("default")).unwrap();
        assert!(default.contains("no            5/-"), "{default}");
        assert!(default.trim_end().ends_with('-'), "{default}");
    }

    #[test]
    fn worker_selectors_say_when_no_worker_matches() {
        let mut v = sample();
        v["selectors"] = json!([
            {"selector": "gpu=true", "ready": 3, "claimed": 0, "oldest_ready_ms": 65_000,
             "matching_workers": 0, "waiting_for": "no live worker matches gpu=true"},
            {"selector": "region=eu", "ready": 0, "claimed": 0, "oldest_ready_ms": null,
             "matching_workers": 2, "waiting_for": null}
        ]);
        let text = render(&v, false);
        let gpu = text.lines().find(|l| l.starts_with("gpu=true")).unwrap();
        assert!(gpu.ends_with("no live worker matches gpu=true"), "{gpu}");
        assert!(gpu.contains("3        0        0  1m 5s"), "{gpu}");
        assert!(
            !text.contains("region=eu"),
            "idle selectors only with --all: {text}"
        );
        assert!(render(&v, true).contains("region=eu"));
    }

    #[test]
    fn an_idle_coordinator_says_so() {
        let text = render(&json!({"levels": [], "queues": []}), false);
        assert!(text.starts_with("no steps ready or claimed"), "{text}");
        assert!(text.ends_with("no queues\n"), "{text}");
    }

    #[test]
    fn pause_and_resume_say_what_happens_next() {
        let p = paused_message(&json!({"name": "batch", "paused": true}), "batch");
        assert!(p.starts_with("queue batch paused"), "{p}");
        assert!(p.contains("dagrid queue resume batch"), "{p}");
        let r = paused_message(&json!({"name": "batch", "paused": false}), "batch");
        assert!(r.starts_with("queue batch resumed"), "{r}");
    }
}
