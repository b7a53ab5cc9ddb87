//! `Dag::bind_params`: by name, by position, defaults, unknown keys, a param given twice.

use std::collections::BTreeMap;

use super::super::{BoundParam, DagErrors};
use super::ok;

const DAG: &str = r#"
params: "report.csv MODE=fast"
steps: [{name: a, command: "true"}]
"#;

fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let pairs = pairs.iter();
    pairs
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn bound(name: Option<&str>, value: &str) -> BoundParam {
    BoundParam {
        name: name.map(str::to_owned),
        value: value.to_owned(),
    }
}

fn bind_err(yaml: &str, pairs: &[(&str, &str)]) -> DagErrors {
    match ok(yaml).bind_params(&given(pairs)) {
        Err(errors) => errors,
        Ok(bound) => panic!("expected errors, bound {bound:?}"),
    }
}

#[test]
fn defaults_when_nothing_is_given() {
    let params = ok(DAG).bind_params(&BTreeMap::new());
    let expected = vec![bound(None, "report.csv"), bound(Some("MODE"), "fast")];
    assert_eq!(params, Ok(expected));
}

#[test]
fn by_name() {
    let params = ok(DAG).bind_params(&given(&[("MODE", "slow $(rm -rf) ${X}")]));
    let expected = vec![
        bound(None, "report.csv"),
        bound(Some("MODE"), "slow $(rm -rf) ${X}"),
    ];
    assert_eq!(params, Ok(expected));
}

#[test]
fn by_position_including_a_named_param() {
    let params = ok(DAG).bind_params(&given(&[("1", "other.csv"), ("2", "slow")]));
    let expected = vec![bound(None, "other.csv"), bound(Some("MODE"), "slow")];
    assert_eq!(params, Ok(expected));
}

#[test]
fn unknown_key_lists_the_declared_params() {
    let errors = bind_err(DAG, &[("mode", "x"), ("3", "y"), ("01", "z"), ("0", "w")]);
    let fields: Vec<&str> = errors.0.iter().map(|error| error.field.as_str()).collect();
    assert_eq!(fields, ["params.0", "params.01", "params.3", "params.mode"]);
    let mode = &errors.0[3].message;
    assert!(
        mode.contains("not a declared param name or position"),
        "{mode}"
    );
    assert!(mode.contains("did you mean \"MODE\"?"), "{mode}");
    assert!(mode.contains("valid keys: 1, MODE or 2"), "{mode}");
}

#[test]
fn unknown_key_when_no_params_are_declared() {
    let errors = bind_err("steps: [{name: a, command: 'true'}]", &[("FILE", "x")]);
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].field, "params.FILE");
    let message = &errors.0[0].message;
    assert!(message.contains("this DAG declares no params"), "{message}");
    assert!(message.contains("params: FILE=default"), "{message}");
}

#[test]
fn given_twice_by_name_and_by_position() {
    let errors = bind_err(DAG, &[("2", "a"), ("MODE", "b")]);
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].field, "params.MODE");
    let message = &errors.0[0].message;
    assert!(
        message.contains("given twice, as \"2\" and as \"MODE\""),
        "{message}"
    );
}
