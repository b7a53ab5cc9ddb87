//! The API's edge over real sockets (issue 12, points 8 and 10): slow and idle connections are
//! closed by their deadlines, the connection cap keeps room for the probes, and every error,
//! whatever produced it, answers in the `{"error": {"code", "message"}}` shape.

use crate::common;

use std::time::{Duration, Instant};

use common::{Cluster, Options};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO: &str = r#"
name: hello
steps:
  - name: hi
    command: echo hi
"#;

fn addr(c: &Cluster) -> String {
    c.api.trim_start_matches("http://").to_string()
}

/// Reads from `s` until EOF or `within`; true when the server closed the connection.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn short_deadlines(c: &mut dagrid_coordinator::Config) {
    c.http.header_read_timeout = Duration::from_secs(1);
    c.http.idle_timeout = Duration::from_secs(3);
    c.http.body_read_timeout = Duration::from_secs(1);
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_by_their_deadlines() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            workers: 0,
            configure: Some(short_deadlines),
            ..Default::default()
        },
    )
    .await;

    // An idle connection that never sends a byte.
    let mut idle = TcpStream::connect(addr(&c)).await.expect("connect");
    // A slowloris: a request head trickled one header every 300 ms, never finished.
    let mut slow = TcpStream::connect(addr(&c)).await.expect("connect");
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = async {
        for i in 0..20 {
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    trickle.await;
    assert!(
        closed_within(&mut slow, Duration::from_secs(1)).await,
        "a head trickled over {:?} still had its connection",
        started.elapsed()
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)).await,
        "an idle connection stayed open for {:?}",
        started.elapsed()
    );

    // A body that stops half-way fails with 400 body_read_failed in the error shape.
    let mut body = TcpStream::connect(addr(&c)).await.expect("connect");
    body.write_all(
        b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"dag\":",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), body.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"body_read_failed""#), "{answer}");

    // A kept-alive client still works: its connections are new ones.
    assert_eq!(c.get_status("/health/live").await, 200);
    c.stop().await;
}

fn small_cap(c: &mut dagrid_coordinator::Config) {
    c.http.max_connections = Some(4);
    c.http.header_read_timeout = Duration::from_secs(30);
}

#[tokio::test]
async fn beyond_the_connection_cap_only_the_probes_are_served() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            workers: 0,
            configure: Some(small_cap),
            ..Default::default()
        },
    )
    .await;
    // Idle sockets fill the cap and the probe reserve, and many more are refused.
    let mut idle = Vec::new();
    for _ in 0..(4 + dagrid_coordinator::PROBE_RESERVE + 40) {
        if let Ok(s) = TcpStream::connect(addr(&c)).await {
            idle.push(s);
        }
    }
    // The reserve's idle connections go after their short head deadline (2 s); then a probe
    // is served and any other request gets 503 overloaded, in the error shape.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let r = http.get(c.url("/health/ready")).send().await;
        if let Ok(r) = r {
            break r.status().as_u16();
        }
        assert!(Instant::now() < deadline, "readiness never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready, 200);
    let r = http
        .get(c.url("/api/v1/dags"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(c.get_status("/metrics").await, 200);
    drop(idle);
    c.stop().await;
}

/// Sends raw `request` bytes; returns the status, the headers block and the body.
async fn raw(c: &Cluster, request: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr(c)).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test]
async fn every_error_has_the_error_shape() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let many_headers: String = (0..150).map(|i| format!("X-H-{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "not_found",
        ),
        (
            "unknown method",
            b"DELETE /api/v1/dags HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "invalid UTF-8 in a path",
            b"GET /api/v1/runs/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
            "bad_path",
        ),
        (
            "repeated query keys",
            b"POST /api/v1/dags?name=a&name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec(),
            400,
            "bad_query",
        ),
        (
            "non-UTF-8 YAML",
            b"POST /api/v1/dags HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc".to_vec(),
            400,
            "invalid_utf8",
        ),
        (
            "too many headers",
            format!("GET /api/v1/dags HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many_headers}\r\n")
                .into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, head, body) = raw(&c, &request).await;
        assert_eq!(got, status, "{what}: {head} {body}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        if status == 405 {
            assert!(head.contains("allow: get"), "{what}: {head}");
        }
    }

    // A body over the limit (32 MiB) gets 413 in the shape.
    let big = vec![b'a'; 33 * 1024 * 1024];
    let r = c
        .http
        .post(c.url("/api/v1/dags"))
        .body(big)
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    c.stop().await;
}
