//! The client verbs: HTTP calls to the coordinator's API and their terminal output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use dagrid_shared::dag::Dag;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::format;
use crate::options::{run_item, QueueingArgs, TimingArgs};

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `--wait` and `batch` ask for run statuses when the event stream is not available.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Attempts of a submit ([`Api::post_idempotent`]) whose connection dropped or that met a
/// passing failure (5xx, 408, 429), all under one `Idempotency-Key`.
const SUBMIT_ATTEMPTS: u32 = 6;
/// The wait before a submit's second attempt; it doubles after each (0.25 s … 4 s, 7.75 s in
/// all).
const SUBMIT_BACKOFF: Duration = Duration::from_millis(250);
/// How long one event-stream request may stay open (it is opened again after).
const EVENTS_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A 4xx or 5xx answer of the coordinator, with the message of its `{"error": {…}}` body.
/// Callers that retry (`batch --watch`) tell a permanent refusal from a passing failure by
/// [`HttpError::is_permanent`].
#[derive(Debug)]
pub(crate) struct HttpError {
    /// The HTTP status.
    pub(crate) status: reqwest::StatusCode,
    /// `error.message` of the body, or `no details`.
    pub(crate) message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the coordinator answered {}: {}",
            self.status, self.message
        )
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// True when sending the same request again cannot succeed: a 4xx other than 408 (timeout)
    /// and 429 (too many requests).
    pub(crate) fn is_permanent(&self) -> bool {
        self.status.is_client_error() && !matches!(self.status.as_u16(), 408 | 429)
    }
}

/// The API token of `--token` / `DAGRID_TOKEN`, set once by `main` before any request.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the token every [`Api`] sends as `Authorization: Bearer <token>` (an empty one is
/// none); call once, before building an [`Api`].
pub(crate) fn set_token(token: Option<String>) {
    let _ = TOKEN.set(
        token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    );
}

/// The token of [`set_token`], if any.
fn token() -> Option<&'static str> {
    TOKEN.get().and_then(|t| t.as_deref())
}

/// Adds to a 401 or 403 message what to pass: a token (`--token`, `DAGRID_TOKEN`), another
/// one, or one with role admin.
fn access_hint(status: reqwest::StatusCode, message: String) -> String {
    match status.as_u16() {
        401 if token().is_none() => {
            format!("{message} (no token was sent: pass --token <TOKEN> or set DAGRID_TOKEN)")
        }
        401 => {
            format!("{message} (the token of --token / DAGRID_TOKEN was refused: check its value)")
        }
        403 => format!("{message} (pass an admin token with --token or DAGRID_TOKEN)"),
        _ => message,
    }
}

