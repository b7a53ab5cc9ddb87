//! Hostile input from outside (issue 12, points 4–7 and 10): bodies that used to take
//! seconds to refuse, panic the request, wrap around, reach a step as an unrunnable value, or
//! be read as something they are not; and the `Idempotency-Key` of the submit routes.

use crate::common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{json, Value};

const HELLO: &str =
    "name: hello\nparams: NAME=world\nsteps:\n  - name: a\n    command: echo ${NAME}\n";
const PLAIN: &str =
    "name: plain\nparams: N=0\ndedup: none\nsteps:\n  - name: a\n    command: 'true'\n";

/// POSTs a raw body to the first coordinator; the status and the JSON body.
async fn post_raw(
    c: &Cluster,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let r = c
        .http
        .post(c.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs JSON with an `Idempotency-Key`; the status, whether the answer says it replayed, and
/// the JSON body.
async fn post_keyed(c: &Cluster, path: &str, key: &str, body: &Value) -> (u16, bool, Value) {
    let r = c
        .http
        .post(c.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (status, replayed, r.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or("").to_string()
}

fn fields(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// How many runs exist (summed over the runs-by-status indexes).
async fn run_count(c: &Cluster) -> usize {
    let mut conn = c.redis.conn().await.expect("redis");
    let mut pipe = redis::pipe();
    for st in dagrid_shared::model::RunStatus::ALL {
        pipe.cmd("ZCARD")
            .arg(c.redis.keys().runs_by_status(st.as_str()));
    }
    let counts: Vec<usize> = pipe.query_async(&mut *conn).await.expect("ZCARD");
    counts.into_iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_yaml_is_refused_fast_and_the_api_stays_responsive() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        common::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    // 200 KB of `[` took 7.7 s to refuse (parsed twice, on the async threads) and 200 KB of
    // `{a: ` 45 s (debug build); two of them froze the coordinator.
    let bodies = ["[".repeat(200_000), "{a: ".repeat(50_000)];
    let begin = Instant::now();
    let path = "/api/v1/dags?name=x";
    let first = post_raw(&c, path, "application/yaml", bodies[0].clone());
    let second = post_raw(&c, path, "application/yaml", bodies[1].clone());
    let ready = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let s = c.get_status("/health/ready").await;
        (s, t.elapsed())
    };
    let (a, b, (ready_status, ready_took)) = tokio::join!(first, second, ready);
    let took = begin.elapsed();
    for (status, body) in [&a, &b] {
        assert_eq!(*status, 422, "{body}");
        assert!(
            message(body).contains("nested more than 64 levels"),
            "{body}"
        );
    }
    assert!(took < Duration::from_secs(3), "refusing took {took:?}");
    assert_eq!(ready_status, 200);
    assert!(
        ready_took < Duration::from_secs(2),
        "/health/ready took {ready_took:?}"
    );

    // Over 1 MiB: 413 before any parsing.
    let big = format!("{HELLO}# {}\n", "x".repeat(1024 * 1024));
    let (status, body) = post_raw(&c, "/api/v1/dags", "application/yaml", big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "dag_too_large");
    assert!(message(&body).contains("1048576 bytes"), "{body}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_times_and_durations_are_bounded_and_name_their_field() {
    let c = Cluster::start_with(
        &[("plain.yaml", PLAIN)],
        common::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let cases = [
        (json!({"dag": "plain", "delay": "8000y"}), "delay"),
        (
            json!({"dag": "plain", "delay": "18446744073709551615s"}),
            "delay",
        ),
        (
            json!({"dag": "plain", "at": "9999-12-31T23:59:59-23:59"}),
            "at",
        ),
        (json!({"dag": "plain", "at": "9999-12-31T23:59:59Z"}), "at"),
        (
            json!({"dag": "plain", "dedup": "window:18446744073709551615s"}),
            "dedup",
        ),
        (json!({"dag": "plain", "dedup": "window:8000y"}), "dedup"),
    ];
    for (body, field) in cases {
        let (status, answer) = c.post_to(0, "/api/v1/runs", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(
            fields(&answer),
            vec![field.to_string()],
            "{body} → {answer}"
        );
    }
    // In a batch, the bad item is refused before anything is written (it used to panic after
    // the earlier 500-run chunks were created).
    let mut runs: Vec<Value> = (0..1200)
        .map(|i| json!({"dag": "plain", "params": {"N": i.to_string()}}))
        .collect();
    runs[1100]["delay"] = json!("8000y");
    let (status, answer) = c
        .post_to(0, "/api/v1/runs/batch", json!({ "runs": runs }))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(fields(&answer), vec!["runs[1100].delay".to_string()]);
    assert_eq!(run_count(&c).await, 0);
    // Within the bound: accepted, and delayed.
    let (status, answer) = c
        .post_to(0, "/api/v1/runs", json!({"dag": "plain", "delay": "3650d"}))
        .await;
    assert_eq!(status, 201, "{answer}");
    assert!(answer["due_ms"].as_u64().is_some(), "{answer}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn param_values_a_step_cannot_take_are_refused() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        common::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let cases = [
        ("a\u{0}b".to_string(), "NUL byte"),
        (
            "x".repeat(128 * 1024),
            "131072 bytes; a param value is at most 32768 bytes",
        ),
        ("x".repeat(10_000_000), "10000000 bytes"),
    ];
    for (value, phrase) in cases {
        let (status, answer) = c
            .post_to(
                0,
                "/api/v1/runs",
                json!({"dag": "hello", "params": {"NAME": value}}),
            )
            .await;
        assert_eq!(status, 422, "{phrase}: {answer}");
        assert_eq!(code(&answer), "invalid_params");
        assert_eq!(fields(&answer), vec!["params.NAME".to_string()]);
        assert!(message(&answer).contains(phrase), "{answer}");
    }
    assert_eq!(run_count(&c).await, 0);
    // A command with a NUL byte is refused at registration.
    let nul = "name: nul\nsteps:\n  - name: a\n    command: \"echo a\\0b\"\n";
    let (status, answer) = post_raw(&c, "/api/v1/dags", "application/yaml", nul).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(fields(&answer), vec!["steps[0].command".to_string()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_the_wrong_shape_are_refused_with_their_field() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        common::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    // A negative limit in a DAG file.
    let dag = "name: neg\nmaxActiveRuns: -5\nsteps:\n  - {name: a, command: 'true'}\n";
    let (status, answer) = post_raw(&c, "/api/v1/dags", "application/yaml", dag).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(fields(&answer), vec!["maxActiveRuns".to_string()]);
    // A JSON array is not a submit body (serde would read it as the fields in order).
    let (status, answer) = c.post_to(0, "/api/v1/runs", json!(["hello"])).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(code(&answer), "invalid_body");
    assert!(
        message(&answer).contains("expected a JSON object"),
        "{answer}"
    );
    let (status, answer) = c
        .post_to(0, "/api/v1/runs/batch", json!({"runs": [["hello"]]}))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(message(&answer).contains("runs[0]"), "{answer}");
    for path in ["/api/v1/runs/batch", "/api/v1/runs/lookup"] {
        let (status, answer) = c.post_to(0, path, json!([[{"dag": "hello"}]])).await;
        assert_eq!(status, 422, "{path}: {answer}");
        assert_eq!(code(&answer), "invalid_body");
    }
    assert_eq!(run_count(&c).await, 0);
    // A limit counted in bytes says so.
    let key = "é".repeat(200);
    let (status, answer) = c
        .post_to(0, "/api/v1/runs", json!({"dag": "hello", "dedup_key": key}))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(message(&answer).contains("1 to 256 bytes"), "{answer}");
    assert!(message(&answer).contains("400 bytes"), "{answer}");
    // The body limit says it counts bytes.
    let huge = format!(
        r#"{{"runs": [{{"dag": "hello", "dedup_key": "{}"}}]}}"#,
        "x".repeat(33 << 20)
    );
    // The server answers 413 from the Content-Length and closes the connection: the client
    // may still be sending and see the connection reset before it reads the answer, so a
    // transport error is tried again (at most 5 times).
    let mut tries = 0;
    let (status, answer) = loop {
        tries += 1;
        let sent = c
            .http
            .post(c.url("/api/v1/runs/batch"))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                break (status, r.json().await.unwrap_or(Value::Null));
            }
            Err(e) if tries < 5 => eprintln!("try {tries}: {e}; again"),
            Err(e) => panic!("POST of the over-limit body: {e}"),
        }
    };
    assert_eq!(status, 413, "{answer}");
    assert!(
        message(&answer).contains("at most 33554432 bytes"),
        "{answer}"
    );
    // Retry names the wrongly typed field.
    let id = c.submit("hello", json!({})).await;
    let (status, answer) = c
        .post_to(
            0,
            &format!("/api/v1/runs/{id}/retry"),
            json!({"downstream": "yes"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(code(&answer), "invalid_body");
    assert!(message(&answer).contains("downstream"), "{answer}");
    let (status, answer) = c
        .post_to(0, &format!("/api/v1/runs/{id}/retry"), json!([]))
        .await;
    assert_eq!(status, 422, "{answer}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_runs_and_refuses_another_body() {
    let c = Cluster::start_with(
        &[("plain.yaml", PLAIN)],
        common::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    // One run: a retry gets the same run, marked as replayed.
    let one = json!({"dag": "plain"});
    let (s1, r1, a1) = post_keyed(&c, "/api/v1/runs", "k-one", &one).await;
    let (s2, r2, a2) = post_keyed(&c, "/api/v1/runs", "k-one", &one).await;
    assert_eq!((s1, r1), (201, false), "{a1}");
    assert_eq!((s2, r2), (201, true), "{a2}");
    assert_eq!(a1["id"], a2["id"]);
    assert_eq!(run_count(&c).await, 1);

    // A batch: the same runs, in order; nothing new.
    let runs: Vec<Value> = (0..1200)
        .map(|i| json!({"dag": "plain", "params": {"N": i.to_string()}}))
        .collect();
    let batch = json!({ "runs": runs });
    let (s1, _, a1) = post_keyed(&c, "/api/v1/runs/batch", "k-batch", &batch).await;
    let (s2, r2, a2) = post_keyed(&c, "/api/v1/runs/batch", "k-batch", &batch).await;
    assert_eq!(s1, 201, "{a1}");
    assert_eq!((s2, r2), (201, true));
    assert_eq!(a1["runs"].as_array().map(Vec::len), Some(1200));
    let ids = |a: &Value| -> Vec<String> {
        a["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&a1), ids(&a2));
    assert_eq!(a2["created"], 1200);
    assert_eq!(run_count(&c).await, 1201);

    // The key with another body: refused, naming the header; nothing created.
    let other = json!({"runs": [{"dag": "plain", "params": {"N": "x"}}]});
    let (s, _, a) = post_keyed(&c, "/api/v1/runs/batch", "k-batch", &other).await;
    assert_eq!(s, 422, "{a}");
    assert_eq!(code(&a), "idempotency_key_reused");
    assert!(message(&a).contains("Idempotency-Key"), "{a}");
    assert_eq!(run_count(&c).await, 1201);

    // A bad key: 400, naming the header.
    let (s, _, a) = post_keyed(&c, "/api/v1/runs", &"k".repeat(300), &one).await;
    assert_eq!(s, 400, "{a}");
    assert_eq!(code(&a), "invalid_idempotency_key");

    // The record expires after a day.
    let mut conn = c.redis.conn().await.expect("redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(c.redis.keys().idempotency("k-batch"))
        .query_async(&mut *conn)
        .await
        .expect("PTTL");
    assert!(ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000, "{ttl}");
    c.stop().await;
}
