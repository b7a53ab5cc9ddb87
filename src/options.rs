//! Where the coordinator is (`--server`) and the queueing flags of `submit` and `batch` (priority, dedup, delay, start time, dedup key),
//! validated locally with errors that name the flag, and turned into the fields of a run item
//! of `POST /api/v1/runs` and `POST /api/v1/runs/batch`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use dagrid_shared::dag::{DedupPolicy, Priority};
use serde_json::{json, Map, Value};

/// Where the coordinator's API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the coordinator's API.
    #[arg(long, env = "DAGRID_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(crate) server: String,
}

/// Flags that apply to every run of a `submit` or a `batch`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct QueueingArgs {
    /// Priority: high (8), normal (5), low (2) or a number from 0 to 9; higher runs first.
    /// Default: the DAG's `priority:`, else normal.
    #[arg(long, value_name = "high|normal|low|0-9", value_parser = parse_priority)]
    pub(crate) priority: Option<Priority>,
    /// What counts as the same run: `active` (while a run of this DAG with the same params is
    /// queued or running, that run is returned instead of a new one), `window:DURATION` (also
    /// when such a run succeeded within DURATION, e.g. window:24h) or `none`. Default: the
    /// DAG's `dedup:`, else active.
    #[arg(long, value_name = "active|none|window:DURATION", value_parser = parse_dedup)]
    pub(crate) dedup: Option<String>,
}

/// Flags of `submit` only.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TimingArgs {
    /// Start the run no sooner than this long from now, e.g. 30s, 10m, 1h 30m.
    #[arg(long, value_name = "DURATION", value_parser = parse_delay, conflicts_with = "at")]
    pub(crate) delay: Option<String>,
    /// Start the run no sooner than this time, RFC 3339: 2026-11-21T10:00:00Z or
    /// 2026-11-21T11:00:00+01:00.
    #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
    pub(crate) at: Option<DateTime<Utc>>,
    /// Dedup on this key instead of on the DAG name and params: a run holding the same key
    /// (under the --dedup policy) is returned instead of a new one.
    #[arg(long, value_name = "KEY", value_parser = parse_dedup_key)]
    pub(crate) dedup_key: Option<String>,
}

/// `--priority`: `high`, `normal`, `low` or `0`-`9` (the coordinator's own parser).
pub(crate) fn parse_priority(s: &str) -> Result<Priority, String> {
    Priority::from_str(s).map_err(|e| e.to_string())
}

/// `--dedup`: `active`, `none` or `window:DURATION`, returned as the API spells it
/// (`window:24h`, also for the accepted `window 24h` and `window=24h`).
pub(crate) fn parse_dedup(s: &str) -> Result<String, String> {
    match DedupPolicy::from_str(s).map_err(|e| e.to_string())? {
        DedupPolicy::Active => Ok("active".into()),
        DedupPolicy::None => Ok("none".into()),
        DedupPolicy::Window(_) => {
            let duration = s
                .trim()
                .trim_start_matches("window")
                .trim_start_matches([':', '=', ' '])
                .trim();
            Ok(format!("window:{duration}"))
        }
    }
}

/// `--delay`: a humantime duration (`30s`, `10m`, `1h 30m`).
pub(crate) fn parse_delay(s: &str) -> Result<String, String> {
    let text = s.trim();
    humantime::parse_duration(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("\"{s}\" is not a duration ({e}); write e.g. 30s, 10m or 1h 30m"))
}

/// `--at`: an RFC 3339 time with a zone (`Z` or an offset).
pub(crate) fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "\"{s}\" is not an RFC 3339 time ({e}); write e.g. 2026-11-21T10:00:00Z or 2026-11-21T11:00:00+01:00"
            )
        })
}

/// `--dedup-key`: any non-blank text.
pub(crate) fn parse_dedup_key(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the dedup key is empty; give a non-blank key or leave the flag out".into());
    }
    Ok(s.to_string())
}

