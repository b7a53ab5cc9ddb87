//! The event stream: `GET /api/v1/events` over a real cluster (private redis-server, a
//! coordinator, two workers), and the CLI verbs that follow runs with it.

use crate::common;

use std::time::Duration;

use common::Cluster;
use serde_json::{json, Value};

const CHAIN: &str = r#"
name: chain
params: FILE=none
steps:
  - name: a
    command: "true"
  - name: b
    depends: [a]
    command: "true"
"#;

const OTHER: &str = r#"
name: other
steps:
  - name: only
    command: "true"
"#;

const FAILS: &str = r#"
name: fails
params: FILE=none
steps:
  - name: boom
    command: "false"
"#;

/// One server-sent message.
#[derive(Debug, Clone, PartialEq)]
struct Msg {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A minimal SSE reader over a real HTTP response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Opens the stream with `query` (and a `Last-Event-ID`) and reads up to its `ready`.
    async fn open(c: &Cluster, query: &str, last_id: Option<&str>) -> Sse {
        let mut req = c.http.get(c.url(&format!("/api/v1/events{query}")));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("GET /api/v1/events");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut s = Sse {
            resp,
            buf: String::new(),
        };
        let first = s.next().await.expect("a first message");
        assert_eq!(first.event, "ready", "{first:?}");
        s
    }

