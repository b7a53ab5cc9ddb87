//! Step logs: the API reads from a byte offset, from the file or from the tail kept in Redis;
//! `dagrid logs` prints them and `dagrid logs -f` follows a running step to its end; services
//! log JSON lines with `--log-format json`.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{dagrid_bin, step, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// 5000 numbered lines, 23,893 bytes: more than the 16 KiB tail.
const LONG: &str = r#"
name: long
steps:
  - name: numbers
    command: seq 1 5000
"#;

/// Prints a line every 0.3 s for about 3 s.
const SLOW: &str = r#"
name: slow
steps:
  - name: count
    script: |
      for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i of the slow step"; sleep 0.3; done
"#;

const DAGS: &[(&str, &str)] = &[("long.yaml", LONG), ("slow.yaml", SLOW)];

fn numbers() -> String {
    (1..=5000).map(|i| format!("{i}\n")).collect()
}

fn slow_output() -> String {
    (1..=10)
        .map(|i| format!("line {i} of the slow step\n"))
        .collect()
}

/// The answer to `GET …/log?offset=`: status, the headers of interest, body.
struct Answer {
    status: u16,
    source: String,
    size: u64,
    start: u64,
    step_status: String,
    attempt: Option<u32>,
    body: Vec<u8>,
}

async fn get_log(c: &Cluster, id: &str, step: &str, query: &str) -> Answer {
    let resp = c
        .http
        .get(c.url(&format!("/api/v1/runs/{id}/steps/{step}/log{query}")))
        .send()
        .await
        .expect("GET log");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (source, size, start, step_status, attempt) = (
        header("x-dagrid-log-source"),
        header("x-dagrid-log-size").parse().unwrap_or(u64::MAX),
        header("x-dagrid-log-offset").parse().unwrap_or(u64::MAX),
        header("x-dagrid-step-status"),
        header("x-dagrid-log-attempt").parse().ok(),
    );
    Answer {
        status: resp.status().as_u16(),
        source,
        size,
        start,
        step_status,
        attempt,
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

fn log_path(run: &Value, name: &str) -> String {
    step(run, name)["log_path"]
        .as_str()
        .expect("log_path")
        .to_string()
}

/// Runs `dagrid <args>` to its end (at most 60 s): exit code, stdout, stderr.
async fn dagrid(args: &[&str]) -> (i32, Vec<u8>, String) {
    let child = tokio::process::Command::new(dagrid_bin())
        .args(args)
        .env_remove("DAGRID_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dagrid");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`dagrid {}` did not exit within 60 s", args.join(" ")))
        .expect("dagrid output");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_the_file_or_the_tail_from_an_offset() {
    let c = Cluster::start(DAGS).await;
    let id = c.submit("long", json!({})).await;
    let run = c.wait(&id).await;
    let full = numbers();
    let size = full.len() as u64;

    // The file, readable here: the bytes after the offset, and the size so far.
    let a = get_log(&c, &id, "numbers", "?offset=100").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.source, "file");
    assert_eq!((a.start, a.size), (100, size));
    assert_eq!(a.body, full.as_bytes()[100..]);
    assert_eq!(a.step_status, "succeeded");
    assert_eq!(a.attempt, Some(1));
    let whole = get_log(&c, &id, "numbers", "").await;
    assert_eq!(whole.body, full.as_bytes());

    // The file gone (the worker on another machine): the tail kept in Redis, the last 16 KiB,
    // with the same offsets.
    std::fs::remove_file(log_path(&run, "numbers")).expect("remove the log file");
    let tail_start = size - 16 * 1024;
    let a = get_log(&c, &id, "numbers", "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.source, "tail");
    assert_eq!(
        (a.start, a.size),
        (tail_start, size),
        "the bytes before the tail are skipped"
    );
    assert_eq!(a.body, full.as_bytes()[tail_start as usize..]);
    assert_eq!(a.attempt, Some(1));
    let a = get_log(&c, &id, "numbers", &format!("?offset={}", size - 10)).await;
    assert_eq!((a.start, a.size), (size - 10, size));
    assert_eq!(a.body, full.as_bytes()[size as usize - 10..]);
    // Beyond the end: nothing, starting at the size.
    let a = get_log(&c, &id, "numbers", &format!("?offset={}", size + 5)).await;
    assert_eq!((a.status, a.start, a.size), (200, size, size));
    assert!(a.body.is_empty());

    // A bad offset names the parameter.
    let a = get_log(&c, &id, "numbers", "?offset=-3").await;
    assert_eq!(a.status, 400);
    let err: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(err["error"]["code"], "bad_query");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("offset"),
        "{err}"
    );

    // `dagrid logs` prints the tail after a marker for what it lacks, and says it is the tail.
    let (code, stdout, stderr) = dagrid(&["logs", "--server", &c.api, &id, "numbers"]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut expected = format!("[… {tail_start} bytes skipped …]\n").into_bytes();
    expected.extend_from_slice(&full.as_bytes()[tail_start as usize..]);
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&expected)
    );
    assert!(stderr.contains("tail kept in Redis"), "{stderr}");
    assert!(stderr.contains("16 KiB"), "{stderr}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_prints_the_file_and_names_unknown_runs_and_steps() {
    let c = Cluster::start(DAGS).await;
    let id = c.submit("long", json!({})).await;
    c.wait(&id).await;

    let (code, stdout, stderr) = dagrid(&["logs", "--server", &c.api, &id, "numbers"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, numbers().as_bytes());
    assert!(!stderr.contains("tail"), "{stderr}");

    let (code, stdout, stderr) = dagrid(&["logs", "--server", &c.api, &id, "nope"]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("has no step \"nope\"") && stderr.contains("numbers"),
        "{stderr}"
    );

    let (code, _, stderr) =
        dagrid(&["logs", "--server", &c.api, "no-such-run", "numbers", "-f"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no run with id \"no-such-run\""),
        "{stderr}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_running_steps_whole_output_from_the_tail_and_exits_when_it_ends() {
    let c = Cluster::start(DAGS).await;
    let id = c.submit("slow", json!({})).await;
    let run = c
        .wait_for(&id, "started its step", |r| {
            step(r, "count")["status"] == "running" && step(r, "count")["log_path"].is_string()
        })
        .await;
    // The coordinator cannot read the file: everything comes from the tail the worker keeps
    // updating in Redis while the step runs. (The worker makes the file once the step has
    // run for a second; its output is held in memory until then.)
    let path = log_path(&run, "count");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&path).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no log file at {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&path).expect("remove the log file");
    let follower = tokio::spawn({
        let api = c.api.clone();
        let id = id.clone();
        async move { dagrid(&["logs", "--server", &api, &id, "count", "-f"]).await }
    });
    // While it follows, the tail grows in Redis with its total size.
    let live = loop {
        let a = get_log(&c, &id, "count", "").await;
        if a.step_status != "running" {
            break None;
        }
        if a.status == 200 && a.size > 0 {
            break Some(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let live = live.expect("the running step's tail reached Redis before it ended");
    assert_eq!(live.source, "tail");
    assert_eq!(live.size, live.body.len() as u64);
    assert!(slow_output().as_bytes().starts_with(&live.body));

    let (code, stdout, stderr) = follower.await.expect("follower");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout), slow_output());
    assert!(stderr.contains("step \"count\" succeeded"), "{stderr}");
    assert_eq!(
        step(&c.run(&id).await, "count")["status"],
        "succeeded",
        "the follower exits only once the step ended"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_waits_for_a_step_that_has_not_started() {
    const LATER: &str = r#"
name: later
steps:
  - name: first
    command: sleep 2
  - name: second
    depends: [first]
    command: echo second done
"#;
    let c = Cluster::start(&[("later.yaml", LATER)]).await;
    let id = c.submit("later", json!({})).await;
    let (code, stdout, stderr) = dagrid(&["logs", "--server", &c.api, &id, "second", "-f"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout), "second done\n");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_log_json_lines_with_log_format_json() {
    let redis = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
        .await
        .expect("redis-server starts");
    let mut child = tokio::process::Command::new(dagrid_bin())
        .args([
            "coordinator",
            "--log-format",
            "json",
            "--redis-url",
            &redis.url(),
            "--namespace",
            "logs-json",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dagrid coordinator");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the coordinator logs within 30 s")
        .expect("read stderr")
        .expect("a line");
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    child.start_kill().expect("kill the coordinator");
    let _ = child.wait().await;

    // A format that is neither is refused by name, before anything starts.
    let (code, _, stderr) = dagrid(&["--log-format", "yaml", "coordinator"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--log-format") && stderr.contains("json"),
        "{stderr}"
    );
}
