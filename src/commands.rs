//! The client verbs `submit`, `status`, `runs`, `stop`, `dags`, `register` and `validate`:
//! calls of the [`Api`] and their terminal output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use dagrid_shared::dag::Dag;
use serde_json::Value;

use crate::client::{is_final, parse_params, Api, Submitted};
use crate::format;
use crate::options::{run_item, QueueingArgs, TimingArgs};

/// What `submit` tells people on stderr about a submitted run: that it was deduplicated, or
/// why it waits and when it is due. `by_key` says whether a `--dedup-key` was given.
pub(crate) fn submit_notes<Tz>(s: &Submitted, by_key: bool, now_ms: u64, tz: &Tz) -> Vec<String>
where
    Tz: chrono::TimeZone,
    Tz::Offset: std::fmt::Display,
{
    let mut notes = Vec::new();
    if s.deduplicated {
        let what = if by_key {
            "this dedup key"
        } else {
            "these params"
        };
        notes.push(format!(
            "deduplicated: run {} ({}) already has {what}; no new run",
            s.id,
            if s.status.is_empty() {
                "status unknown"
            } else {
                &s.status
            }
        ));
    }
    let due = s
        .due_ms
        .map(|ms| format!("due {}", format::when(ms, now_ms, tz, true)));
    match (&s.reason, due) {
        (Some(r), Some(d)) => notes.push(format!("waiting: {r}; {d}")),
        (Some(r), None) => notes.push(format!("waiting: {r}")),
        (None, Some(d)) => notes.push(format!("waiting: {d}")),
        (None, None) => {}
    }
    notes
}

