//! Issue 15 point 8 seen from outside: a Dagu key or form dagrid does not run yet is refused
//! with the one message (`a Dagu key that dagrid does not support yet: …`) by `dagrid
//! validate` and by `POST /api/v1/dags` (422 `invalid_dag`), and a key that only shapes Dagu's
//! storage is accepted with a warning. The message texts themselves are unit-tested in
//! `shared/src/dag/tests/dagu_keys.rs`.

use crate::common;

use common::{dagrid_bin, Cluster};
use serde_json::Value;

const REFUSAL: &str = "a Dagu key that dagrid does not support yet: ";

const MULTI_DOCUMENT: &str = "name: main\nsteps:\n  - name: a\n    command: echo a\n---\nname: child\nsteps:\n  - name: b\n    command: echo b\n";

const UNSUPPORTED_KEYS: &str = "name: exotic\nstep_types:\n  greet: {type: command}\nsteps:\n  - name: a\n    command: echo a\n    shell_packages: [jq]\n";

const STORAGE_KEYS: &str = "name: stored\nhist_retention_runs: 5\nsteps:\n  - name: a\n    command: echo a\n    output: {name: A, omit: true}\n";

/// `dagrid validate FILE`: (exit status success, stdout + stderr).
fn validate(name: &str, yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write DAG file");
    let out = std::process::Command::new(dagrid_bin())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run dagrid validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn validate_refuses_dagu_keys_and_forms_it_does_not_run_and_warns_on_storage_keys() {
    // Multi-document files (local sub-DAGs) are read since issue 18.
    let (ok, text) = validate("main.yaml", MULTI_DOCUMENT);
    assert!(ok, "{text}");

    let (ok, text) = validate("exotic.yaml", UNSUPPORTED_KEYS);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("step_types: {REFUSAL}step_types (")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "steps[0].shell_packages: {REFUSAL}shell_packages ("
        )),
        "{text}"
    );
    assert!(!text.contains("unknown key"), "{text}");

    let (ok, text) = validate("stored.yaml", STORAGE_KEYS);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: hist_retention_runs: ignored by dagrid"),
        "{text}"
    );
    assert!(
        text.contains("warning: steps[0].output.omit: ignored by dagrid"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_422_with_the_same_message() {
    let c = Cluster::start(&[]).await;
    for (body, phrase) in [(UNSUPPORTED_KEYS, format!("{REFUSAL}step_types ("))] {
        let r = c
            .http
            .post(c.url("/api/v1/dags"))
            .header("content-type", "application/yaml")
            .body(body)
            .send()
            .await
            .expect("POST /api/v1/dags");
        assert_eq!(r.status(), 422);
        let v: Value = r.json().await.expect("JSON body");
        assert_eq!(v["error"]["code"], "invalid_dag", "{v}");
        assert!(v.to_string().contains(&phrase), "{phrase:?} not in {v}");
    }
    c.stop().await;
}
