//! Dagu's params on a real cluster, beyond the example table: a positional params list given
//! an extra named param through the CLI and the API (as Dagu binds it), typed params refused
//! at submit with a 422 naming the param, and a backtick value evaluated once per run that a
//! manual retry of a step, long after the run finished, still sees.

use crate::common;

use std::time::Duration;

use common::{output, Cluster};
use serde_json::json;

const LIST: &str = "name: lst\nparams: [FILE]\nsteps:\n  - name: show\n    command: echo \"$1 ${FILE}\"\n    output: SHOW\n";

const TYPED: &str = "name: typed\nparams:\n  - name: COUNT\n    type: integer\n    default: 1\n  - name: MODE\n    enum: [fast, slow]\n    default: fast\n  - name: TARGET\n    required: true\nsteps:\n  - name: show\n    command: echo \"$COUNT $MODE $TARGET\"\n    output: SHOW\n";

const ONCE: &str = "name: once\ntype: graph\nenv:\n  - NOW: \"`date +%s%N`\"\nsteps:\n  - name: a\n    command: echo \"$NOW\"\n    output: A\n  - name: b\n    depends: [a]\n    command: echo \"$NOW\"\n    output: B\n";

async fn dagrid(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(common::dagrid_bin())
        .args(args)
        .output()
        .await
        .expect("dagrid runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_bind_check_and_stay_the_same_for_the_run() {
    let c = Cluster::start(&[
        ("lst.yaml", LIST),
        ("typed.yaml", TYPED),
        ("once.yaml", ONCE),
    ])
    .await;

    // `params: [FILE]` plus a named FILE: $1 keeps its default, ${FILE} is the value (Dagu's
    // binding; this was a 422 "not a declared param").
    let id = c.submit("lst", json!({"FILE": "x"})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(output(&run, "show"), "FILE x");
    let (ok, stdout, stderr) = dagrid(&[
        "submit", "lst", "--param", "FILE=y", "--server", &c.api, "--wait",
    ])
    .await;
    assert!(ok, "{stdout} {stderr}");
    let run = c.wait(stdout.trim()).await;
    assert_eq!(output(&run, "show"), "FILE y");

    // Typed params: a value that does not fit is a 422 naming the param and what it takes.
    for (params, field, phrase) in [
        (json!({}), "params.TARGET", "param TARGET is required"),
        (
            json!({"TARGET": "t", "COUNT": "many"}),
            "params.COUNT",
            "is not an integer",
        ),
        (
            json!({"TARGET": "t", "MODE": "medium"}),
            "params.MODE",
            "one of: fast, slow",
        ),
    ] {
        let (status, body) = c
            .post_to(0, "/api/v1/runs", json!({"dag": "typed", "params": params}))
            .await;
        assert_eq!(status, 422, "{body}");
        let text = body.to_string();
        assert!(
            text.contains(field) && text.contains(phrase),
            "{field} {phrase}: {text}"
        );
    }
    // A JSON number is taken as its text and normalized.
    let id = c
        .submit("typed", json!({"TARGET": "t", "COUNT": 3, "MODE": "slow"}))
        .await;
    assert_eq!(output(&c.wait(&id).await, "show"), "3 slow t");
    let (ok, stdout, stderr) = dagrid(&[
        "submit", "typed", "--param", "COUNT=x", "--param", "TARGET=t", "--server", &c.api,
    ])
    .await;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("params.COUNT") && stderr.contains("not an integer"),
        "{stderr}"
    );

    // A backtick value is evaluated once: both steps see it, and so does a manual retry of
    // the second step after the run finished.
    let id = c.submit("once", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let now = output(&run, "a");
    assert!(
        !now.is_empty() && now.bytes().all(|b| b.is_ascii_digit()),
        "{now}"
    );
    assert_eq!(output(&run, "b"), now);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = c
        .post_to(0, &format!("/api/v1/runs/{id}/retry"), json!({"step": "b"}))
        .await;
    assert!(status < 300, "{status} {body}");
    let run = c
        .wait_for(&id, "retried b", |r| {
            let b = common::step(r, "b");
            r["status"] == "succeeded" && b["attempt"].as_u64() == Some(2)
        })
        .await;
    assert_eq!(output(&run, "b"), now, "the retry sees the run's value");
    c.stop().await;
}
