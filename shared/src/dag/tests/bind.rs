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
    let errors = bind_err(DAG, &[("mode", "x"), ("01", "z"), ("0", "w")]);
    let fields: Vec<&str> = errors.0.iter().map(|error| error.field.as_str()).collect();
    assert_eq!(fields, ["params.0", "params.01", "params.mode"]);
    let mode = &errors.0[2].message;
    assert!(
        mode.contains("not a declared param name or position"),
        "{mode}"
    );
    assert!(mode.contains("did you mean \"MODE\"?"), "{mode}");
    assert!(mode.contains("valid keys: 1, MODE or 2"), "{mode}");
}

/// As in Dagu: a DAG that declares no named param takes any named param (appended after the
/// declared ones), and positions past the declared ones, in order.
#[test]
fn extra_params_when_no_named_param_is_declared() {
    let none = "steps: [{name: a, command: 'true'}]";
    let params = ok(none).bind_params(&given(&[("FILE", "x"), ("1", "p")]));
    assert_eq!(params, Ok(vec![bound(None, "p"), bound(Some("FILE"), "x")]));
    let list = "params: [FILE]\nsteps: [{name: a, command: 'true'}]";
    let params = ok(list).bind_params(&given(&[("FILE", "x")]));
    assert_eq!(
        params,
        Ok(vec![bound(None, "FILE"), bound(Some("FILE"), "x")])
    );
    let params = ok("params: \"a b\"\nsteps: [{name: a, command: 'true'}]").bind_params(&given(&[
        ("TARGET", "t"),
        ("3", "c"),
        ("1", "A"),
    ]));
    let expected = vec![
        bound(None, "A"),
        bound(None, "b"),
        bound(None, "c"),
        bound(Some("TARGET"), "t"),
    ];
    assert_eq!(params, Ok(expected));
    let errors = bind_err(list, &[("3", "x")]);
    assert_eq!(errors.0[0].field, "params.3");
    assert!(
        errors.0[0].message.contains("without position 2"),
        "{}",
        errors.0[0].message
    );
    let errors = bind_err(none, &[("a-b", "x")]);
    assert_eq!(errors.0[0].field, "params.a-b");
    assert!(
        errors.0[0].message.contains("not a valid param name"),
        "{}",
        errors.0[0].message
    );
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