/// `dagrid submit`: prints the run id on stdout (the existing run's when deduplicated) and
/// notes on stderr; with `wait`, follows that run and exits with its outcome.
pub(crate) async fn submit(
    server: &str,
    dag: &str,
    params: &[String],
    queueing: &QueueingArgs,
    timing: &TimingArgs,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let params = parse_params(params)?;
    let item = run_item(dag, &params, queueing, Some(timing));
    // Opened before the submit, so that no change of the run is missed.
    let feed = match wait {
        true => crate::events::Feed::open(&api, &[("dag", dag), ("kind", "run")]).await,
        false => None,
    };
    let submitted: Submitted = api.post_idempotent("/api/v1/runs", &item).await?;
    let id = submitted.id.clone();
    println!("{id}");
    for note in submit_notes(
        &submitted,
        timing.dedup_key.is_some(),
        format::now_ms(),
        &chrono::Local,
    ) {
        eprintln!("{note}");
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut run = OneRun { id, status: None };
    crate::events::follow(&api, feed, &mut run).await?;
    let s = run.status.unwrap_or_default();
    eprintln!("run {} {s}", run.id);
    Ok(if s == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The run `submit --wait` follows, and its final status once known.
struct OneRun {
    id: String,
    status: Option<String>,
}

impl crate::events::Follow for OneRun {
    fn is_open(&self, id: &str) -> bool {
        id == self.id && self.status.is_none()
    }

    fn open_ids(&self) -> Vec<String> {
        match self.status {
            None => vec![self.id.clone()],
            Some(_) => Vec::new(),
        }
    }

    fn update(&mut self, ids: &[String], statuses: Vec<Option<String>>) -> anyhow::Result<()> {
        for (id, st) in ids.iter().zip(statuses) {
            match st {
                Some(s) if id == &self.id && is_final(&s) => self.status = Some(s),
                Some(_) => {}
                None => bail!("run {id} disappeared"),
            }
        }
        Ok(())
    }
}

/// A time in ms as RFC 3339 (UTC); a time past year 9999, which RFC 3339 cannot write (and
/// humantime panics on), as its ms.
fn fmt_ms(ms: Option<u64>) -> String {
    /// 9999-12-31T23:59:59.999Z.
    const LAST_MS: u64 = 253_402_300_799_999;
    match ms {
        Some(ms) if ms <= LAST_MS => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        Some(ms) => format!("{ms} ms since the epoch"),
        None => "-".into(),
    }
}

fn fmt_duration(start: Option<u64>, end: Option<u64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => format!("{:.3}s", (e - s) as f64 / 1000.0),
        _ => "-".into(),
    }
}

/// `dagrid status`.
pub(crate) async fn status(server: &str, run_id: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let run: Value = api.get(&format!("/api/v1/runs/{run_id}")).await?;
    print!("{}", render_run(&run, format::now_ms(), &chrono::Local));
    Ok(ExitCode::SUCCESS)
}

/// A run of `GET /api/v1/runs/{id}` as `dagrid status` prints it: its fields, one per line
/// (priority, queue, trigger, the parent of a child run and the number of child runs, and
/// for a queued run why it waits and when it is due, when the coordinator gives them), then a
/// table of its steps (a call step's DETAIL starting with its number of child runs).
fn render_run<Tz>(run: &Value, now_ms: u64, tz: &Tz) -> String
where
    Tz: chrono::TimeZone,
    Tz::Offset: std::fmt::Display,
{
    use std::fmt::Write;
    let mut out = String::new();
    let text = |key: &str| run[key].as_str().unwrap_or_default().to_string();
    let _ = writeln!(out, "run      {}", text("id"));
    let _ = writeln!(out, "dag      {}", text("dag"));
    let status = text("status");
    let _ = writeln!(out, "status   {status}");
    let params: Vec<String> = run["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["name"].as_str() {
            Some(n) => format!("{n}={}", p["value"].as_str().unwrap_or_default()),
            None => p["value"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let _ = writeln!(out, "params   {}", params.join(" "));
    if let Some(p) = run["priority"].as_u64() {
        let _ = writeln!(out, "priority {}", format::priority_label(p));
    }
    if let Some(q) = run["queue"].as_str() {
        let _ = writeln!(out, "queue    {q}");
    }
    if let Some(t) = run["trigger"].as_str() {
        let _ = writeln!(out, "trigger  {t}");
    }
    if let Some(p) = run["parent"].as_object() {
        let _ = writeln!(
            out,
            "parent   {} (step {})",
            p.get("run").and_then(Value::as_str).unwrap_or_default(),
            p.get("step").and_then(Value::as_str).unwrap_or_default()
        );
    }
    if let Some(n) = run["children"]["total"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "children {n} (list them with: dagrid runs --parent {})",
            text("id")
        );
    }
    if let Some(s) = run["worker_selector"].as_str() {
        let _ = writeln!(out, "workers  with {s}");
    }
    if let Some(w) = run["waiting_for"].as_str() {
        let _ = writeln!(out, "waiting  {w}");
    }
    if status == "queued" {
        if let Some(r) = run["reason"].as_str() {
            let _ = writeln!(out, "waiting  {r}");
        }
        if let Some(due) = run["due_ms"].as_u64() {
            let _ = writeln!(out, "due      {}", format::when(due, now_ms, tz, true));
        }
    }
    let _ = writeln!(out, "created  {}", fmt_ms(run["created_ms"].as_u64()));
    let _ = writeln!(
        out,
        "duration {}",
        fmt_duration(run["started_ms"].as_u64(), run["finished_ms"].as_u64())
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>7} {:>5} {:>9}  DETAIL",
        "STEP", "STATUS", "ATTEMPT", "EXIT", "DURATION"
    );
    for s in run["steps"].as_array().into_iter().flatten() {
        let detail = s["error"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                s["output"].as_array().map(|o| {
                    format!(
                        "{}={}",
                        o[0].as_str().unwrap_or(""),
                        o[1].as_str().unwrap_or("")
                    )
                })
            })
            // A step's own workerSelector (the API gives "" for `{}`: any worker).
            .or_else(|| {
                s["worker_selector"].as_str().map(|w| match w {
                    "" => "any worker".to_string(),
                    w => format!("workers with {w}"),
                })
            })
            .unwrap_or_default();
        let first = detail.lines().next().unwrap_or_default();
        // A call step: how many child runs its current attempt waits for, first.
        let detail = match s["children"].as_u64().filter(|n| *n > 0) {
            Some(n) => {
                let runs = if n == 1 { "child run" } else { "child runs" };
                match first {
                    "" => format!("{n} {runs}"),
                    d => format!("{n} {runs}; {d}"),
                }
            }
            None => first.to_string(),
        };
        // One line per step: a long value (a call step's JSON, say) is cut, `dagrid logs`
        // and the API have it whole.
        let detail = match detail.char_indices().nth(DETAIL_CHARS) {
            Some((at, _)) => format!("{}…", &detail[..at]),
            None => detail,
        };
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>7} {:>5} {:>9}  {}",
            s["name"].as_str().unwrap_or_default(),
            s["status"].as_str().unwrap_or_default(),
            s["attempt"].as_u64().unwrap_or(0),
            s["exit_code"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            fmt_duration(s["started_ms"].as_u64(), s["finished_ms"].as_u64()),
            detail,
        );
    }
    render_attempts(&mut out, run);
    out
}

