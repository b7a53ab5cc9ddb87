//! The typed HTTP client of the coordinator's API ([`Api`]): requests with the token of
//! `--token`, errors as [`HttpError`], submits sent again under one `Idempotency-Key`, and the
//! answers the client verbs and the tests read.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// How long one API request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `--wait` and `batch` ask for run statuses when the event stream is not available.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Attempts of a submit ([`Api::post_idempotent`]) whose connection dropped or that met a
/// passing failure (5xx, 408, 429), all under one `Idempotency-Key`.
pub const SUBMIT_ATTEMPTS: u32 = 6;
/// The wait before a submit's second attempt; it doubles after each (0.25 s … 4 s, 7.75 s in
/// all).
pub const SUBMIT_BACKOFF: Duration = Duration::from_millis(250);
/// How long one event-stream request may stay open (it is opened again after).
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A 4xx or 5xx answer of the coordinator, with the message of its `{"error": {…}}` body.
/// Callers that retry (`batch --watch`) tell a permanent refusal from a passing failure by
/// [`HttpError::is_permanent`].
#[derive(Debug)]
pub struct HttpError {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// `error.message` of the body, or `no details`.
    pub message: String,
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
    pub fn is_permanent(&self) -> bool {
        self.status.is_client_error() && !matches!(self.status.as_u16(), 408 | 429)
    }
}

/// The API token of `--token` / `DAGRID_TOKEN`, set once by `main` before any request.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the token every [`Api`] sends as `Authorization: Bearer <token>` (an empty one is
/// none); call once, before building an [`Api`].
pub fn set_token(token: Option<String>) {
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
/// one, or one with role admin. `sent` says whether the request carried a token.
fn access_hint(status: reqwest::StatusCode, message: String, sent: bool) -> String {
    match status.as_u16() {
        401 if !sent => {
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
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// Whether requests carry `Authorization: Bearer …`.
    has_token: bool,
}

impl Api {
    /// A client of the API at `server` (`http://host:port`, a trailing `/` is dropped), sending
    /// the token of [`set_token`] when there is one; each request may take up to 120 s.
    ///
    /// # Errors
    /// `server` is not an http(s) URL, or the token cannot be a header.
    pub fn new(server: &str) -> anyhow::Result<Self> {
        Self::with_token(server, token(), REQUEST_TIMEOUT)
    }

    /// A client of the API at `server` that sends `token` (none: no `Authorization` header)
    /// instead of the one of [`set_token`], each request taking up to `timeout` (the event
    /// stream excepted); the tests build theirs so.
    ///
    /// # Errors
    /// `server` is not an http(s) URL, or the token cannot be a header.
    pub fn with_token(
        server: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {server:?} is not an http:// or https:// URL; e.g. --server http://127.0.0.1:8080");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow!("--token (DAGRID_TOKEN) holds characters a header cannot carry; pass the token as the coordinator has it")
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base,
            http,
            has_token: token.is_some(),
        })
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
        let message = access_hint(status, message, self.has_token);
        Err(HttpError { status, message }.into())
    }

    /// `GET path` (e.g. `/api/v1/runs/{id}`), its JSON answer as `T`.
    ///
    /// # Errors
    /// No connection, an [`HttpError`] (4xx/5xx), or an answer that is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json().await.context("unexpected response body")
    }

    /// `POST path` with the JSON `body`, its JSON answer as `T` (sent once; see
    /// [`Api::post_idempotent`] for submits).
    ///
    /// # Errors
    /// No connection, an [`HttpError`] (4xx/5xx), or an answer that is not a `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
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
    pub async fn post_idempotent<T: DeserializeOwned>(
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
    pub async fn log_of_attempt(
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

    /// POSTs a YAML body (`content-type: application/yaml`, e.g. a DAG file to
    /// `/api/v1/dags?name=…`); the answer's JSON.
    ///
    /// # Errors
    /// No connection, an [`HttpError`], or a body that is not JSON.
    pub async fn post_yaml(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/yaml")
            .body(body);
        Ok(self.send(req).await?.json().await?)
    }

    /// Opens the event stream (`GET /api/v1/events` with `query`, server-sent events),
    /// resuming after event `last_id` when given (see the `events` module). The request may stay
    /// open for [`EVENTS_TIMEOUT`].
    pub async fn events(
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
    pub async fn statuses(&self, ids: &[String]) -> anyhow::Result<Vec<Option<String>>> {
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
pub fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
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

/// One answer of the step log endpoint ([`Api::log_of_attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// `file` (the worker's full log file) or `tail` (the last 16 KiB kept in Redis).
    pub source: String,
    /// The step's status when the log was read; once final, `body` reaches the log's end.
    pub status: String,
    /// The attempt the log belongs to, when the coordinator says.
    pub attempt: Option<u32>,
    /// Where `body` starts in the log (bytes); above the requested offset when the bytes in
    /// between are no longer available.
    pub start: u64,
    /// Bytes of the log written so far: the offset to ask for next.
    pub size: u64,
    /// The log's bytes from `start`.
    pub body: Vec<u8>,
}

/// True for the statuses a run does not leave.
pub fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "aborted")
}

/// The answer to `POST /api/v1/runs`: 201 with a new run, or 200 with the existing run that
/// holds the same dedup key (`deduplicated: true`). Fields a coordinator may leave out default
/// to empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Submitted {
    /// The run id (the existing run's when deduplicated).
    pub id: String,
    /// Its status now (`queued` for a new run).
    #[serde(default)]
    pub status: String,
    /// True when no run was created and `id` is a run that already held the dedup key.
    #[serde(default)]
    pub deduplicated: bool,
    /// Why a new run waits (delayed, queue paused, queue full), if it does.
    #[serde(default)]
    pub reason: Option<String>,
    /// When a delayed run is due (ms since the epoch).
    #[serde(default)]
    pub due_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
