//! `dagrid validate` on the step forms of issue 15 (points 1 to 3): the order warnings reach the
//! user, and the refusals that remain read as they should. The runs themselves are in
//! tests/it/dagu_examples.rs (examples/dagu/steps-*.yaml).

use crate::common;

use common::dagrid_bin;

/// `dagrid validate FILE` on `yaml`: (exit success, stdout, stderr).
fn validate(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("order.yaml");
    std::fs::write(&file, yaml).expect("write DAG");
    let out = std::process::Command::new(dagrid_bin())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run dagrid validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_warns_when_depends_make_a_file_without_type_a_graph() {
    let (ok, stdout, stderr) = validate(
        "steps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true', depends: a}\n",
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ok (DAG \"order\", 2 steps)"), "{stdout}");
    assert!(
        stdout.contains("order.yaml: warning: type: not given and steps use depends (steps[1])"),
        "{stdout}"
    );
}

#[test]
fn validate_warns_about_depends_in_a_chain() {
    let (ok, stdout, stderr) = validate(
        "type: chain\nsteps:\n  - echo a\n  - echo b\n  - {command: echo c, depends: cmd_1}\n",
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: type: chain with depends (steps[2])"),
        "{stdout}"
    );
}

#[test]
fn a_plain_chain_validates_without_warnings() {
    let (ok, stdout, stderr) = validate("steps:\n  - echo a\n  - - echo b\n    - echo c\n");
    assert!(ok, "{stdout}{stderr}");
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(stdout.contains("3 steps"), "{stdout}");
}

#[test]
fn an_executor_step_type_is_still_refused() {
    let (ok, stdout, stderr) = validate("steps:\n  - {type: http, command: GET http://x}\n");
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("steps[0].type: a Dagu key that dagrid does not support yet: type"),
        "{stderr}"
    );
}
