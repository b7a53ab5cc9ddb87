//! The API side of a test cluster, one for the in-process cluster ([`super::Cluster`]) and the
//! process-level one ([`super::cluster::Cluster`]), which both `Deref` to a [`Client`]: the
//! `dagrid` library's own client ([`dagrid::client::Api`]) with its typed answers for submits
//! and status lookups, and raw requests where a test looks at HTTP statuses and error bodies.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dagrid::client::{Api, Submitted};
use serde::Deserialize;
use serde_json::{json, Value};

/// A client of one coordinator's API.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The typed client of the `dagrid` library.
    pub typed: Api,
    /// A raw HTTP client with the same token and timeout, for statuses and error bodies.
    pub http: reqwest::Client,
    /// How often the wait helpers poll the API.
    poll: Duration,
}

/// The answer to `POST /api/v1/runs/batch`: one entry per run, in request order.
#[derive(Debug, Deserialize)]
struct BatchAnswer {
    runs: Vec<Submitted>,
}

impl Client {
    /// A client of the API at `base`, sending `token` as `Authorization: Bearer …` when given;
    /// each request may take `timeout`; the wait helpers poll every `poll`.
    pub fn new(base: &str, token: Option<&str>, timeout: Duration, poll: Duration) -> Client {
        let typed = Api::with_token(base, token, timeout).expect("API client");
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("token header"),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        Client {
            base: base.to_string(),
            typed,
            http,
            poll,
        }
    }

    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Submits one run (`POST /api/v1/runs`); its id. Panics when the submit fails or returns
    /// an existing run (deduplicated) instead of a new one.
    pub async fn submit(&self, dag: &str, params: Value) -> String {
        let s: Submitted = self
            .typed
            .post("/api/v1/runs", &json!({ "dag": dag, "params": params }))
            .await
            .unwrap_or_else(|e| panic!("submit {dag}: {e:#}"));
        assert!(
            !s.deduplicated,
            "submit {dag}: deduplicated into run {}",
            s.id
        );
        s.id
    }

    /// `POST /api/v1/runs/batch` with one run of `dag` per params object; the ids in order,
    /// or why the request failed.
    pub async fn submit_batch(&self, dag: &str, params: &[Value]) -> Result<Vec<String>, String> {
        let runs: Vec<Value> = params
            .iter()
            .map(|p| json!({ "dag": dag, "params": p }))
            .collect();
        let answer: BatchAnswer = self
            .typed
            .post("/api/v1/runs/batch", &json!({ "runs": runs }))
            .await
            .map_err(|e| format!("POST batch: {e:#}"))?;
        if answer.runs.len() != params.len() {
            return Err(format!(
                "POST batch: {} runs answered for {} submitted",
                answer.runs.len(),
                params.len()
            ));
        }
        Ok(answer.runs.into_iter().map(|r| r.id).collect())
    }

    /// GET an API path's JSON; `None` on any error (a server down or restarting, a 4xx/5xx).
    pub async fn get(&self, path: &str) -> Option<Value> {
        self.typed.get(path).await.ok()
    }

    /// GET an API path and parse its JSON body, whatever the status (an error's body too).
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON body")
    }

    /// GET an API path; its HTTP status only (0 when the API did not answer).
    pub async fn get_status(&self, path: &str) -> u16 {
        match self.http.get(self.url(path)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// POSTs JSON to an API path; the status and the JSON body (`null` when there is none).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET `/api/v1/runs/{id}` and its HTTP status; `None` when the API did not answer.
    pub async fn try_run(&self, id: &str) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(self.url(&format!("/api/v1/runs/{id}")))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// A run, retrying for up to 20 s while the API does not answer 200.
    pub async fn run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.try_run(id).await;
            if let Some((200, v)) = &last {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "GET run {id} kept failing: {last:?}"
            );
            tokio::time::sleep(self.poll).await;
        }
    }

    /// `POST /api/v1/runs/{id}/stop`: the HTTP status and body; `None` when the API did not
    /// answer.
    pub async fn stop_run(&self, id: &str) -> Option<(u16, Value)> {
        let r = self
            .http
            .post(self.url(&format!("/api/v1/runs/{id}/stop")))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The status of each run (`None`: unknown id), through [`Api::statuses`]
    /// (`/api/v1/runs/lookup`); `None` when the API did not answer.
    pub async fn statuses(&self, ids: &[String]) -> Option<Vec<Option<String>>> {
        self.typed.statuses(ids).await.ok()
    }

    /// How many of `ids` are in each status (`unknown` for ids the API does not know).
    pub async fn census(&self, ids: &[String]) -> Option<BTreeMap<String, usize>> {
        let mut m = BTreeMap::new();
        for s in self.statuses(ids).await? {
            *m.entry(s.unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
        }
        Some(m)
    }

    /// How many of `ids` are final (succeeded, failed or aborted); 0 when the API is down.
    pub async fn final_count(&self, ids: &[String]) -> usize {
        self.statuses(ids)
            .await
            .map(|s| s.iter().filter(|s| is_final(s.as_deref())).count())
            .unwrap_or(0)
    }

    /// Waits until at least `n` runs of `ids` are final; returns how many are. Panics after
    /// `timeout`.
    pub async fn wait_final_count(&self, ids: &[String], n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.final_count(ids).await;
            if done >= n {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} runs final after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every run of `ids` is final; panics with the census after `timeout`.
    pub async fn wait_all_final(&self, ids: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.statuses(ids).await {
                if s.iter().all(|s| is_final(s.as_deref())) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let census = self.census(ids).await;
                let stuck: Vec<&String> = match self.statuses(ids).await {
                    Some(s) => ids
                        .iter()
                        .zip(s)
                        .filter(|(_, s)| !is_final(s.as_deref()))
                        .map(|(id, _)| id)
                        .take(3)
                        .collect(),
                    None => Vec::new(),
                };
                let mut detail = String::new();
                for id in stuck {
                    detail.push_str(&format!("\n  {id}: {:?}", self.try_run(id).await));
                }
                panic!("runs not final after {timeout:?}: {census:?}; some of them:{detail}");
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until `pred` holds for the run; returns it. Panics after `timeout`, saying the run
    /// was not `what`.
    pub async fn wait_run(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_run(id).await;
            if let Some((200, run)) = &last {
                if pred(run) {
                    return run.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "run {id}: not {what} after {timeout:?}: {last:?}"
            );
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until the run is final; returns it.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        self.wait_run(id, timeout, "final", |r| is_final(r["status"].as_str()))
            .await
    }
}

/// True for a final run status.
pub fn is_final(status: Option<&str>) -> bool {
    status.is_some_and(dagrid::client::is_final)
}

/// The step named `name` of a run as the API shows it.
pub fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

/// The value of a step's `output` variable.
pub fn output(run: &Value, name: &str) -> String {
    step(run, name)["output"][1]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
