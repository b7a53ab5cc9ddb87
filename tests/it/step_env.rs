//! What a step can see of its worker, with real processes: a `dagrid worker` started with
//! `DAGRID_REDIS_URL` and `DAGRID_*` tokens in its environment (the way operators configure
//! it), and runs whose param values, outputs and `dagrid batch` file names try to reach them
//! through `${…}`, `$(…)` and backticks. Neither the Redis URL nor a token may appear in any
//! step's log, and each value must come out exactly as it went in.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Settings};
use common::os::worker_pid;
use common::proc::Proc;
use common::step;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "adm1n-t0ken-0123456789abcdef";
const READ_TOKEN: &str = "re4d-t0ken-0123456789abcdef";

/// Param values that would leak the worker's settings if anything expanded them again.
const TRAPS: &[&str] = &[
    "${DAGRID_REDIS_URL}",
    "$DAGRID_REDIS_URL",
    "${DAGRID_REDIS_URL:-x}",
    "`printenv DAGRID_ADMIN_TOKEN`",
    "$(printenv DAGRID_READ_TOKEN)",
];

const LEAK_DAG: &str = r#"name: leak
params:
  - NAME: world
  - FILE: none
env:
  - GREETING: Hello, ${NAME}
steps:
  - name: hello
    command: echo Hello, ${NAME}
  - name: script
    script: |
      echo "script saw ${NAME} and $1"
      env
  - name: greeting
    command: echo ${GREETING}
  - name: out
    command: printf '%s' "$NAME"
    output: OUT
  - name: use-out
    depends: [out]
    command: echo got ${OUT}
  - name: file
    command: echo file ${FILE}
"#;

