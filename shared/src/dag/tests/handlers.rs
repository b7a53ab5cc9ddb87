//! `handlerOn` / `handler_on`: both key styles, `cancel` and `abort`, default names, and one
//! test per error.

use super::{assert_error, ok};
use crate::dag::{HandlerOn, Step};

const V1: &str = r#"
steps:
  - name: main
    command: ./main.sh
handlerOn:
  success:
    command: echo ok
  failure:
    command: echo failed
  cancel:
    command: echo cancelled
  exit:
    script: |
      echo "status $DAG_RUN_STATUS"
    env:
      - OUT: /tmp/out
    output: DONE
    timeoutSec: 30
    retryPolicy:
      limit: 2
      intervalSec: 1
"#;

const V2: &str = r#"
steps:
  - name: main
    command: ./main.sh
handler_on:
  success:
    command: echo ok
  failure:
    command: echo failed
  abort:
    command: echo cancelled
  exit:
    script: |
      echo "status $DAG_RUN_STATUS"
    env:
      - OUT: /tmp/out
    output: DONE
    timeout_sec: 30
    retry_policy:
      limit: 2
      interval_sec: 1
"#;

fn names(steps: &[(HandlerOn, &Step)]) -> Vec<String> {
    steps.iter().map(|(_, s)| s.name.clone()).collect()
}

#[test]
fn both_key_styles_parse_to_the_same_handlers() {
    let v1 = ok(V1);
    let v2 = ok(V2);
    assert_eq!(v1.handlers, v2.handlers);
    let all: Vec<_> = v1.handlers.iter().collect();
    assert_eq!(
        names(&all),
        ["onSuccess", "onFailure", "onCancel", "onExit"]
    );
    let exit = v1.handlers.get(HandlerOn::Exit).expect("exit");
    assert!(exit.depends.is_empty());
    assert_eq!(exit.output.as_deref(), Some("DONE"));
    assert_eq!(exit.timeout_ms, Some(30_000));
    assert_eq!(exit.retry.as_ref().map(|r| r.limit), Some(2));
    assert_eq!(exit.env[0].name, "OUT");
    assert_eq!(v1.steps.len(), 1, "handlers are not main steps");
    assert_eq!(v1.step_or_handler("onExit"), Some(exit));
    assert_eq!(v1.step_or_handler("main"), Some(&v1.steps[0]));
}

#[test]
fn cancel_and_abort_are_one_key_in_either_style() {
    let v1_abort = ok("steps:\n  - {name: a, command: x}\nhandlerOn:\n  abort:\n    command: c\n");
    let v2_cancel =
        ok("steps:\n  - {name: a, command: x}\nhandler_on:\n  cancel:\n    command: c\n");
    assert_eq!(v1_abort.handlers, v2_cancel.handlers);
    assert!(v1_abort.handlers.get(HandlerOn::Abort).is_some());
    assert_error(
        "steps:\n  - {name: a, command: x}\nhandlerOn:\n  cancel: {command: c}\n  abort: {command: c}\n",
        "handlerOn.abort",
        "two spellings of the same key",
    );
}

#[test]
fn a_handler_may_have_its_own_name_and_null_is_none() {
    let dag = ok(
        "steps:\n  - {name: a, command: x}\nhandlerOn:\n  exit:\n    name: cleanup\n    command: c\n  failure:\n",
    );
    assert_eq!(dag.handlers.get(HandlerOn::Exit).unwrap().name, "cleanup");
    assert!(dag.handlers.get(HandlerOn::Failure).is_none());
    assert!(ok("steps:\n  - {name: a, command: x}\nhandlerOn:\n")
        .handlers
        .is_empty());
}

#[test]
fn a_handler_named_like_a_step_is_refused() {
    assert_error(
        "steps:\n  - {name: onExit, command: x}\nhandlerOn:\n  exit:\n    command: c\n",
        "handlerOn.exit.name",
        "also the name of steps[0]",
    );
    assert_error(
        "steps:\n  - {name: a, command: x}\nhandler_on:\n  success: {name: n, command: c}\n  exit: {name: n, command: c}\n",
        "handler_on.exit.name",
        "also the name of the success handler",
    );
}

#[test]
fn handler_errors_name_the_field() {
    let step = "steps:\n  - {name: a, command: x}\n";
    assert_error(
        &format!("{step}handlerOn:\n  exit:\n    command: c\n    depends: [a]\n"),
        "handlerOn.exit.depends",
        "remove depends",
    );
    assert_error(
        &format!("{step}handlerOn:\n  exit:\n    name: e\n"),
        "handlerOn.exit",
        "neither command nor script",
    );
    assert_error(
        &format!("{step}handlerOn:\n  exit: echo hi\n"),
        "handlerOn.exit",
        "expected a step",
    );
    assert_error(
        &format!("{step}handlerOn: [exit]\n"),
        "handlerOn",
        "expected a map of handlers",
    );
    assert_error(
        &format!("{step}handlerOn:\n  exits:\n    command: c\n"),
        "handlerOn.exits",
        "did you mean \"exit\"",
    );
    assert_error(
        &format!("{step}handler_on:\n  init:\n    command: c\n"),
        "handler_on.init",
        "does not support yet",
    );
    assert_error(
        &format!("{step}handlerOn:\n  exit:\n    command: c\n    continueOn: {{failure: true}}\n"),
        "handlerOn.exit.continueOn",
        "a handler has no dependants, so continueOn would do nothing; remove it",
    );
}