/// The earlier attempts of the steps that have some (a step's `history`), oldest first, under
/// an `ATTEMPTS` heading; nothing when no step ran more than once.
fn render_attempts(out: &mut String, run: &Value) {
    use std::fmt::Write;
    let steps: Vec<&Value> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["history"].as_array().is_some_and(|h| !h.is_empty()))
        .collect();
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:>7} {:<10} {:>5} {:>9}  {:<16} DETAIL",
        "EARLIER ATTEMPTS", "ATTEMPT", "STATUS", "EXIT", "DURATION", "WORKER"
    );
    for s in steps {
        for h in s["history"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:<24} {:>7} {:<10} {:>5} {:>9}  {:<16} {}",
                s["name"].as_str().unwrap_or_default(),
                h["attempt"].as_u64().unwrap_or(0),
                h["status"].as_str().unwrap_or_default(),
                h["exit_code"]
                    .as_i64()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                fmt_duration(h["started_ms"].as_u64(), h["finished_ms"].as_u64()),
                h["worker"].as_str().unwrap_or("-"),
                attempt_detail(h),
            );
        }
    }
    let _ = writeln!(
        out,
        "(read an earlier attempt's log with: dagrid logs {} <step> --attempt N)",
        run["id"].as_str().unwrap_or_default()
    );
}

/// The DETAIL of an earlier attempt: its error's first line, after `taken back at <time>` for
/// a `lost` attempt (its `finished_ms` is when a coordinator took it back from its worker).
fn attempt_detail(h: &Value) -> String {
    let error = h["error"]
        .as_str()
        .and_then(|e| e.lines().next())
        .unwrap_or_default();
    if h["status"] != "lost" {
        return error.to_string();
    }
    let at = format!("taken back at {}", fmt_ms(h["finished_ms"].as_u64()));
    if error.is_empty() {
        at
    } else {
        format!("{at}: {error}")
    }
}

/// The most characters of a step's DETAIL that `dagrid status` prints.
const DETAIL_CHARS: usize = 160;

/// `dagrid runs`: newest first; with `parent`, that run's child runs in creation order.
pub(crate) async fn runs(
    server: &str,
    dag: Option<String>,
    status: Option<String>,
    parent: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string());
    for (name, value) in [("parent", parent), ("dag", dag), ("status", status)] {
        if let Some(v) = value {
            query.append_pair(name, &v);
        }
    }
    let v: Value = api.get(&format!("/api/v1/runs?{}", query.finish())).await?;
    print!("{}", render_runs(&v));
    Ok(ExitCode::SUCCESS)
}

/// The table of `dagrid runs`: one line per run; failed and aborted runs end with the step
/// that failed and its error (the dead-letter view of `dagrid runs --status failed`).
fn render_runs(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}  {:<20} {:<10} {:<24} {:>9}  ERROR",
        "RUN", "DAG", "STATUS", "CREATED", "DURATION"
    );
    for r in v["runs"].as_array().into_iter().flatten() {
        let error = match (r["failed_step"].as_str(), r["error"].as_str()) {
            (Some(step), Some(e)) => format!("{step}: {}", e.lines().next().unwrap_or_default()),
            (None, Some(e)) => e.lines().next().unwrap_or_default().to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<26}  {:<20} {:<10} {:<24} {:>9}  {error}",
            r["id"].as_str().unwrap_or_default(),
            r["dag"].as_str().unwrap_or_default(),
            r["status"].as_str().unwrap_or_default(),
            fmt_ms(r["created_ms"].as_u64()),
            fmt_duration(r["started_ms"].as_u64(), r["finished_ms"].as_u64()),
        );
    }
    out
}