/// A client of one coordinator's API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {server:?} is not an http:// or https:// URL; e.g. --server http://127.0.0.1:8080");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token() {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow!("--token (DAGRID_TOKEN) holds characters a header cannot carry; pass the token as the coordinator has it")
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the coordinator at {}; start one with `dagrid start-all` or pass --server (DAGRID_SERVER)",
                    self.base
                )
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no details")
            .to_string();
        let message = access_hint(status, message);
        Err(HttpError { status, message }.into())
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json().await.context("unexpected response body")
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        resp.json().await.context("unexpected response body")
    }

    /// POSTs a submit (`/api/v1/runs`, `/api/v1/runs/batch`) under a new `Idempotency-Key` (a
    /// UUID), and sends it again with the same key when the connection dropped or the
    /// coordinator had a passing failure (5xx, 408, 429), at most [`SUBMIT_ATTEMPTS`] times
    /// with a doubling backoff: the coordinator then returns the runs the cut request created
    /// and creates only the missing ones, so a retry never duplicates a run.
    ///
    /// # Errors
    /// A refusal ([`HttpError`] with a 4xx), or the last failure once the attempts are used.
    pub(crate) async fn post_idempotent<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut backoff = SUBMIT_BACKOFF;
        let mut attempt = 1;
        loop {
            let req = self
                .http
                .post(self.url(path))
                .header("Idempotency-Key", &key)
                .json(body);
            let answer = match self.send(req).await {
                // The answer's body may be cut too: reading it is part of the attempt.
                Ok(resp) => resp.json::<T>().await.context("unexpected response body"),
                Err(e) => Err(e),
            };
            let e = match answer {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let permanent = e
                .downcast_ref::<HttpError>()
                .is_some_and(HttpError::is_permanent);
            if permanent || attempt >= SUBMIT_ATTEMPTS {
                return Err(e);
            }
            eprintln!(
                "{e:#}; sending the submit again in {} (attempt {} of {SUBMIT_ATTEMPTS}, same \
                 Idempotency-Key, so no run is created twice)",
                humantime::format_duration(backoff),
                attempt + 1
            );
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// `GET /api/v1/runs/{run}/steps/{step}/log?offset=N[&attempt=A]`: the step's log (of attempt `attempt` when given, else the current one) from byte `offset`
    /// with what its headers say ([`LogChunk`]). Errors: the API's message (unknown run or
    /// step, no log yet) as an [`HttpError`].
    pub(crate) async fn log_of_attempt(
        &self,
        run: &str,
        step: &str,
        offset: u64,
        attempt: Option<u32>,
    ) -> anyhow::Result<LogChunk> {
        let mut url = reqwest::Url::parse(&self.url("/api/v1/runs"))
            .with_context(|| format!("--server {:?} is not a valid URL", self.base))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("--server {:?} cannot have a path appended", self.base))?
            .extend([run, "steps", step, "log"]);
        url.query_pairs_mut()
            .append_pair("offset", &offset.to_string());
        if let Some(a) = attempt {
            url.query_pairs_mut().append_pair("attempt", &a.to_string());
        }
        let resp = self.send(self.http.get(url)).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
        let source = header("x-dagrid-log-source").unwrap_or_default();
        let status = header("x-dagrid-step-status").unwrap_or_default();
        let attempt = number("x-dagrid-log-attempt").and_then(|a| u32::try_from(a).ok());
        let start = number("x-dagrid-log-offset").unwrap_or(offset);
        let size = number("x-dagrid-log-size");
        let body = resp.bytes().await?.to_vec();
        Ok(LogChunk {
            size: size.unwrap_or(start + body.len() as u64),
            source,
            status,
            attempt,
            start,
            body,
        })
    }

    async fn post_yaml(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/yaml")
            .body(body);
        Ok(self.send(req).await?.json().await?)
    }

    /// Opens the event stream (`GET /api/v1/events` with `query`, server-sent events),
    /// resuming after event `last_id` when given; see [`crate::events`]. The request may stay
    /// open for [`EVENTS_TIMEOUT`].
    pub(crate) async fn events(
        &self,
        query: &[(String, String)],
        last_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .get(self.url("/api/v1/events"))
            .query(query)
            .header("accept", "text/event-stream")
            .timeout(EVENTS_TIMEOUT);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        self.send(req).await
    }

    /// The status of each run id (`POST /api/v1/runs/lookup`, chunked).
    pub(crate) async fn statuses(&self, ids: &[String]) -> anyhow::Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(dagrid_coordinator::MAX_BATCH) {
            let v: Value = self
                .post("/api/v1/runs/lookup", &json!({ "ids": chunk }))
                .await?;
            let runs = v["runs"].as_array().cloned().unwrap_or_default();
            out.extend(
                runs.iter()
                    .map(|r| r["status"].as_str().map(str::to_string)),
            );
        }
        Ok(out)
    }
}

/// Parses repeated `NAME=value` arguments.
pub(crate) fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?} has no `=`; write it as NAME=value (or 1=value for a positional param)");
        };
        if k.is_empty() {
            bail!("--param {p:?} has an empty name; write it as NAME=value");
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--param {k} is given twice; give each param once");
        }
    }
    Ok(out)
}

/// One answer of the step log endpoint ([`Api::log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogChunk {
    /// `file` (the worker's full log file) or `tail` (the last 16 KiB kept in Redis).
    pub(crate) source: String,
    /// The step's status when the log was read; once final, `body` reaches the log's end.
    pub(crate) status: String,
    /// The attempt the log belongs to, when the coordinator says.
    pub(crate) attempt: Option<u32>,
    /// Where `body` starts in the log (bytes); above the requested offset when the bytes in
    /// between are no longer available.
    pub(crate) start: u64,
    /// Bytes of the log written so far: the offset to ask for next.
    pub(crate) size: u64,
    /// The log's bytes from `start`.
    pub(crate) body: Vec<u8>,
}

/// True for the statuses a run does not leave.
pub(crate) fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "aborted")
}

/// The answer to `POST /api/v1/runs`: 201 with a new run, or 200 with the existing run that
/// holds the same dedup key (`deduplicated: true`). Fields a coordinator may leave out default
/// to empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Submitted {
    /// The run id (the existing run's when deduplicated).
    pub(crate) id: String,
    /// Its status now (`queued` for a new run).
    #[serde(default)]
    pub(crate) status: String,
    /// True when no run was created and `id` is a run that already held the dedup key.
    #[serde(default)]
    pub(crate) deduplicated: bool,
    /// Why a new run waits (delayed, queue paused, queue full), if it does.
    #[serde(default)]
    pub(crate) reason: Option<String>,
    /// When a delayed run is due (ms since the epoch).
    #[serde(default)]
    pub(crate) due_ms: Option<u64>,
}

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
        true => crate::events::Feed::open(&api, &[("dag", dag)]).await,
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
/// (priority, queue, trigger, and for a queued run why it waits and when it is due, when the
/// coordinator gives them), then a table of its steps.
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
            .unwrap_or_default();
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
            detail.lines().next().unwrap_or_default(),
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