/// Starts `dagrid worker` with the Redis URL and API tokens in its environment (not as flags),
/// and waits until it heartbeats.
async fn start_worker_with_secrets(c: &mut Cluster) {
    let mut args = c.worker_args();
    let at = args.iter().position(|a| a == "--redis-url").expect("flag");
    args.drain(at..at + 2);
    let url = c.redis.url();
    let env = [
        ("DAGRID_REDIS_URL", url.as_str()),
        ("DAGRID_ADMIN_TOKEN", ADMIN_TOKEN),
        ("DAGRID_READ_TOKEN", READ_TOKEN),
    ];
    let log = c.root().join("procs").join("worker-env.log");
    let p = Proc::spawn_with_env("worker-env", &args, &env, log);
    let pid = p.pid;
    c.workers.push(p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .worker_ids()
        .await
        .iter()
        .any(|w| worker_pid(w) == Some(pid))
    {
        let w = c.workers.last_mut().expect("worker");
        if let Some(status) = w.exit_status() {
            panic!("{} exited ({status}) at start:\n{}", w.name, w.tail(30));
        }
        assert!(Instant::now() < deadline, "the worker never heartbeat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole log of a step of a finished run, as `GET /api/v1/runs/{id}/steps/{step}/log`
/// gives it: the worker's file (read by the coordinator on the same machine) or, for a short
/// step that printed less than the tail holds (no file), the tail kept in Redis. `token` is
/// sent when the client does not carry one.
async fn log_of(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    run: &Value,
    name: &str,
) -> String {
    let id = run["id"].as_str().unwrap_or_else(|| panic!("no id: {run}"));
    let mut req = http.get(format!("{base}/api/v1/runs/{id}/steps/{name}/log"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("GET log");
    assert_eq!(resp.status(), 200, "log of step {name}");
    resp.text().await.expect("log body")
}

/// Panics when `text` holds the Redis URL, a token or a `DAGRID_` variable.
fn assert_no_secret(c: &Cluster, what: &str, text: &str) {
    let url = c.redis.url();
    for secret in [
        url.as_str(),
        ADMIN_TOKEN,
        READ_TOKEN,
        "DAGRID_REDIS_URL=",
        "DAGRID_",
    ] {
        if secret == "DAGRID_" {
            assert!(
                !text.lines().any(|l| l.starts_with("DAGRID_")),
                "{what}: a DAGRID_ variable reached the step:\n{text}"
            );
        } else {
            assert!(!text.contains(secret), "{what}: {secret:?} leaked:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_neither_the_redis_url_nor_a_token_and_values_stay_verbatim() {
    let settings = Settings {
        workers: 0,
        ..Settings::default()
    };
    let mut c = Cluster::start(&[("leak.yaml", LEAK_DAG.to_string())], settings).await;
    start_worker_with_secrets(&mut c).await;

    for trap in TRAPS {
        let id = c.submit("leak", json!({ "NAME": trap })).await;
        let run = c.wait_final(&id, Duration::from_secs(30)).await;
        if run["status"] != "succeeded" {
            c.dump_logs(40);
            panic!("run for {trap:?} did not succeed: {run}");
        }
        for name in ["hello", "script", "greeting", "out", "use-out", "file"] {
            assert_no_secret(
                &c,
                &format!("{trap:?}, step {name}"),
                &log_of(&c.http, &c.base, None, &run, name).await,
            );
        }
        assert_eq!(
            log_of(&c.http, &c.base, None, &run, "hello").await,
            format!("Hello, {trap}\n")
        );
        let script = log_of(&c.http, &c.base, None, &run, "script").await;
        assert!(
            script.starts_with(&format!("script saw {trap} and {trap}\n")),
            "{trap:?}: {script}"
        );
        // The DAG's own env still expands its `${NAME}`, to the value as it is.
        assert_eq!(
            log_of(&c.http, &c.base, None, &run, "greeting").await,
            format!("Hello, {trap}\n")
        );
        assert_eq!(step(&run, "out")["output"], json!(["OUT", trap]), "{run}");
        assert_eq!(
            log_of(&c.http, &c.base, None, &run, "use-out").await,
            format!("got {trap}\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_a_file_named_like_a_variable_logs_the_literal_name() {
    let settings = Settings {
        workers: 0,
        ..Settings::default()
    };
    let mut c = Cluster::start(&[("leak.yaml", LEAK_DAG.to_string())], settings).await;
    start_worker_with_secrets(&mut c).await;
    let input = c.root().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    for name in ["${DAGRID_REDIS_URL}", "$(printenv DAGRID_ADMIN_TOKEN)"] {
        std::fs::write(input.join(name), "x").expect("write file");
    }
    let result = tokio::process::Command::new(env!("CARGO_BIN_EXE_dagrid"))
        .args(["batch", "leak", "--server", &c.api, "--files"])
        .arg(&input)
        .output()
        .await
        .expect("dagrid batch");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "batch failed: {stdout} {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let runs: Vec<Value> = c.get("/api/v1/runs?dag=leak&limit=10").await.expect("runs")["runs"]
        .as_array()
        .expect("runs list")
        .clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let mut seen = Vec::new();
    for r in runs {
        let id = r["id"].as_str().expect("id");
        let run = c.wait_final(id, Duration::from_secs(30)).await;
        let log = log_of(&c.http, &c.base, None, &run, "file").await;
        assert_no_secret(&c, "batch", &log);
        seen.push(log);
    }
    seen.sort();
    let expected: Vec<String> = ["$(printenv DAGRID_ADMIN_TOKEN)", "${DAGRID_REDIS_URL}"]
        .iter()
        .map(|n| format!("file {}\n", Path::new(&input).join(n).display()))
        .collect();
    assert_eq!(seen, expected);
}

const ENV_DAG: &str = "name: show-env\nsteps:\n  - name: env\n    command: env\n";

/// `start-all` runs the coordinator and workers in one process: the API tokens it read
/// (from `--token-file`, and any variable holding one under another name) stay out of steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_all_steps_see_no_api_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let dags = root.join("dags");
    std::fs::create_dir_all(&dags).expect("mkdir");
    std::fs::write(dags.join("show-env.yaml"), ENV_DAG).expect("write DAG");
    let file_token = "f1le-t0ken-0123456789abcdef";
    std::fs::write(root.join("tokens"), format!("admin {file_token} ci\n")).expect("tokens");
    let ready = root.join("ready");
    let args: Vec<String> = [
        "start-all",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--dags",
        dags.to_str().expect("utf-8"),
        "--log-dir",
        root.join("logs").to_str().expect("utf-8"),
        "--token-file",
        root.join("tokens").to_str().expect("utf-8"),
        "--ready-file",
        ready.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("DAGRID_READ_TOKEN", READ_TOKEN),
        // The file's token under a name dagrid does not know (as `token_env:` would be).
        ("CI_TOKEN", file_token),
        ("HARMLESS", "still-here"),
    ];
    let mut p = Proc::spawn_with_env("start-all", &args, &env, root.join("start-all.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = loop {
        if let Ok(api) = std::fs::read_to_string(&ready) {
            if !api.is_empty() {
                break api;
            }
        }
        if let Some(status) = p.exit_status() {
            panic!("start-all exited ({status}):\n{}", p.tail(30));
        }
        assert!(
            Instant::now() < deadline,
            "start-all never got ready:\n{}",
            p.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{api}/api/v1/runs"))
        .bearer_auth(file_token)
        .json(&json!({ "dag": "show-env" }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("JSON");
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let run = loop {
        let run: Value = http
            .get(format!("{api}/api/v1/runs/{id}"))
            .bearer_auth(file_token)
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("JSON");
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "aborted")
        ) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the run never finished: {run}\n{}",
            p.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    let log = log_of(&http, &api, Some(file_token), &run, "env").await;
    assert!(log.lines().any(|l| l == "HARMLESS=still-here"), "{log}");
    for secret in [file_token, READ_TOKEN, "DAGRID_", "CI_TOKEN="] {
        assert!(!log.contains(secret), "{secret:?} reached the step:\n{log}");
    }
    p.signal("TERM");
    p.wait_exit(Duration::from_secs(20)).await;
}
