//! `dagrid workers`: the live workers (from `GET /api/v1/workers`, their last heartbeats), one
//! line each with its slots, heartbeat age, state and labels.

use std::fmt::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::client::Api;
use crate::format::{self, human_ms};

/// `dagrid workers`.
pub(crate) async fn list(server: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let v: Value = api.get("/api/v1/workers").await?;
    print!("{}", render(&v, format::now_ms()));
    Ok(ExitCode::SUCCESS)
}

/// A worker's labels as `k1=v1,k2=v2` (sorted by key, as the API sends them); `-` for none.
fn labels(w: &Value) -> String {
    let text = w["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

/// The answer of `GET /api/v1/workers` as a table, ordered by worker id; ages are taken at
/// `now_ms` (ms since the epoch).
fn render(v: &Value, now_ms: u64) -> String {
    let mut workers: Vec<&Value> = v["workers"].as_array().into_iter().flatten().collect();
    if workers.is_empty() {
        return "no live worker\n".into();
    }
    workers.sort_by_key(|w| w["worker_id"].as_str().unwrap_or_default().to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<16} {:>7} {:>9} {:>8} {:<8} LABELS",
        "WORKER", "HOST", "SLOTS", "HEARTBEAT", "UP", "STATE"
    );
    let u = |w: &Value, field: &str| w[field].as_u64().unwrap_or(0);
    for w in workers {
        let state = if w["draining"].as_bool().unwrap_or(false) {
            "draining"
        } else if w["stalled"].as_bool().unwrap_or(false) {
            "stalled"
        } else {
            "ok"
        };
        let _ = writeln!(
            out,
            "{:<36} {:<16} {:>7} {:>9} {:>8} {:<8} {}",
            w["worker_id"].as_str().unwrap_or_default(),
            w["host"].as_str().unwrap_or_default(),
            format!("{}/{}", u(w, "slots_busy"), u(w, "slots_total")),
            human_ms(now_ms.saturating_sub(u(w, "sent_ms"))),
            human_ms(now_ms.saturating_sub(u(w, "started_ms"))),
            state,
            labels(w),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_each_worker_with_its_labels() {
        let v = json!({"workers": [
            {"worker_id": "h-2-b", "host": "h", "slots_busy": 0, "slots_total": 4,
             "sent_ms": 99_000, "started_ms": 0, "stalled": false, "draining": true,
             "labels": {}},
            {"worker_id": "h-1-a", "host": "h", "slots_busy": 1, "slots_total": 2,
             "sent_ms": 100_000, "started_ms": 40_000, "stalled": false, "draining": false,
             "labels": {"gpu": "true", "region": "eu"}},
        ]});
        let text = render(&v, 100_500);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("LABELS"), "{text}");
        assert!(lines[1].starts_with("h-1-a "), "{text}");
        assert!(
            lines[1].contains(" 1/2 ") && lines[1].contains(" 1m "),
            "{text}"
        );
        assert!(lines[1].ends_with(" ok       gpu=true,region=eu"), "{text}");
        assert!(lines[2].ends_with(" draining -"), "{text}");
        assert_eq!(render(&json!({"workers": []}), 0), "no live worker\n");
    }
}
