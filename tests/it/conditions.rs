//! End to end: `preconditions` (step and DAG level) and `continueOn` on real workers, and
//! `output` variables reaching later steps' commands and scripts. Assertions on the final
//! state of runs and steps, and on files the steps write.

use crate::common;

use common::{output, step, Cluster};
use serde_json::{json, Value};

fn status<'a>(run: &'a Value, name: &str) -> &'a str {
    step(run, name)["status"].as_str().unwrap_or_default()
}

fn error(run: &Value, name: &str) -> String {
    step(run, name)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const STEP_CONDITIONS: &str = r#"
name: step_conditions
params:
  - MODE: fast
env:
  - FLAG: /nonexistent/flag
steps:
  - name: producer
    command: echo 12345
    output: COUNT
  - name: value_false
    depends: [producer]
    command: 'true'
    preconditions:
      - condition: "${MODE}"
        expected: slow
  - name: after_false
    depends: [value_false]
    command: 'true'
  - name: value_true
    depends: [producer]
    command: echo ran
    preconditions:
      - condition: "${MODE}"
        expected: fast
      - condition: "`echo $COUNT`"
        expected: "re:^[0-9]{4,}$"
  - name: after_true
    depends: [value_true]
    command: 'true'
  - name: negated
    command: 'true'
    preconditions:
      - condition: test -f ${FLAG}
        negate: true
  - name: command_false
    command: 'true'
    preconditions: test -f ${FLAG}
  - name: regex_false
    depends: [producer]
    command: 'true'
    preconditions:
      - condition: "${COUNT}"
        expected: "re:^[0-9]{2}$"
  - name: from_command
    depends: [producer]
    command: echo "n=${COUNT}"
    output: FROM_COMMAND
  - name: from_script
    depends: [producer]
    script: |
      echo "s=$COUNT"
    output: FROM_SCRIPT
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_preconditions_skip_or_run_and_outputs_flow() {
    let c = Cluster::start(&[("step_conditions.yaml", STEP_CONDITIONS)]).await;
    let id = c.submit("step_conditions", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(status(&run, "value_false"), "skipped", "{run}");
    let why = error(&run, "value_false");
    assert!(
        why.contains("gave \"fast\"") && why.contains("expected \"slow\""),
        "{why}"
    );
    assert_eq!(status(&run, "after_false"), "skipped", "{run}");
    assert!(error(&run, "after_false").contains("value_false"));
    assert_eq!(status(&run, "value_true"), "succeeded", "{run}");
    assert_eq!(status(&run, "after_true"), "succeeded", "{run}");
    assert_eq!(status(&run, "negated"), "succeeded", "{run}");
    assert_eq!(status(&run, "command_false"), "skipped", "{run}");
    assert!(error(&run, "command_false").contains("exited 1"));
    assert_eq!(status(&run, "regex_false"), "skipped", "{run}");
    assert_eq!(output(&run, "from_command"), "n=12345");
    assert_eq!(output(&run, "from_script"), "s=12345");
    c.stop().await;
}

const DAG_GATED: &str = r#"
name: dag_gated
params:
  - ENV: staging
  - MARK: /tmp/none
preconditions:
  - condition: "${ENV}"
    expected: prod
steps:
  - name: a
    command: touch ${MARK}.a
  - name: b
    command: touch ${MARK}.b
  - name: c
    depends: [a, b]
    command: touch ${MARK}.c
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_preconditions_gate_the_whole_run() {
    let c = Cluster::start(&[("dag_gated.yaml", DAG_GATED)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("m").display().to_string();
    let blocked = c
        .submit("dag_gated", json!({ "MARK": format!("{mark}1") }))
        .await;
    let allowed = c
        .submit(
            "dag_gated",
            json!({ "MARK": format!("{mark}2"), "ENV": "prod" }),
        )
        .await;

    let run = c.wait(&blocked).await;
    assert_eq!(run["status"], "aborted", "{run}");
    for s in ["a", "b", "c"] {
        assert_eq!(status(&run, s), "skipped", "{s}: {run}");
        assert!(step(&run, s)["started_ms"].is_null(), "{s} never started");
    }
    assert!(error(&run, "a").contains("DAG precondition 1 did not hold"));
    assert!(error(&run, "b").contains("DAG's preconditions did not hold"));
    for s in ["a", "b", "c"] {
        assert!(!std::path::Path::new(&format!("{mark}1.{s}")).exists());
    }

    let run = c.wait(&allowed).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    for s in ["a", "b", "c"] {
        assert!(
            std::path::Path::new(&format!("{mark}2.{s}")).exists(),
            "{s}"
        );
    }
    c.stop().await;
}

/// Each case: a failing `first` step with a `continueOn`, and `second` depending on it.
fn continue_dag(name: &str, first: &str, continue_on: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - name: first\n    script: |\n{first}\n    continueOn: {continue_on}\n  - name: second\n    depends: [first]\n    command: 'true'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_on_releases_dependants_as_dagu_does() {
    let script = |body: &str| {
        body.lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cases = [
        ("failure", script("exit 1"), "{failure: true}"),
        ("no_cover", script("exit 1"), "{exitCode: [3]}"),
        ("exitcode", script("exit 3"), "{exitCode: [3]}"),
        (
            "output",
            script("echo 'WARN: disk low' >&2\nexit 1"),
            "{output: ['re:^WARN: disk']}",
        ),
        (
            "mark",
            script("exit 4"),
            "{exitCode: [4], markSuccess: true}",
        ),
    ];
    let mut files: Vec<(String, String)> = cases
        .iter()
        .map(|(name, first, cont)| (format!("{name}.yaml"), continue_dag(name, first, cont)))
        .collect();
    files.push((
        "skipped.yaml".into(),
        "name: skipped\nsteps:\n  - name: first\n    command: 'true'\n    preconditions: 'false'\n    continueOn: {skipped: true}\n  - name: second\n    depends: [first]\n    command: 'true'\n".into(),
    ));
    let dags: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, y)| (f.as_str(), y.as_str()))
        .collect();
    let c = Cluster::start(&dags).await;
    let mut ids = Vec::new();
    for (file, _) in &files {
        let name = file.trim_end_matches(".yaml");
        ids.push((name.to_string(), c.submit(name, json!({})).await));
    }
    for (name, id) in &ids {
        let run = c.wait(id).await;
        let (first, second, run_status) = match name.as_str() {
            "failure" | "exitcode" | "output" => ("failed", "succeeded", "failed"),
            "no_cover" => ("failed", "skipped", "failed"),
            "mark" => ("succeeded", "succeeded", "succeeded"),
            "skipped" => ("skipped", "succeeded", "succeeded"),
            other => unreachable!("{other}"),
        };
        assert_eq!(status(&run, "first"), first, "{name}: {run}");
        assert_eq!(status(&run, "second"), second, "{name}: {run}");
        assert_eq!(run["status"], run_status, "{name}: {run}");
    }
    c.stop().await;
}