/// `dagrid stop`: stops a queued or running run (`POST /api/v1/runs/{id}/stop`). Exit 0 once
/// it is aborted, or still `running` while its `handlerOn` cancel and exit handlers run; a run
/// that already finished is an error (the API's 409) naming its status.
pub(crate) async fn stop(server: &str, run_id: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let run: Value = api
        .post(
            &format!("/api/v1/runs/{run_id}/stop"),
            &serde_json::json!({}),
        )
        .await?;
    let status = run["status"].as_str().unwrap_or("aborted");
    println!("{} {status}", run["id"].as_str().unwrap_or(run_id));
    eprintln!("queued steps removed; running steps get their stop signal within a worker heartbeat, SIGKILL after the DAG's maxCleanUpTimeSec");
    if status == "running" {
        eprintln!("the DAG's cancel and exit handlers (handlerOn) run before the run ends aborted; stop it again to end the exit handler at once");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dagrid dags`.
pub(crate) async fn dags(server: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let v: Value = api.get("/api/v1/dags").await?;
    print!("{}", render_dags(&v, format::now_ms(), &chrono::Local));
    Ok(ExitCode::SUCCESS)
}

/// The answer of `GET /api/v1/dags` as `dagrid dags` prints it: one line per DAG, with the
/// next fire time of a scheduled DAG (`next_fire_ms[0]`) in `tz` and as a countdown.
fn render_dags<Tz>(v: &Value, now_ms: u64, tz: &Tz) -> String
where
    Tz: chrono::TimeZone,
    Tz::Offset: std::fmt::Display,
{
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>5}  {:<30} {:<30} DESCRIPTION",
        "DAG", "STEPS", "PARAMS", "NEXT FIRE"
    );
    for d in v["dags"].as_array().into_iter().flatten() {
        let params: Vec<String> = d["params"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["name"].as_str().unwrap_or("(positional)").to_string())
            .collect();
        let next = d["next_fire_ms"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_u64)
            .map(|ms| format::when(ms, now_ms, tz, false))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<24} {:>5}  {:<30} {:<30} {}",
            d["name"].as_str().unwrap_or_default(),
            d["steps"].as_array().map(Vec::len).unwrap_or(0),
            params.join(","),
            next,
            d["description"].as_str().unwrap_or_default()
        );
    }
    out
}

/// `dagrid register`.
pub(crate) async fn register(server: &str, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    for f in files {
        let source =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let v = api
            .post_yaml(&format!("/api/v1/dags?name={stem}"), source)
            .await
            .with_context(|| format!("{}", f.display()))?;
        println!(
            "registered {} ({})",
            v["name"].as_str().unwrap_or_default(),
            v["digest"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dagrid validate`: exit 0 when every file is valid.
pub(crate) fn validate(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        match Dag::from_file(Path::new(f)) {
            Ok(dag) => {
                println!(
                    "{}: ok (DAG \"{}\", {} steps)",
                    f.display(),
                    dag.name,
                    dag.steps.len()
                );
                for w in &dag.warnings {
                    println!("{}: warning: {w}", f.display());
                }
                for local in &dag.locals {
                    println!(
                        "{}: ok (local DAG \"{}\", {} steps)",
                        f.display(),
                        local.name,
                        local.steps.len()
                    );
                    for w in &local.warnings {
                        println!("{}: warning: {w}", f.display());
                    }
                }
            }
            Err(errors) => {
                ok = false;
                for e in errors.0 {
                    if e.field.is_empty() {
                        eprintln!("{}: {}", f.display(), e.message);
                    } else {
                        eprintln!("{}: {}: {}", f.display(), e.field, e.message);
                    }
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use serde_json::json;

    /// 2026-11-21T10:00:00Z.
    const NOW: u64 = 1_795_255_200_000;

    #[test]
    fn times_past_year_9999_do_not_panic() {
        assert_eq!(fmt_ms(Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            fmt_ms(Some(u64::MAX)),
            format!("{} ms since the epoch", u64::MAX)
        );
    }

    #[test]
    fn created_and_deduplicated_answers_parse() {
        let created: Submitted = serde_json::from_value(json!({
            "id": "r1", "dag": "d", "status": "queued", "deduplicated": false,
            "priority": 5, "reason": null, "due_ms": null
        }))
        .unwrap();
        assert!(!created.deduplicated);
        assert!(submit_notes(&created, false, NOW, &Utc).is_empty());

        let existing: Submitted = serde_json::from_value(json!({
            "id": "r0", "dag": "d", "status": "running", "deduplicated": true
        }))
        .unwrap();
        assert_eq!(
            submit_notes(&existing, false, NOW, &Utc),
            ["deduplicated: run r0 (running) already has these params; no new run"]
        );
        assert_eq!(
            submit_notes(&existing, true, NOW, &Utc),
            ["deduplicated: run r0 (running) already has this dedup key; no new run"]
        );

        // An older coordinator: only the id.
        let old: Submitted = serde_json::from_value(json!({"id": "r2"})).unwrap();
        assert!(submit_notes(&old, false, NOW, &Utc).is_empty());
    }

    #[test]
    fn waiting_runs_say_why_and_when() {
        let paris = FixedOffset::east_opt(3600).unwrap();
        let delayed = Submitted {
            id: "r".into(),
            status: "queued".into(),
            reason: Some("delayed".into()),
            due_ms: Some(NOW + 240_000),
            ..Submitted::default()
        };
        assert_eq!(
            submit_notes(&delayed, false, NOW, &paris),
            ["waiting: delayed; due 2026-11-21 11:04:00 +01:00 (in 4m)"]
        );
        let paused = Submitted {
            reason: Some("queue batch is paused".into()),
            due_ms: None,
            ..delayed.clone()
        };
        assert_eq!(
            submit_notes(&paused, false, NOW, &paris),
            ["waiting: queue batch is paused"]
        );
        let due_only = Submitted {
            reason: None,
            ..delayed
        };
        assert_eq!(
            submit_notes(&due_only, false, NOW, &Utc),
            ["waiting: due 2026-11-21 10:04:00 +00:00 (in 4m)"]
        );
    }

    #[test]
    fn status_shows_a_steps_own_worker_selector() {
        let run = json!({
            "id": "r1", "dag": "d", "status": "running", "params": [], "created_ms": NOW,
            "worker_selector": "gpu=true",
            "waiting_for": "no live worker matches tpu=v5",
            "steps": [
                {"name": "train", "status": "queued", "attempt": 1, "worker_selector": "tpu=v5"},
                {"name": "notify", "status": "pending", "attempt": 0, "worker_selector": ""},
                {"name": "plain", "status": "pending", "attempt": 0}
            ]
        });
        let text = render_run(&run, NOW, &Utc);
        assert!(text.contains("workers  with gpu=true\n"), "{text}");
        assert!(
            text.contains("waiting  no live worker matches tpu=v5\n"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(line("train").ends_with("workers with tpu=v5"), "{text}");
        assert!(line("notify").ends_with("any worker"), "{text}");
        assert!(line("plain").trim_end().ends_with('-'), "{text}");
    }

    #[test]
    fn status_shows_priority_queue_and_why_a_queued_run_waits() {
        let run = json!({
            "id": "r1", "dag": "d", "status": "queued",
            "params": [{"name": "FILE", "value": "/a"}, {"value": "pos"}],
            "created_ms": NOW, "started_ms": null, "finished_ms": null,
            "priority": 8, "queue": "batch", "trigger": "api",
            "reason": "queue batch is full (2/2 active)", "due_ms": NOW + 30_000,
            "steps": [{"name": "s", "status": "pending", "attempt": 0}]
        });
        let text = render_run(&run, NOW, &Utc);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "params   FILE=/a pos");
        assert_eq!(lines[4], "priority 8 (high)");
        assert_eq!(lines[5], "queue    batch");
        assert_eq!(lines[6], "trigger  api");
        assert_eq!(lines[7], "waiting  queue batch is full (2/2 active)");
        assert_eq!(lines[8], "due      2026-11-21 10:00:30 +00:00 (in 30s)");
        assert!(
            lines[9].starts_with("created  2026-11-21T10:00:00"),
            "{text}"
        );
        assert!(
            text.contains("\ns                        pending"),
            "{text}"
        );

        // A running run: no waiting line even if a stale reason came along.
        let mut running = run;
        running["status"] = json!("running");
        let text = render_run(&running, NOW, &Utc);
        assert!(!text.contains("waiting"), "{text}");
        assert!(!text.contains("due "), "{text}");

        // An older coordinator: none of the new lines.
        let old =
            json!({"id": "r", "dag": "d", "status": "queued", "params": [], "created_ms": NOW});
        let text = render_run(&old, NOW, &Utc);
        assert!(
            !text.contains("priority") && !text.contains("queue "),
            "{text}"
        );
    }

    #[test]
    fn status_links_a_child_run_to_its_parent_and_a_parent_to_its_children() {
        let child = json!({
            "id": "c1", "dag": "item", "status": "running", "params": [{"name": "X", "value": "a"}],
            "created_ms": NOW, "trigger": "call",
            "parent": {"run": "p1", "step": "fan", "depth": 1},
            "steps": [{"name": "show", "status": "running", "attempt": 1}]
        });
        let text = render_run(&child, NOW, &Utc);
        assert!(
            text.contains("\ntrigger  call\nparent   p1 (step fan)\n"),
            "{text}"
        );
        assert!(!text.contains("children"), "{text}");

        let parent = json!({
            "id": "p1", "dag": "fanout", "status": "running", "params": [], "created_ms": NOW,
            "trigger": "api", "parent": null,
            "children": {"total": 3, "ids": ["c1", "c2", "c3"]},
            "steps": [
                {"name": "list", "status": "succeeded", "attempt": 1, "exit_code": 0,
                 "output": ["FILES", "a b c"]},
                {"name": "fan", "status": "running", "attempt": 1, "worker": "w1", "children": 3},
                {"name": "one", "status": "succeeded", "attempt": 1, "children": 1,
                 "output": ["OUT", "{\"status\": \"succeeded\"}"]},
                {"name": "sum", "status": "pending", "attempt": 0},
                {"name": "big", "status": "succeeded", "attempt": 1, "children": 500,
                 "output": ["OUT", "x".repeat(5000)]}
            ]
        });
        let text = render_run(&parent, NOW, &Utc);
        assert!(!text.contains("\nparent "), "a top-level run: {text}");
        assert!(
            text.contains("\nchildren 3 (list them with: dagrid runs --parent p1)\n"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no step {name} in {text}"))
                .trim_end()
                .to_string()
        };
        assert!(line("fan").ends_with("  3 child runs"), "{text}");
        assert!(
            line("one").ends_with("  1 child run; OUT={\"status\": \"succeeded\"}"),
            "{text}"
        );
        assert!(line("list").ends_with("  FILES=a b c"), "{text}");
        assert!(line("sum").ends_with('-'), "{text}");
        // A long DETAIL is cut to one short line.
        let big = line("big");
        assert!(big.ends_with('…') && big.chars().count() < 240, "{big}");
    }

    #[test]
    fn status_shows_a_lost_attempt_with_the_time_it_was_taken_back() {
        let run = json!({
            "id": "r1", "dag": "d", "status": "running", "params": [], "created_ms": NOW,
            "steps": [{"name": "s", "status": "running", "attempt": 2, "started_ms": NOW + 3_000,
                "history": [{"attempt": 1, "status": "lost", "worker": "w1",
                    "started_ms": NOW, "finished_ms": NOW + 2_500,
                    "error": "worker w1 stopped sending heartbeats"}]}]
        });
        let text = render_run(&run, NOW + 4_000, &Utc);
        let line = text
            .lines()
            .find(|l| l.contains(" lost "))
            .unwrap_or_else(|| panic!("no lost attempt in {text}"));
        assert!(line.contains("2.500s"), "{line}");
        assert!(
            line.contains("taken back at 2026-11-21T10:00:02.500Z: worker w1 stopped"),
            "{line}"
        );
    }

    #[test]
    fn dags_show_the_next_fire_time_of_scheduled_ones() {
        let v = json!({"dags": [
            {"name": "hourly", "description": "every hour", "params": [], "steps": [{}],
             "schedule": ["0 * * * *"], "next_fire_ms": [NOW + 240_000, NOW + 3_840_000],
             "queue": "hourly", "priority": 5},
            {"name": "hello", "description": null, "params": [{"name": "NAME"}], "steps": [{}, {}],
             "schedule": [], "next_fire_ms": [], "queue": "hello", "priority": 5},
        ]});
        let text = render_dags(&v, NOW, &Utc);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("NEXT FIRE"), "{text}");
        assert_eq!(
            lines[1],
            format!(
                "{:<24} {:>5}  {:<30} {:<30} every hour",
                "hourly", 1, "", "2026-11-21 10:04 (in 4m)"
            )
        );
        assert_eq!(
            lines[2].trim_end(),
            format!("{:<24} {:>5}  {:<30} {:<30}", "hello", 2, "NAME", "-").trim_end()
        );
    }
}
