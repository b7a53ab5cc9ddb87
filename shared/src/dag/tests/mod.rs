//! Unit tests of the `dag` module: happy paths, one test per error, params binding, and
//! property tests.

mod bind;
mod calls;
mod conditions;
mod dagu_keys;
mod errors;
mod guard;
mod handlers;
mod happy;
mod keys;
mod props;
mod queueing;
mod reliability;
mod runpol;
mod steps;
mod typed_params;

use super::{Dag, DagError, DagErrors};

/// Parse with the default name `test`.
fn parse(yaml: &str) -> Result<Dag, DagErrors> {
    Dag::parse(yaml, "test")
}

/// Parse and expect success.
fn ok(yaml: &str) -> Dag {
    match parse(yaml) {
        Ok(dag) => dag,
        Err(errors) => panic!("expected the DAG to parse, got:\n{errors}"),
    }
}

/// Parse and expect failure.
fn errors(yaml: &str) -> Vec<DagError> {
    match parse(yaml) {
        Ok(dag) => panic!("expected errors, parsed: {dag:?}"),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "DagErrors must never be empty");
            errors.0
        }
    }
}

/// Parse, expect failure, and expect one error at `field` whose message contains `phrase`.
fn assert_error(yaml: &str, field: &str, phrase: &str) -> DagError {
    let found = errors(yaml);
    let hit = found
        .iter()
        .find(|error| error.field == field && error.message.contains(phrase));
    match hit {
        Some(error) => error.clone(),
        None => panic!(
            "no error at {field:?} containing {phrase:?}; got:\n{}",
            DagErrors(found)
        ),
    }
}