/// One run item as the API takes it: `{"dag", "params", "priority"?, "dedup"?, "delay"?,
/// "at"?, "dedup_key"?}`; a flag left out is left out of the item, so the DAG's own setting
/// applies. The priority goes as its number, `at` in UTC (`…Z`).
pub(crate) fn run_item(
    dag: &str,
    params: &BTreeMap<String, String>,
    queueing: &QueueingArgs,
    timing: Option<&TimingArgs>,
) -> Value {
    let mut item = Map::new();
    item.insert("dag".into(), json!(dag));
    item.insert("params".into(), json!(params));
    if let Some(p) = queueing.priority {
        item.insert("priority".into(), json!(p.get()));
    }
    if let Some(d) = &queueing.dedup {
        item.insert("dedup".into(), json!(d));
    }
    if let Some(t) = timing {
        if let Some(d) = &t.delay {
            item.insert("delay".into(), json!(d));
        }
        if let Some(at) = &t.at {
            item.insert(
                "at".into(),
                json!(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            );
        }
        if let Some(k) = &t.dedup_key {
            item.insert("dedup_key".into(), json!(k));
        }
    }
    Value::Object(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_names_or_levels() {
        assert_eq!(parse_priority("high").unwrap().get(), 8);
        assert_eq!(parse_priority("Normal").unwrap().get(), 5);
        assert_eq!(parse_priority("low").unwrap().get(), 2);
        assert_eq!(parse_priority("0").unwrap().get(), 0);
        assert_eq!(parse_priority("9").unwrap().get(), 9);
        let e = parse_priority("10").unwrap_err();
        assert!(e.contains("high, normal, low"), "{e}");
        assert!(parse_priority("urgent").is_err());
    }

    #[test]
    fn dedup_policies_are_spelled_as_the_api_spells_them() {
        assert_eq!(parse_dedup("active").unwrap(), "active");
        assert_eq!(parse_dedup("none").unwrap(), "none");
        assert_eq!(parse_dedup("window:24h").unwrap(), "window:24h");
        assert_eq!(parse_dedup("window 90s").unwrap(), "window:90s");
        assert_eq!(parse_dedup("window=1h 30m").unwrap(), "window:1h 30m");
        for bad in ["window", "window:", "window:0s", "window:soon", "always"] {
            let e = parse_dedup(bad).unwrap_err();
            assert!(e.contains("window:<duration>"), "{bad}: {e}");
        }
    }

    #[test]
    fn delays_are_humantime() {
        assert_eq!(parse_delay(" 30s ").unwrap(), "30s");
        assert_eq!(parse_delay("1h 30m").unwrap(), "1h 30m");
        let e = parse_delay("soon").unwrap_err();
        assert!(e.contains("e.g. 30s"), "{e}");
    }

    #[test]
    fn start_times_are_rfc3339_with_a_zone() {
        let t = parse_at("2026-11-21T11:00:00+01:00").unwrap();
        assert_eq!(t.timestamp(), 1_795_255_200);
        assert_eq!(parse_at("2026-11-21T10:00:00Z").unwrap(), t);
        let e = parse_at("2026-11-21 10:00").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_at("2026-11-21T10:00:00").is_err(), "no zone");
    }

    #[test]
    fn blank_dedup_keys_are_refused() {
        assert!(parse_dedup_key(" ").is_err());
        assert_eq!(
            parse_dedup_key("nightly-2026-11-21").unwrap(),
            "nightly-2026-11-21"
        );
    }

    #[test]
    fn a_run_item_carries_only_the_flags_given() {
        let params = BTreeMap::from([("FILE".to_string(), "/a b".to_string())]);
        let plain = run_item("d", &params, &QueueingArgs::default(), None);
        assert_eq!(plain, json!({"dag": "d", "params": {"FILE": "/a b"}}));

        let queueing = QueueingArgs {
            priority: Some(parse_priority("high").unwrap()),
            dedup: Some(parse_dedup("window 24h").unwrap()),
        };
        let timing = TimingArgs {
            delay: None,
            at: Some(parse_at("2026-11-21T11:00:00+01:00").unwrap()),
            dedup_key: Some("k".into()),
        };
        let full = run_item("d", &params, &queueing, Some(&timing));
        assert_eq!(
            full,
            json!({
                "dag": "d",
                "params": {"FILE": "/a b"},
                "priority": 8,
                "dedup": "window:24h",
                "at": "2026-11-21T10:00:00Z",
                "dedup_key": "k",
            })
        );
        let delayed = TimingArgs {
            delay: Some("30s".into()),
            ..TimingArgs::default()
        };
        assert_eq!(
            run_item("d", &params, &QueueingArgs::default(), Some(&delayed))["delay"],
            "30s"
        );
    }
}