/// `dagrid runs`.
pub(crate) async fn runs(
    server: &str,
    dag: Option<String>,
    status: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let mut query = vec![format!("limit={limit}")];
    if let Some(d) = dag {
        query.push(format!("dag={d}"));
    }
    if let Some(s) = status {
        query.push(format!("status={s}"));
    }
    let v: Value = api
        .get(&format!("/api/v1/runs?{}", query.join("&")))
        .await?;
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
        "{:<36}  {:<20} {:<10} {:<24} {:>9}  ERROR",
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
            "{:<36}  {:<20} {:<10} {:<24} {:>9}  {error}",
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

    /// 2026-11-21T10:00:00Z.
    const NOW: u64 = 1_795_255_200_000;

    /// Reads one HTTP request (headers and a `Content-Length` body) from `sock`; its text.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    return text;
                }
            }
            if n == 0 {
                return text;
            }
        }
    }

    /// The `Idempotency-Key` header of a request's text.
    fn key_of(request: &str) -> Option<String> {
        request.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("idempotency-key")
                .then(|| value.trim().to_string())
        })
    }

    #[test]
    fn times_past_year_9999_do_not_panic() {
        assert_eq!(fmt_ms(Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            fmt_ms(Some(u64::MAX)),
            format!("{} ms since the epoch", u64::MAX)
        );
    }

    #[tokio::test]
    async fn a_dropped_submit_is_sent_again_with_the_same_idempotency_key() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut keys = Vec::new();
            // The first connection is dropped after the request arrives (the coordinator
            // killed mid-request); the second is answered.
            let (mut first, _) = listener.accept().await.expect("accept");
            keys.push(key_of(&read_request(&mut first).await));
            drop(first);
            let (mut second, _) = listener.accept().await.expect("accept");
            keys.push(key_of(&read_request(&mut second).await));
            let body = r#"{"id":"r1","dag":"d","status":"queued","deduplicated":false}"#;
            let answer = format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            second.write_all(answer.as_bytes()).await.expect("write");
            keys
        });
        let api = Api::new(&format!("http://{addr}")).expect("api");
        let got: Value = api
            .post_idempotent("/api/v1/runs", &json!({"dag": "d"}))
            .await
            .expect("the second attempt is answered");
        assert_eq!(got["id"], "r1");
        let keys = server.await.expect("server");
        let first = keys[0].clone().expect("the first attempt sends a key");
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        assert_eq!(keys[1].as_deref(), Some(first.as_str()));
    }

    #[tokio::test]
    async fn a_refused_submit_is_not_sent_again() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            read_request(&mut sock).await;
            let body = r#"{"error":{"code":"unknown_dag","message":"no DAG named d"}}"#;
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(answer.as_bytes()).await.expect("write");
            // A second attempt would wait here and time the test out.
            tokio::time::timeout(std::time::Duration::from_millis(500), listener.accept())
                .await
                .is_err()
        });
        let api = Api::new(&format!("http://{addr}")).expect("api");
        let err = api
            .post_idempotent::<Value>("/api/v1/runs", &json!({"dag": "d"}))
            .await
            .expect_err("a 404 is final");
        assert!(err.to_string().contains("no DAG named d"), "{err}");
        assert!(server.await.expect("server"), "the refusal was sent again");
    }

    #[test]
    fn params_are_name_equals_value_once_each() {
        let p = parse_params(&["A=1".into(), "1=pos".into(), "B=x=y".into()]).unwrap();
        assert_eq!(p["A"], "1");
        assert_eq!(p["1"], "pos");
        assert_eq!(p["B"], "x=y");
        assert!(parse_params(&["A".into()]).is_err());
        assert!(parse_params(&["=1".into()]).is_err());
        assert!(parse_params(&["A=1".into(), "A=2".into()]).is_err());
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

    #[test]
    fn refusals_are_permanent_and_overload_is_not() {
        let e = |code: u16, message: &str| HttpError {
            status: reqwest::StatusCode::from_u16(code).unwrap(),
            message: message.into(),
        };
        assert!(e(404, "x").is_permanent());
        assert!(e(422, "x").is_permanent());
        assert!(!e(408, "x").is_permanent());
        assert!(!e(429, "x").is_permanent());
        assert!(!e(503, "x").is_permanent());
        assert_eq!(
            e(404, "DAG nope is not registered").to_string(),
            "the coordinator answered 404 Not Found: DAG nope is not registered"
        );
    }
}
