//! Graceful shutdown of a coordinator: once it drains, new connections are refused, writes
//! arriving on connections it accepted before get 503 with `Retry-After` in the API's error
//! shape, reads still answer, readiness is 503, and a request already under way finishes.

use crate::common;

use std::time::Duration;

use common::Cluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO: &str = r#"
name: hello
steps:
  - name: hi
    command: echo hi
"#;

/// A connection the coordinator has accepted, on which the first line of `request` (not the
/// whole head) has arrived; returns it with the rest of the request. (A connection that has
/// sent nothing yet is closed at shutdown, before any request.)
async fn request_begun(c: &Cluster, request: &str) -> (TcpStream, String) {
    let addr = c.api.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let line = request.find("\r\n").expect("a request line") + 2;
    s.write_all(&request.as_bytes()[..line])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    (s, request[line..].to_string())
}

/// Stops the coordinator and waits until it refuses new connections.
async fn drain(c: &Cluster) {
    c.stop_coordinator(0);
    let addr = c.api.trim_start_matches("http://").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the draining coordinator still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads the whole response: (lowercased head, body).
async fn response(mut s: TcpStream) -> (String, String) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the response comes")
        .expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    (head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_coordinator_answers_503_with_retry_after_to_a_submit() {
    let c = Cluster::start(&[("hello.yaml", HELLO)]).await;
    let submit = request_begun(&c, &request("POST", "/api/v1/runs", r#"{"dag":"hello"}"#)).await;
    let batch = request_begun(
        &c,
        &request(
            "POST",
            "/api/v1/runs/batch",
            r#"{"runs":[{"dag":"hello"}]}"#,
        ),
    )
    .await;
    let read = request_begun(&c, &request("GET", "/api/v1/runs", "")).await;
    let ready = request_begun(&c, &request("GET", "/health/ready", "")).await;
    drain(&c).await;

    for (path, (mut conn, rest)) in [("/api/v1/runs", submit), ("/api/v1/runs/batch", batch)] {
        conn.write_all(rest.as_bytes()).await.expect("write");
        let (head, body) = response(conn).await;
        assert!(head.starts_with("http/1.1 503"), "{path}: {head}");
        assert!(head.contains("\r\nretry-after: 5\r\n"), "{path}: {head}");
        let v: Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(v["error"]["code"], "draining", "{path}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }

    let (mut conn, rest) = read;
    conn.write_all(rest.as_bytes()).await.expect("write");
    let (head, body) = response(conn).await;
    assert!(head.starts_with("http/1.1 200"), "reads go on: {head}");
    let runs: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        runs["runs"],
        serde_json::json!([]),
        "nothing was submitted: {runs}"
    );

    let (mut conn, rest) = ready;
    conn.write_all(rest.as_bytes()).await.expect("write");
    let (head, body) = response(conn).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(body.contains("draining"), "{body}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_under_way_when_draining_starts_finishes() {
    let c = Cluster::start(&[("hello.yaml", HELLO)]).await;
    let full = request("POST", "/api/v1/runs", r#"{"dag":"hello","params":{}}"#);
    let (mut conn, _) = request_begun(&c, &full).await;
    // The whole head and part of the body: the request is under way (past the drain check).
    let head_end = full.find("\r\n\r\n").expect("head") + 4;
    let line = full.find("\r\n").expect("line") + 2;
    conn.write_all(&full.as_bytes()[line..head_end + 5])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&c).await;
    conn.write_all(&full.as_bytes()[head_end + 5..])
        .await
        .expect("write");
    let (head, body) = response(conn).await;
    assert!(head.starts_with("http/1.1 201"), "{head}\n{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    let id = v["id"].as_str().expect("id");
    let mut redis = c.redis.conn().await.expect("redis");
    let status: Option<String> = redis::cmd("HGET")
        .arg(c.redis.keys().run(id))
        .arg("status")
        .query_async(&mut *redis)
        .await
        .expect("HGET");
    assert!(status.is_some(), "the run exists");
    c.stop().await;
}