    /// The next message; `None` when the response ended. Fails after 30 s without one.
    async fn next(&mut self) -> Option<Msg> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = ("message".to_string(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() && id.is_none() && event == "message" {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(Msg { event, id, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("a message within 30 s")
                .expect("stream readable")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Messages up to and including the final run event of `run`.
    async fn until_final(&mut self, run: &str) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await.expect("stream open");
            let done = m.event == "run"
                && m.data["run"] == run
                && matches!(
                    m.data["status"].as_str(),
                    Some("succeeded" | "failed" | "aborted")
                );
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

/// `(step or "", status)` of each event.
fn shape(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .map(|m| {
            (
                m.data["step"].as_str().unwrap_or("").to_string(),
                m.data["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Each event's id as (ms, seq, 0 for the first of an entry's two events, else 1).
fn ids(msgs: &[Msg]) -> Vec<(u64, u64, u8)> {
    msgs.iter()
        .map(|m| {
            let id = m.id.as_deref().expect("every event has an id");
            let (entry, part) = match id.strip_suffix(".0") {
                Some(entry) => (entry, 0),
                None => (id, 1),
            };
            let (a, b) = entry.split_once('-').expect("<ms>-<seq>[.0]");
            (a.parse().unwrap(), b.parse().unwrap(), part)
        })
        .collect()
}

/// The statuses one step went through, in order.
fn step_statuses(shape: &[(String, String)], step: &str) -> Vec<String> {
    shape
        .iter()
        .filter(|(s, _)| s == step)
        .map(|(_, st)| st.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_changes_in_order_and_resumes_exactly() {
    let c = Cluster::start(&[("chain.yaml", CHAIN), ("other.yaml", OTHER)]).await;
    let mut all = Sse::open(&c, "", None).await;
    let mut chain_only = Sse::open(&c, "?dag=chain", None).await;
    let id = c.submit("chain", json!({})).await;
    let other = c.submit("other", json!({})).await;

    let msgs = chain_only.until_final(&id).await;
    assert!(
        msgs.iter().all(|m| m.data["run"] == id.as_str()),
        "{msgs:?}"
    );
    assert!(msgs.iter().all(|m| m.data["dag"] == "chain"));
    for m in &msgs {
        let step = m.data.get("step").is_some();
        assert_eq!(m.event, if step { "step" } else { "run" }, "{m:?}");
        if step {
            assert!(m.data["attempt"].as_u64().unwrap() >= 1, "{m:?}");
        }
    }
    let ids_seen = ids(&msgs);
    assert!(ids_seen.windows(2).all(|w| w[0] < w[1]), "{ids_seen:?}");
    // An entry holds no time of its own: an event's is its entry id's.
    for (m, (ms, _, _)) in msgs.iter().zip(&ids_seen) {
        assert_eq!(m.data["at_ms"].as_u64(), Some(*ms), "{m:?}");
    }
    // The run's `queued` rides on its first step's entry: the first of that entry's two
    // events, `<entry id>.0` (resuming from it below reads the rest of the entry).
    assert_eq!(ids_seen[0].2, 0, "{msgs:?}");
    assert_eq!(ids_seen[0].0..=ids_seen[0].1, ids_seen[1].0..=ids_seen[1].1);
    let s = shape(&msgs);
    assert_eq!(s[0], ("".into(), "queued".into()), "{s:?}");
    assert_eq!(s[1], ("a".into(), "queued".into()), "{s:?}");
    assert_eq!(s.last().unwrap(), &("".into(), "succeeded".into()));
    // A step's statuses follow its life (a `running` may be folded into the report that
    // finished it when both arrive in one batch).
    for step in ["a", "b"] {
        let st = step_statuses(&s, step);
        assert!(
            st == ["queued", "running", "succeeded"] || st == ["queued", "succeeded"],
            "{step}: {st:?}"
        );
    }
    let pos = |want: (&str, &str)| {
        s.iter()
            .position(|(a, b)| a == want.0 && b == want.1)
            .unwrap()
    };
    assert!(pos(("a", "succeeded")) < pos(("b", "queued")), "{s:?}");
    let run_statuses = step_statuses(&s, "");
    assert!(
        run_statuses == ["queued", "running", "succeeded"]
            || run_statuses == ["queued", "succeeded"],
        "{run_statuses:?}"
    );

    // The unfiltered stream carries both runs.
    let mut seen_other = false;
    let mut seen_chain_final = false;
    while !(seen_other && seen_chain_final) {
        let m = all.next().await.unwrap();
        if m.event == "run" && m.data["status"] == "succeeded" {
            seen_other |= m.data["run"] == other.as_str();
            seen_chain_final |= m.data["run"] == id.as_str();
        }
    }

    // Resuming after the third event gives exactly the events after it, filtered by run.
    let mut resumed = Sse::open(&c, &format!("?run={id}"), msgs[2].id.as_deref()).await;
    let rest = resumed.until_final(&id).await;
    assert_eq!(rest, msgs[3..].to_vec());
    // The same with `since=`, a comma list naming a run of another DAG too.
    let mut both = Sse::open(
        &c,
        &format!("?run={id},{other}&since={}", msgs[0].id.as_deref().unwrap()),
        None,
    )
    .await;
    let mut got = Vec::new();
    let mut finals = 0;
    while finals < 2 {
        let m = both.next().await.unwrap();
        if m.event == "run" && m.data["status"] == "succeeded" {
            finals += 1;
        }
        got.push(m);
    }
    let chain_part: Vec<Msg> = got
        .iter()
        .filter(|m| m.data["run"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(chain_part, msgs[1..].to_vec());
    assert!(got.iter().any(|m| m.data["run"] == other.as_str()));

    // Bad queries are refused with the field named.
    for (q, field) in [
        ("?since=yesterday", "since"),
        ("?state=running", "unknown query parameter"),
    ] {
        let r = c
            .http
            .get(c.url(&format!("/api/v1/events{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_query");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_capped_stream_gets_a_reset() {
    let c = Cluster::start(&[("other.yaml", OTHER)]).await;
    let mut sub = Sse::open(&c, "?dag=other", None).await;
    let id = c.submit("other", json!({})).await;
    let msgs = sub.until_final(&id).await;
    let first = msgs[0].id.clone().unwrap();

    // Trim the stream past the client's position, as the cap does once enough events pass.
    let mut conn = c.redis.conn().await.unwrap();
    let key = c.redis.keys().events();
    for i in 0..50 {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg(5)
            .arg("*")
            .arg("run")
            .arg(format!("filler-{i}"))
            .arg("dag")
            .arg("filler")
            .arg("status")
            .arg("queued")
            .arg("at")
            .arg(1)
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    let mut behind = Sse::open(&c, "?dag=other", Some(&first)).await;
    let m = behind.next().await.unwrap();
    assert_eq!(m.event, "reset", "{m:?}");
    assert!(
        m.id.is_some(),
        "a reset says where the stream goes on: {m:?}"
    );
    assert!(m.data["reason"].as_str().is_some());
    // After the reset the subscriber is live: a new run's events arrive.
    let id2 = c.submit("other", json!({})).await;
    let after = behind.until_final(&id2).await;
    assert!(after.iter().all(|m| m.data["run"] == id2.as_str()));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_coordinator_shuts_down() {
    let c = Cluster::start(&[("other.yaml", OTHER)]).await;
    let mut a = Sse::open(&c, "", None).await;
    let mut b = Sse::open(&c, "?dag=other", None).await;
    c.stop_coordinator(0);
    assert_eq!(a.next().await, None);
    assert_eq!(b.next().await, None);
    c.stop().await;
}

/// Runs the `dagrid` binary with `args` (debug logs of the CLI on stderr) and returns
/// (success, stdout, stderr).
async fn dagrid(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(common::dagrid_bin())
        .args(args)
        .env("RUST_LOG", "dagrid=debug")
        .output()
        .await
        .expect("dagrid runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// `s` without its ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_and_batch_follow_runs_through_events() {
    let c = Cluster::start(&[("chain.yaml", CHAIN), ("fails.yaml", FAILS)]).await;
    let (ok, stdout, stderr) = dagrid(&["submit", "chain", "--server", &c.api, "--wait"]).await;
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stderr.contains("events=true"),
        "followed by events: {stderr}"
    );
    assert!(!stderr.contains("polling the states"), "{stderr}");
    let id = stdout.trim();
    assert!(stderr.contains(&format!("run {id} succeeded")), "{stderr}");

    let (ok, stdout, stderr) = dagrid(&["submit", "fails", "--server", &c.api, "--wait"]).await;
    assert!(!ok, "{stdout} {stderr}");
    assert!(stderr.contains("failed"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(dir.path().join(format!("f{i:02}")), "x").unwrap();
    }
    let files = dir.path().display().to_string();
    let (ok, stdout, stderr) =
        dagrid(&["batch", "chain", "--server", &c.api, "--files", &files]).await;
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stderr.contains("events=true"),
        "followed by events: {stderr}"
    );
    assert!(
        stdout.contains("20 runs, 20 succeeded, 0 failed"),
        "{stdout}"
    );
    let (ok, stdout, stderr) =
        dagrid(&["batch", "fails", "--server", &c.api, "--files", &files]).await;
    assert!(!ok, "{stdout} {stderr}");
    assert!(
        stdout.contains("20 runs, 0 succeeded, 20 failed"),
        "{stdout}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_falls_back_to_polling_without_events() {
    // A proxy in front of the coordinator that answers 404 for /api/v1/events, as a coordinator
    // without the event stream does.
    let c = Cluster::start(&[("chain.yaml", CHAIN)]).await;
    let upstream = c.api.clone();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (upstream, http) = (upstream.clone(), http.clone());
        async move {
            use axum::response::IntoResponse;
            let path = req.uri().path_and_query().map(|p| p.as_str().to_string());
            let path = path.unwrap_or_default();
            if path.starts_with("/api/v1/events") {
                return (axum::http::StatusCode::NOT_FOUND, "{}").into_response();
            }
            let method = req.method().clone();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let resp = http
                .request(method, format!("{upstream}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap();
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response()
        }
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(proxy, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
            .unwrap()
    });

    let (ok, stdout, stderr) = dagrid(&["submit", "chain", "--server", &proxy_url, "--wait"]).await;
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stderr.contains("events=false"),
        "followed by polling: {stderr}"
    );
    assert!(stderr.contains("succeeded"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(dir.path().join(format!("f{i}")), "x").unwrap();
    }
    let files = dir.path().display().to_string();
    let (ok, stdout, stderr) =
        dagrid(&["batch", "chain", "--server", &proxy_url, "--files", &files]).await;
    assert!(ok, "{stdout} {stderr}");
    assert!(stdout.contains("5 runs, 5 succeeded, 0 failed"), "{stdout}");
    stop.cancel();
    server.await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_step_streams_each_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("count");
    let yaml = format!(
        "name: flaky\nsteps:\n  - name: a\n    command: sh -c 'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 2 ]'\n    retryPolicy:\n      limit: 2\n      intervalSec: 1\n",
        c = counter.display()
    );
    let c = Cluster::start(&[("flaky.yaml", &yaml)]).await;
    let mut sub = Sse::open(&c, "?dag=flaky", None).await;
    let id = c.submit("flaky", json!({})).await;
    let msgs = sub.until_final(&id).await;
    let steps: Vec<(String, u64)> = msgs
        .iter()
        .filter(|m| m.event == "step")
        .map(|m| {
            (
                m.data["status"].as_str().unwrap().to_string(),
                m.data["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let retrying = steps.iter().position(|s| s.0 == "retrying").unwrap();
    // A retrying step already carries the attempt it waits to run (as its state does).
    assert_eq!(steps[retrying].1, 2, "{steps:?}");
    assert_eq!(steps[..retrying].last().unwrap().1, 1, "{steps:?}");
    // The retry's `queued` event comes from the script that queues it, with the next attempt.
    assert_eq!(steps[retrying + 1], ("queued".to_string(), 2), "{steps:?}");
    assert_eq!(steps.last().unwrap(), &("succeeded".to_string(), 2));
    assert_eq!(msgs.last().unwrap().data["status"], "succeeded");
    c.stop().await;
}

/// Adds `n` events of DAG `filler` to the events stream in one pipeline; returns the last id.
async fn add_fillers(c: &Cluster, n: usize) -> String {
    let mut conn = c.redis.conn().await.unwrap();
    let key = c.redis.keys().events();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("run")
            .arg(format!("filler-{i}"))
            .arg("dag")
            .arg("filler")
            .arg("status")
            .arg("queued")
            .arg("at")
            .arg(1);
    }
    let ids: Vec<String> = pipe.query_async(&mut *conn).await.unwrap();
    ids.last().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_the_start_is_bounded_and_ends_in_a_reset() {
    let c = Cluster::start(&[("other.yaml", OTHER)]).await;
    let last = add_fillers(&c, 12_500).await;
    let mut sub = Sse::open(&c, "?since=0", None).await;
    let mut replayed = 0;
    let reset = loop {
        let m = sub.next().await.expect("stream open");
        match m.event.as_str() {
            "run" => replayed += 1,
            "reset" => break m,
            other => panic!("unexpected {other}: {m:?}"),
        }
    };
    assert!(
        (1..=10_000).contains(&replayed),
        "one request replays at most 10,000 events, got {replayed}"
    );
    assert_eq!(reset.id.as_deref(), Some(last.as_str()), "{reset:?}");
    // Then it is live.
    let id = c.submit("other", json!({})).await;
    let after = sub.until_final(&id).await;
    assert!(after.iter().all(|m| m.data["run"] == id.as_str()));
    // A filter does not lift the bound: entries read count, not events sent.
    let mut filtered = Sse::open(&c, "?since=0&dag=nothing-matches", None).await;
    let m = filtered.next().await.expect("stream open");
    assert_eq!(m.event, "reset", "{m:?}");
    c.stop().await;
}

fn two_tokens(c: &mut dagrid_coordinator::Config) {
    c.auth.tokens = vec![
        dagrid_coordinator::ApiToken::new(
            "dash",
            dagrid_coordinator::Role::Read,
            "read-token-0123456789",
        ),
        dagrid_coordinator::ApiToken::new(
            "ops",
            dagrid_coordinator::Role::Admin,
            "admin-token-0123456789",
        ),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_token() {
    let c = Cluster::start_with(
        &[("other.yaml", OTHER)],
        common::Options {
            configure: Some(two_tokens),
            ..Default::default()
        },
    )
    .await;
    let open = |token: &'static str| {
        c.http
            .get(c.url("/api/v1/events"))
            .bearer_auth(token)
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..32 {
        let r = open("read-token-0123456789").await.expect("an answer");
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let r = open("read-token-0123456789").await.expect("an answer");
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    let other = open("admin-token-0123456789").await.expect("an answer");
    assert_eq!(other.status(), 200, "each token has its own streams");
    // A closed stream frees its place (the server notices when its next write fails or the
    // connection closes).
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = open("read-token-0123456789").await.expect("an answer");
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
    drop(other);
    c.stop().await;
}
