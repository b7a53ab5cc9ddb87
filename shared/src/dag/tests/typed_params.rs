//! Dagu's params forms beyond the plain ones: several entries in one list item, typed entries
//! (`name`, `type`, `default`, `enum`, `required`, …) and their checks at submit.

use std::collections::BTreeMap;

use super::super::{BoundParam, ParamType};
use super::{assert_error, ok};

const STEP: &str = "steps: [{name: a, command: 'true'}]\n";

fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn values(bound: &[BoundParam]) -> Vec<(Option<&str>, &str)> {
    bound
        .iter()
        .map(|p| (p.name.as_deref(), p.value.as_str()))
        .collect()
}

/// One list item with several `NAME: default` entries declares them all, in name order (Dagu
/// iterates the map sorted).
#[test]
fn a_list_item_with_several_entries() {
    let dag = ok(&format!("params:\n  - B: 2\n    A: 1\n  - C: 3\n{STEP}"));
    let names: Vec<_> = dag.params.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(names, [Some("A"), Some("B"), Some("C")]);
    assert!(dag.params.iter().all(|p| p.typed.is_none()));
}

const TYPED: &str = r#"
params:
  - name: COUNT
    type: integer
    default: 3
    minimum: 1
    maximum: 10
    description: how many
  - name: MODE
    enum: [fast, slow]
    default: fast
  - name: TARGET
    required: true
  - name: DRY
    type: boolean
    default: "False"
  - name: RATIO
    type: number
  - name: TAG
    pattern: "^v[0-9]+$"
    max_length: 4
    default: v1
"#;

#[test]
fn typed_entries_are_read_with_their_fields() {
    let dag = ok(&format!("{TYPED}{STEP}"));
    let count = dag.params[0].typed.as_deref().unwrap();
    assert_eq!(count.kind, ParamType::Integer);
    assert_eq!(count.description.as_deref(), Some("how many"));
    assert_eq!(dag.params[0].default, "3");
    assert_eq!(
        dag.params[1].typed.as_deref().unwrap().choices,
        ["fast", "slow"]
    );
    assert!(dag.params[2].typed.as_deref().unwrap().required);
    assert_eq!(dag.params[3].default, "false", "normalized to the type");
}

#[test]
fn typed_values_are_checked_and_normalized_at_submit() {
    let dag = ok(&format!("{TYPED}{STEP}"));
    let bound = dag
        .bind_params(&given(&[
            ("TARGET", "prod"),
            ("COUNT", " 7 "),
            ("RATIO", "1.50"),
            ("DRY", "TRUE"),
        ]))
        .unwrap();
    assert_eq!(
        values(&bound),
        [
            (Some("COUNT"), "7"),
            (Some("MODE"), "fast"),
            (Some("TARGET"), "prod"),
            (Some("DRY"), "true"),
            (Some("RATIO"), "1.5"),
            (Some("TAG"), "v1"),
        ]
    );
    // RATIO has no default and is not given: unset, as in Dagu.
    let bound = dag.bind_params(&given(&[("TARGET", "x")])).unwrap();
    assert!(bound.iter().all(|p| p.name.as_deref() != Some("RATIO")));
}

/// Every refusal names the param (its field) and says what it accepts.
#[test]
fn typed_refusals_name_the_param_and_the_fix() {
    let dag = ok(&format!("{TYPED}{STEP}"));
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[], "params.TARGET", "param TARGET is required and has no default; give it (dagrid submit --param TARGET=<value>"),
        (&[("TARGET", "x"), ("COUNT", "abc")], "params.COUNT", "\"abc\" is not an integer (give a whole number such as 42); param COUNT has type: integer"),
        (&[("TARGET", "x"), ("COUNT", "11")], "params.COUNT", "11 is above the maximum 10"),
        (&[("TARGET", "x"), ("MODE", "medium")], "params.MODE", "\"medium\" is not one of the allowed values: fast, slow; param MODE has type: string; one of: fast, slow"),
        (&[("TARGET", "x"), ("DRY", "yes")], "params.DRY", "is not a boolean (give true or false)"),
        (&[("TARGET", "x"), ("TAG", "version2")], "params.TAG", "longer than max_length 4"),
        (&[("TARGET", "x"), ("TAG", "x1")], "params.TAG", "does not match the pattern"),
        (&[("TARGET", "x"), ("7", "y")], "params.7", "takes no extra positional params"),
        (&[("TARGET", "x"), ("OTHER", "y")], "params.OTHER", "not a declared param name"),
    ];
    for (pairs, field, phrase) in cases {
        let errors = dag.bind_params(&given(pairs)).unwrap_err();
        let hit = errors
            .0
            .iter()
            .find(|e| e.field == *field && e.message.contains(phrase));
        assert!(
            hit.is_some(),
            "{pairs:?}: no {field} error with {phrase:?} in:\n{errors}"
        );
    }
    // A value given by position is checked too, and its field is the position.
    let errors = dag
        .bind_params(&given(&[("TARGET", "x"), ("1", "z")]))
        .unwrap_err();
    assert_eq!(errors.0[0].field, "params.1");
}

