//! `preconditions` (DAG and step level) and a step's `continueOn`, in both key styles, and one
//! test per error.

use super::{assert_error, ok};
use crate::dag::{Condition, ContinueOn};

fn cond(condition: &str, expected: Option<&str>, negate: bool) -> Condition {
    Condition {
        condition: condition.into(),
        expected: expected.map(Into::into),
        negate,
    }
}

const V1: &str = r#"
precondition:
  - condition: "`date +%u`"
    expected: "re:[1-5]"
steps:
  - name: a
    command: 'true'
    preconditions:
      - condition: "${MODE}"
        expected: fast
      - test -f /tmp/flag
      - condition: test -f /tmp/lock
        negate: true
    continueOn:
      failure: true
      skipped: true
      exitCode: [1, 3]
      output: ["WARN", "re:^done [0-9]+$"]
      markSuccess: true
"#;

const V2: &str = r#"
preconditions:
  - condition: "`date +%u`"
    expected: "re:[1-5]"
steps:
  - name: a
    command: 'true'
    precondition:
      - condition: "${MODE}"
        expected: fast
      - test -f /tmp/flag
      - condition: test -f /tmp/lock
        negate: true
    continue_on:
      failure: true
      skipped: true
      exit_code: [1, 3]
      output: ["WARN", "re:^done [0-9]+$"]
      mark_success: true
"#;

#[test]
fn both_key_styles_read_the_same_conditions() {
    let v1 = ok(V1);
    let v2 = ok(V2);
    assert_eq!(v1, v2);
    assert_eq!(
        v1.preconditions,
        vec![cond("`date +%u`", Some("re:[1-5]"), false)]
    );
    let step = &v1.steps[0];
    assert_eq!(
        step.preconditions,
        vec![
            cond("${MODE}", Some("fast"), false),
            cond("test -f /tmp/flag", None, false),
            cond("test -f /tmp/lock", None, true),
        ]
    );
    assert_eq!(
        step.continue_on,
        Some(ContinueOn {
            failure: true,
            skipped: true,
            exit_codes: vec![1, 3],
            output: vec!["WARN".into(), "re:^done [0-9]+$".into()],
            mark_success: true,
        })
    );
}

#[test]
fn shorthand_forms_are_read() {
    let dag = ok(
        "preconditions: test -f /x\nsteps:\n  - name: a\n    command: 'true'\n    \
         preconditions: {condition: '$1', expected: 7}\n    continueOn: {output: WARN}\n",
    );
    assert_eq!(dag.preconditions, vec![cond("test -f /x", None, false)]);
    assert_eq!(
        dag.steps[0].preconditions,
        vec![cond("$1", Some("7"), false)]
    );
    assert_eq!(
        dag.steps[0].continue_on.as_ref().unwrap().output,
        vec!["WARN".to_string()]
    );
}

#[test]
fn the_dagu_format_example_parses_with_its_preconditions() {
    let yaml = "params: report.csv\nenv:\n  - OUT: /tmp/out\nsteps:\n  - name: big\n    \
                command: 'true'\n    preconditions:\n      - condition: \"`wc -l < \
                ${OUT}/input.csv`\"\n        expected: \"re:[0-9]{4,}\"\n";
    let dag = ok(yaml);
    assert_eq!(
        dag.steps[0].preconditions[0].expected.as_deref(),
        Some("re:[0-9]{4,}")
    );
}

fn step_with(extra: &str) -> String {
    format!("steps:\n  - name: a\n    command: 'true'\n{extra}")
}

#[test]
fn a_condition_without_condition_is_an_error() {
    assert_error(
        &step_with("    preconditions:\n      - expected: x\n"),
        "steps[0].preconditions[0].condition",
        "missing",
    );
}

#[test]
fn a_bad_regex_is_an_error_naming_the_field() {
    assert_error(
        &step_with("    preconditions:\n      - condition: x\n        expected: 're:(a'\n"),
        "steps[0].preconditions[0].expected",
        "not a valid regular expression",
    );
    assert_error(
        &step_with("    continueOn:\n      output: ['re:[z-a]']\n"),
        "steps[0].continueOn.output[0]",
        "not a valid regular expression",
    );
}

#[test]
fn wrong_types_and_unknown_keys_are_errors() {
    assert_error(
        &step_with("    preconditions:\n      - condition: x\n        negate: yes please\n"),
        "steps[0].preconditions[0].negate",
        "true or false",
    );
    assert_error(
        &step_with("    preconditions:\n      - condition: x\n        expect: y\n"),
        "steps[0].preconditions[0].expect",
        "did you mean \"expected\"",
    );
    assert_error(
        &step_with("    preconditions: 3\n"),
        "steps[0].preconditions",
        "expected a command string",
    );
    assert_error(
        &step_with("    preconditions: ['  ']\n"),
        "steps[0].preconditions[0]",
        "is empty",
    );
    assert_error(
        &step_with("    continueOn: true\n"),
        "steps[0].continueOn",
        "expected failed, skipped or a map",
    );
    assert_error(
        &step_with("    continueOn:\n      failure: 'yes'\n"),
        "steps[0].continueOn.failure",
        "true or false",
    );
    assert_error(
        &step_with("    continueOn:\n      exitCode: [300]\n"),
        "steps[0].continueOn.exitCode[0]",
        "not an exit code",
    );
    assert_error(
        &step_with("    continueOn:\n      markSucess: true\n"),
        "steps[0].continueOn.markSucess",
        "did you mean \"markSuccess\"",
    );
    assert_error(
        &step_with("    continueOn:\n      exitCode: [1]\n      exit_code: [2]\n"),
        "steps[0].continueOn.exit_code",
        "two spellings of the same key",
    );
}

#[test]
fn a_dag_without_conditions_encodes_as_before() {
    // The digest of a DAG version is its encoding: fields left empty are not encoded.
    let dag = ok(&step_with(""));
    let bytes = crate::model::encode(&dag).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("preconditions") && !text.contains("continue_on"));
}
