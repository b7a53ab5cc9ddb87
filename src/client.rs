//! The client verbs: HTTP calls to the coordinator's API and their terminal output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use dagrid_shared::dag::Dag;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `--wait` and `batch` ask for run statuses.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

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
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
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
        bail!("the coordinator answered {status}: {message}")
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

    async fn get_text(&self, path: &str) -> anyhow::Result<(String, Vec<u8>)> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        let source = resp
            .headers()
            .get("x-dagrid-log-source")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((source, resp.bytes().await?.to_vec()))
    }

    async fn post_yaml(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/yaml")
            .body(body);
        Ok(self.send(req).await?.json().await?)
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

/// True for the statuses a run does not leave.
pub(crate) fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed")
}

/// `dagrid submit`.
pub(crate) async fn submit(
    server: &str,
    dag: &str,
    params: &[String],
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let params = parse_params(params)?;
    let v: Value = api
        .post("/api/v1/runs", &json!({ "dag": dag, "params": params }))
        .await?;
    let id = v["id"].as_str().unwrap_or_default().to_string();
    println!("{id}");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let status = api
            .statuses(std::slice::from_ref(&id))
            .await?
            .pop()
            .flatten();
        match status.as_deref() {
            Some(s) if is_final(s) => {
                eprintln!("run {id} {s}");
                return Ok(if s == "succeeded" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            Some(_) => tokio::time::sleep(POLL_INTERVAL).await,
            None => bail!("run {id} disappeared"),
        }
    }
}

fn fmt_ms(ms: Option<u64>) -> String {
    ms.map(|ms| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
    })
    .unwrap_or_else(|| "-".into())
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
    println!("run      {}", run["id"].as_str().unwrap_or_default());
    println!("dag      {}", run["dag"].as_str().unwrap_or_default());
    println!("status   {}", run["status"].as_str().unwrap_or_default());
    let params: Vec<String> = run["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["name"].as_str() {
            Some(n) => format!("{n}={}", p["value"].as_str().unwrap_or_default()),
            None => p["value"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    println!("params   {}", params.join(" "));
    println!("created  {}", fmt_ms(run["created_ms"].as_u64()));
    println!(
        "duration {}",
        fmt_duration(run["started_ms"].as_u64(), run["finished_ms"].as_u64())
    );
    println!();
    println!(
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
        println!(
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
    Ok(ExitCode::SUCCESS)
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
    println!(
        "{:<36}  {:<20} {:<10} {:<24} {:>9}",
        "RUN", "DAG", "STATUS", "CREATED", "DURATION"
    );
    for r in v["runs"].as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<20} {:<10} {:<24} {:>9}",
            r["id"].as_str().unwrap_or_default(),
            r["dag"].as_str().unwrap_or_default(),
            r["status"].as_str().unwrap_or_default(),
            fmt_ms(r["created_ms"].as_u64()),
            fmt_duration(r["started_ms"].as_u64(), r["finished_ms"].as_u64()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dagrid logs`.
pub(crate) async fn logs(server: &str, run_id: &str, step: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let (source, body) = api
        .get_text(&format!("/api/v1/runs/{run_id}/steps/{step}/log"))
        .await?;
    use std::io::Write;
    std::io::stdout().write_all(&body)?;
    if source == "tail" {
        eprintln!("(the tail kept in Redis; the full log is on the worker's machine)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dagrid dags`.
pub(crate) async fn dags(server: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let v: Value = api.get("/api/v1/dags").await?;
    println!("{:<24} {:>5}  {:<30} DESCRIPTION", "DAG", "STEPS", "PARAMS");
    for d in v["dags"].as_array().into_iter().flatten() {
        let params: Vec<String> = d["params"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["name"].as_str().unwrap_or("(positional)").to_string())
            .collect();
        println!(
            "{:<24} {:>5}  {:<30} {}",
            d["name"].as_str().unwrap_or_default(),
            d["steps"].as_array().map(Vec::len).unwrap_or(0),
            params.join(","),
            d["description"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
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