#[test]
fn bad_typed_entries_are_refused_at_parse() {
    let cases = [
        (
            "  - name: A\n    type: date\n",
            "params.A.type",
            "unsupported type \"date\"; use string, integer, number or boolean",
        ),
        (
            "  - name: A\n    type: integer\n    default: 1.5\n",
            "params.A.default",
            "\"1.5\" is not an integer",
        ),
        (
            "  - name: A\n    enum: [a, b]\n    default: c\n",
            "params.A.default",
            "the default \"c\" is not one of the allowed values: a, b",
        ),
        (
            "  - name: A\n    minimum: 1\n",
            "params.A",
            "minimum/maximum need type: integer or number",
        ),
        (
            "  - name: A\n    type: integer\n    pattern: x\n",
            "params.A",
            "need type: string",
        ),
        (
            "  - name: A\n    deafult: 1\n",
            "params.A.deafult",
            "did you mean \"default\"?",
        ),
        (
            "  - name: A\n    minLength: 1\n",
            "params.A.minLength",
            "write it min_length",
        ),
        (
            "  - name: A\n    required: yes please\n",
            "params.A.required",
            "expected true or false",
        ),
        (
            "  - name: A\n    pattern: \"(\"\n",
            "params.A.pattern",
            "does not compile",
        ),
        (
            "  - name: 1A\n    default: x\n",
            "params[0].name",
            "param name",
        ),
        (
            "  - A: {type: string}\n",
            "params[0].A",
            "rewrite `- A: { ... }` as `- name: A`",
        ),
        (
            "  - name: A\n    default: 1\n  - A: 2\n",
            "params.A",
            "declared twice",
        ),
    ];
    for (entry, field, phrase) in cases {
        assert_error(&format!("params:\n{entry}{STEP}"), field, phrase);
    }
}

/// A plain default with a backtick or `${` stays literal (Dagu ≥ 2.3), with a warning that
/// shows the `eval` form; a typed `eval` does not warn.
#[test]
fn literal_defaults_warn_and_eval_is_kept_for_the_worker() {
    let dag = ok(&format!(
        "params:\n  - TODAY: \"`date +%F`\"\n  - name: NOW\n    eval: \"`date +%s`\"\n{STEP}"
    ));
    assert_eq!(dag.params[0].default, "`date +%F`");
    assert_eq!(
        dag.params[1].typed.as_deref().unwrap().eval.as_deref(),
        Some("`date +%s`")
    );
    assert_eq!(dag.warnings.len(), 1, "{:?}", dag.warnings);
    assert!(
        dag.warnings[0].contains("params.TODAY: the default \"`date +%F`\" is used literally"),
        "{}",
        dag.warnings[0]
    );
    assert!(
        dag.warnings[0].contains("`- name: TODAY` with `eval:"),
        "{}",
        dag.warnings[0]
    );
    // Not given: computed on the worker, so not bound at submit; given: the value wins.
    assert!(dag
        .bind_params(&BTreeMap::new())
        .unwrap()
        .iter()
        .all(|p| p.name.as_deref() != Some("NOW")));
    let bound = dag.bind_params(&given(&[("NOW", "1")])).unwrap();
    assert_eq!(values(&bound)[1], (Some("NOW"), "1"));
}

/// A typed param with both `eval` and `default` is left to the worker's `eval` (which falls
/// back to the default when the command fails), not bound to its default at submit.
#[test]
fn eval_wins_over_default_at_submit() {
    let dag = ok(&format!(
        "params:\n  - name: NOW\n    default: \"0\"\n    eval: \"`date +%s`\"\n{STEP}"
    ));
    assert!(dag
        .bind_params(&BTreeMap::new())
        .unwrap()
        .iter()
        .all(|p| p.name.as_deref() != Some("NOW")));
}

/// A DAG without typed params encodes as before (the digest of its version is unchanged).
#[test]
fn plain_params_encode_without_the_typed_field() {
    let dag = ok(&format!("params: \"a B=1\"\n{STEP}"));
    let bytes = crate::model::encode(&dag.params).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("typed"));
}

/// DAG-level `dotenv` (a path or a list) and `working_dir` (a relative one warns).
#[test]
fn dotenv_and_working_dir() {
    let dag = ok(&format!("dotenv: .env.local\nworkingDir: /srv/app\n{STEP}"));
    assert_eq!(dag.dotenv, [".env.local"]);
    assert_eq!(dag.working_dir.as_deref(), Some("/srv/app"));
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
    let dag = ok(&format!(
        "dotenv: [a.env, b.env]\nworking_dir: data\n{STEP}"
    ));
    assert_eq!(dag.dotenv, ["a.env", "b.env"]);
    assert!(dag.warnings[0].contains("working_dir: the relative path \"data\" is relative to each worker's working directory"), "{:?}", dag.warnings);
    assert_error(
        &format!("dotenv: [1]\n{STEP}"),
        "dotenv[0]",
        "expected a file path",
    );
    assert_error(&format!("dotenv: \"\"\n{STEP}"), "dotenv", "an empty path");
    assert_error(
        &format!("working_dir: [x]\n{STEP}"),
        "working_dir",
        "expected a directory path",
    );
    // A DAG without them encodes as before.
    let bytes = crate::model::encode(&ok(STEP)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("dotenv") && !text.contains("working_dir"));
}

/// A scheduled DAG with a required param and no default warns: its slots cannot bind it.
#[test]
fn a_scheduled_dag_with_a_required_param_warns() {
    let dag = ok(&format!(
        "schedule: \"0 * * * *\"\nparams:\n  - name: T\n    required: true\n{STEP}"
    ));
    assert!(
        dag.warnings
            .iter()
            .any(|w| w.contains("params.T: required with no default")),
        "{:?}",
        dag.warnings
    );
}

/// Dagu's JSON-schema params are refused with the typed form to write instead.
#[test]
fn schema_params_are_refused_with_the_fix() {
    for params in [
        "params:\n  schema: ./p.json\n  values: {a: 1}\n",
        "params:\n  type: object\n  properties: {a: {type: string}}\n",
    ] {
        assert_error(&format!("{params}{STEP}"), "params", "JSON-schema params");
    }
}
