//! Sub-DAG steps (`call:` / `run:`, `params:`, `parallel:`) and multi-document files with
//! local DAGs.

use super::super::{
    Call, Parallel, ParallelItem, ParallelItems, DEFAULT_MAX_CONCURRENT, MAX_DOCUMENTS,
    MAX_PARALLEL_ITEMS,
};
use super::{assert_error, errors, ok};

/// The call of the only step of `steps`, parsed as a graph DAG.
fn call_of(step: &str) -> Call {
    let dag = ok(&format!("type: graph\nsteps:\n  - {step}\n"));
    dag.steps[0].call.clone().expect("a call step")
}

fn named(pairs: &[(&str, &str)]) -> Vec<(Option<String>, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((!n.is_empty()).then(|| n.to_string()), v.to_string()))
        .collect()
}

#[test]
fn call_and_run_name_the_dag_and_the_step_has_no_command() {
    let dag = ok("steps:\n  - {name: a, call: other}\n  - {name: b, run: legacy}\n");
    assert_eq!(
        dag.steps[0].call.as_ref().map(|c| c.dag.as_str()),
        Some("other")
    );
    assert_eq!(
        dag.steps[1].call.as_ref().map(|c| c.dag.as_str()),
        Some("legacy")
    );
    assert_eq!(dag.steps[0].command, None);
    assert_eq!(dag.steps[0].script, None);
    assert!(
        dag.steps[1].depends.contains(&"a".to_owned()),
        "a chain still"
    );
}

#[test]
fn call_and_run_together_are_one_key_twice() {
    assert_error(
        "steps:\n  - {name: a, call: x, run: y}\n",
        "steps[0].run",
        "two spellings of the same key",
    );
}

#[test]
fn unnamed_call_steps_are_named_like_dagu() {
    let dag = ok("steps:\n  - call: x\n  - {call: x, parallel: [a]}\n");
    assert_eq!(dag.steps[0].name, "dag_1");
    assert_eq!(dag.steps[1].name, "parallel_2");
}

#[test]
fn dagu_type_dag_and_parallel_with_call_are_accepted_without_it_refused() {
    let dag = ok("steps:\n  - {name: a, type: dag, call: x}\n  - {name: b, type: parallel, call: x, parallel: [1]}\n");
    assert_eq!(
        dag.steps[0].call.as_ref().map(|c| c.dag.as_str()),
        Some("x")
    );
    assert!(dag.steps[1]
        .call
        .as_ref()
        .is_some_and(|c| c.parallel.is_some()));
    assert_error(
        "steps:\n  - {name: a, type: dag, command: x}\n",
        "steps[0].type",
        "does not support yet",
    );
}

#[test]
fn a_call_name_is_a_dag_name_or_a_template() {
    assert_eq!(call_of("{name: a, call: '${WHICH}'}").dag, "${WHICH}");
    assert_eq!(call_of("{name: a, call: ' spaced '}").dag, "spaced");
    assert_error(
        "steps:\n  - {name: a, call: 'no spaces'}\n",
        "steps[0].call",
        "is not a valid DAG name",
    );
    assert_error(
        "steps:\n  - {name: a, call: ''}\n",
        "steps[0].call",
        "is empty",
    );
    assert_error(
        "steps:\n  - {name: a, call: workflows/processor.yaml}\n",
        "steps[0].call",
        "names a DAG file by its path",
    );
    assert_error(
        "steps:\n  - {name: a, call: 3}\n",
        "steps[0].call",
        "expected a DAG name",
    );
}

#[test]
fn call_with_command_or_script_is_refused() {
    for extra in ["command: echo", "script: echo"] {
        assert_error(
            &format!("steps:\n  - {{name: a, call: x, {extra}}}\n"),
            "steps[0].call",
            "either a command or script, or another DAG",
        );
    }
}

#[test]
fn params_and_parallel_without_call_are_refused() {
    assert_error(
        "steps:\n  - {name: a, command: echo, params: 'A=1'}\n",
        "steps[0].params",
        "need call:",
    );
    assert_error(
        "steps:\n  - {name: a, command: echo, parallel: [1]}\n",
        "steps[0].parallel",
        "needs call:",
    );
}

#[test]
fn string_params_split_like_a_command_line() {
    let call = call_of(r#"{name: a, call: x, params: "A=1 B='two words' pos 9x=y C=${OUT}"}"#);
    assert_eq!(
        call.params,
        named(&[
            ("A", "1"),
            ("B", "two words"),
            ("", "pos"),
            ("", "9x=y"),
            ("C", "${OUT}")
        ])
    );
    assert_error(
        "steps:\n  - {name: a, call: x, params: \"A='open\"}\n",
        "steps[0].params",
        "cannot split",
    );
}

#[test]
fn map_and_list_params_keep_file_order_and_read_scalars_as_text() {
    let call = call_of("{name: a, call: x, params: {Z: 1, A: true, M: text, N: null}}");
    assert_eq!(
        call.params,
        named(&[("Z", "1"), ("A", "true"), ("M", "text"), ("N", "")])
    );
    let call = call_of("{name: a, call: x, params: ['A=1', {B: 2}, pos, 3]}");
    assert_eq!(
        call.params,
        named(&[("A", "1"), ("B", "2"), ("", "pos"), ("", "3")])
    );
    assert_error(
        "steps:\n  - {name: a, call: x, params: {A: [1]}}\n",
        "steps[0].params.A",
        "expected a string, number or boolean",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, params: {'bad-name': 1}}\n",
        "steps[0].params.bad-name",
        "not a valid param name",
    );
}

#[test]
fn parallel_as_a_variable_a_list_or_a_map() {
    let call = call_of("{name: a, call: x, parallel: '${FILES}'}");
    assert_eq!(
        call.parallel,
        Some(Parallel {
            items: ParallelItems::Variable("${FILES}".into()),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        })
    );
    let call = call_of("{name: a, call: x, parallel: [a, 2, 1.5, true, {REGION: eu, N: 3}]}");
    let Some(Parallel {
        items: ParallelItems::List(items),
        max_concurrent: 10,
    }) = call.parallel
    else {
        panic!("{call:?}");
    };
    assert_eq!(
        items,
        vec![
            ParallelItem::Value("a".into()),
            ParallelItem::Value("2".into()),
            ParallelItem::Value("1.5".into()),
            ParallelItem::Value("true".into()),
            ParallelItem::Params(vec![
                ("REGION".into(), "eu".into()),
                ("N".into(), "3".into())
            ]),
        ]
    );
    for key in ["max_concurrent", "maxConcurrent"] {
        let call = call_of(&format!(
            "{{name: a, call: x, parallel: {{items: '${{X}}', {key}: 5}}}}"
        ));
        assert_eq!(call.parallel.map(|p| p.max_concurrent), Some(5));
    }
    let call = call_of("{name: a, call: x, parallel: {items: [a, b]}}");
    let parallel = call.parallel.expect("parallel");
    assert_eq!(parallel.max_concurrent, 10);
    assert!(matches!(parallel.items, ParallelItems::List(ref l) if l.len() == 2));
}

#[test]
fn parallel_problems_name_the_field_and_the_fix() {
    for bad in ["0", "-1", "2.5", "many"] {
        assert_error(
            &format!(
                "steps:\n  - {{name: a, call: x, parallel: {{items: [a], max_concurrent: {bad}}}}}\n"
            ),
            "steps[0].parallel.max_concurrent",
            "must be a positive integer, e.g. 5",
        );
    }
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: []}\n",
        "steps[0].parallel",
        "lists no items",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: {items: []}}\n",
        "steps[0].parallel.items",
        "lists no items",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: {max_concurrent: 2}}\n",
        "steps[0].parallel.items",
        "is missing",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: {items: [a], limit: 2}}\n",
        "steps[0].parallel.limit",
        "valid keys here: items, max_concurrent",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: [[a]]}\n",
        "steps[0].parallel[0]",
        "expected an item",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: 3}\n",
        "steps[0].parallel",
        "expected a variable such as ${ITEMS}",
    );
    assert_error(
        "steps:\n  - {name: a, call: x, parallel: {items: [a], max_concurrent: 2, maxConcurrent: 3}}\n",
        "steps[0].parallel.maxConcurrent",
        "two spellings",
    );
}

#[test]
fn more_than_the_item_limit_is_refused() {
    let mut yaml = String::from("steps:\n  - name: a\n    call: x\n    parallel:\n");
    for _ in 0..=MAX_PARALLEL_ITEMS {
        yaml.push_str("    - 1\n");
    }
    assert_error(&yaml, "steps[0].parallel", "at most 100000 child runs");
}

#[test]
fn process_keys_are_ignored_on_a_call_step_with_a_warning_and_repeat_is_refused() {
    let dag = ok("steps:\n  - {name: a, call: x, shell: bash, timeoutSec: 5, signalOnStop: SIGINT, dir: /tmp, output: OUT, retryPolicy: {limit: 2}, continueOn: {failure: true}, env: [A: 1], preconditions: [{condition: '1', expected: '1'}]}\n");
    let step = &dag.steps[0];
    assert_eq!(step.shell, None);
    assert_eq!(step.timeout_ms, None);
    assert_eq!(step.signal_on_stop, None);
    assert_eq!(step.dir, None);
    assert_eq!(step.output.as_deref(), Some("OUT"));
    assert!(step.retry.is_some() && step.continue_on.is_some());
    assert_eq!(step.env.len(), 1);
    assert_eq!(step.preconditions.len(), 1);
    for key in ["shell", "timeoutSec", "signalOnStop", "dir"] {
        let warning = format!("steps[0].{key}: ignored on a call step");
        assert!(
            dag.warnings.iter().any(|w| w.starts_with(&warning)),
            "{warning:?} not in {:?}",
            dag.warnings
        );
    }
    assert_error(
        "steps:\n  - {name: a, call: x, repeatPolicy: {repeat: true, intervalSec: 1}}\n",
        "steps[0].repeatPolicy",
        "not supported on a call step yet",
    );
}

#[test]
fn process_defaults_do_not_reach_call_steps() {
    let dag = ok("defaults: {timeoutSec: 5, signalOnStop: SIGINT, repeatPolicy: {repeat: true, intervalSec: 1, limit: 2}, retryPolicy: {limit: 2}}\nsteps:\n  - {name: a, call: x}\n  - {name: b, command: echo}\n");
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
    assert!(dag.steps[0].repeat.is_none() && dag.steps[0].retry.is_some());
    assert!(dag.steps[1].repeat.is_some() && dag.steps[1].timeout_ms.is_some());
}

#[test]
fn the_dag_level_shell_is_not_given_to_call_steps() {
    let dag = ok("shell: bash\nsteps:\n  - {name: a, call: x}\n  - {name: b, command: echo}\n");
    assert_eq!(dag.steps[0].shell, None);
    assert_eq!(dag.steps[1].shell.as_deref(), Some("bash"));
}

// --- multi-document files ---------------------------------------------------------------------

const MULTI: &str = "\
name: main
steps:
  - {name: a, call: child, params: 'X=1'}
  - {name: b, call: elsewhere}
  - {name: c, call: main.child}
---
name: child
params: [X: 0]
steps:
  - {name: c, call: grandchild}
---
name: grandchild
env: [G: 1]
steps:
  - {name: d, command: echo}
";

#[test]
fn later_documents_are_local_dags_named_after_the_file_dag() {
    let dag = ok(MULTI);
    assert_eq!(dag.name, "main");
    let names: Vec<&str> = dag.locals.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["main.child", "main.grandchild"]);
    assert_eq!(dag.locals[0].params.len(), 1);
    assert_eq!(dag.locals[1].env.len(), 1);
    assert!(dag.locals.iter().all(|l| l.locals.is_empty()));
    let target = |d: &super::super::Dag, i: usize| d.steps[i].call.clone().map(|c| c.dag);
    assert_eq!(target(&dag, 0).as_deref(), Some("main.child"));
    assert_eq!(target(&dag, 1).as_deref(), Some("elsewhere"));
    assert_eq!(target(&dag, 2).as_deref(), Some("main.child"));
    assert_eq!(
        target(&dag.locals[0], 0).as_deref(),
        Some("main.grandchild")
    );
}

#[test]
fn the_main_dag_may_be_named_by_the_default_name() {
    let dag = super::super::Dag::parse(
        "steps: [{name: a, call: sub}]\n---\nname: sub\nsteps: [{name: b, command: x}]\n",
        "file",
    )
    .expect("parses");
    assert_eq!(dag.locals[0].name, "file.sub");
    assert_eq!(
        dag.steps[0].call.as_ref().map(|c| c.dag.as_str()),
        Some("file.sub")
    );
}

#[test]
fn local_dag_problems_are_located_by_document() {
    assert_error(
        "name: m\nsteps: [{name: a, command: x}]\n---\nsteps: [{name: b, command: x}]\n",
        "documents[1].name",
        "needs name:",
    );
    assert_error(
        "name: m\nsteps: [{name: a, command: x}]\n---\nname: s\nsteps: [{name: b, commnd: x}]\n",
        "documents[1].steps[0].commnd",
        "unknown key",
    );
    assert_error(
        "name: m\nsteps: [{name: a, command: x}]\n---\nname: s\nsteps: [{name: b, command: x}]\n---\nname: s\nsteps: [{name: b, command: x}]\n",
        "documents[2].name",
        "already defined",
    );
    assert_error(
        "name: m\nsteps: [{name: a, command: x}]\n---\nname: m\nsteps: [{name: b, command: x}]\n",
        "documents[1].name",
        "also the name of the file's DAG",
    );
    let long = "n".repeat(40);
    assert_error(
        &format!("name: {long}\nsteps: [{{name: a, command: x}}]\n---\nname: {long}x\nsteps: [{{name: b, command: x}}]\n"),
        "documents[1].name",
        "is longer than 64 characters; shorten",
    );
    // Errors of the main document and of a local are reported together.
    let found =
        errors("name: m\nsteps: [{name: a, commnd: x}]\n---\nsteps: [{name: b, command: x}]\n");
    assert!(
        found.iter().any(|e| e.field == "steps[0].commnd"),
        "{found:?}"
    );
    assert!(
        found.iter().any(|e| e.field == "documents[1].name"),
        "{found:?}"
    );
}

#[test]
fn a_local_warning_names_its_document() {
    let dag = ok("name: m\nsteps: [{name: a, command: x}]\n---\nname: s\ntags: [x]\nsteps: [{name: b, command: x}]\n");
    assert!(
        dag.warnings.is_empty() && dag.locals[0].warnings[0].starts_with("documents[1]: tags"),
        "{:?}",
        dag.locals[0].warnings
    );
}

#[test]
fn the_document_count_is_bounded() {
    let mut yaml = String::from("name: m\nsteps: [{name: a, command: x}]\n");
    for i in 0..MAX_DOCUMENTS {
        yaml.push_str(&format!(
            "---\nname: l{i}\nsteps: [{{name: b, command: x}}]\n"
        ));
    }
    assert_error(&yaml, "", "more than 100 YAML documents");
}

#[test]
fn problems_of_many_documents_are_capped_together() {
    let mut yaml = String::from("name: m\nsteps: [{name: a, command: x}]\n");
    for i in 0..20 {
        yaml.push_str(&format!("---\nname: l{i}\nsteps:\n"));
        for _ in 0..30 {
            yaml.push_str("  - {name: b, commnd: x}\n");
        }
    }
    let found = errors(&yaml);
    assert_eq!(
        found.len(),
        super::super::MAX_ERRORS + 1,
        "{:?}",
        found.last()
    );
    assert!(found
        .last()
        .is_some_and(|e| e.message.contains("more problems not listed")));
}

#[test]
fn a_dag_without_calls_encodes_as_before() {
    // `call: None` and empty `locals` are left out of the encoding, so the digest of a DAG
    // registered before sub-DAGs existed does not change.
    let dag = ok("steps: [{name: a, command: x}]\n");
    let json = serde_json::to_string(&dag).expect("encode");
    assert!(
        !json.contains("\"call\"") && !json.contains("\"locals\""),
        "{json}"
    );
}

// --- Dagu's own files (from its integration tests and examples) ---------------------------------

/// Files of Dagu's repository with `call` / `parallel` and local DAGs (internal/intg/
/// parallel_test.go, subdag_test.go, internal/persis/filedag/examples_unix.go), as written.
const DAGU_FILES: &[(&str, &str)] = &[
    (
        "parallel_outputs",
        r#"steps:
  - call: child-with-output
    parallel:
      items:
        - ITEM: "task1"
        - ITEM: "task2"
        - ITEM: "task3"
    output: RESULTS
  - command: |
      echo "First output: ${RESULTS.outputs[0].TASK_OUTPUT}"
    output: FIRST_OUTPUT
"#,
    ),
    (
        "subdag_preconditions",
        r#"env:
  - ENVIRONMENT: production
steps:
  - name: check-env
    command: echo "${ENVIRONMENT}"
    output: ENV_TYPE

  - name: run-prod-dag
    call: production-dag
    preconditions:
      - condition: "${ENV_TYPE}"
        expected: "production"

  - name: run-dev-dag
    call: development-dag
    preconditions:
      - condition: "${ENV_TYPE}"
        expected: "development"

---

name: production-dag
steps:
  - echo "Deploying to production"
  - echo "Verifying production deployment"

---

name: development-dag
steps:
  - echo "Building for development"
  - echo "Running development tests"
"#,
    ),
    (
        "nested",
        r#"# Nested Workflows
# Call other workflows as sub-workflows

description: Example of nested workflows

steps:
  - echo "Preparing data for sub-workflows"
  - call: sub-workflow
    params: "TASK_ID=123"
  - echo "Main workflow completed"

---
# Sub-workflow definition
name: sub-workflow
description: Sub-workflow that gets called by main
params:
  - TASK_ID: "000"

steps:
  - echo "Sub-workflow executing with TASK_ID=${TASK_ID}"
  - echo "Sub-workflow step 2"
"#,
    ),
    (
        "issue_1274",
        r#"steps:
  - command: |
      echo '{"file": "params.txt", "config": "env"}'
    output: jsonList

  - call: issue-1274-worker
    parallel:
      items: ${jsonList}
      max_concurrent: 1
    params:
      aJson: ${ITEM}
    continue_on:
      skipped: true

---
name: issue-1274-worker
params:
  aJson: ""
steps:
  - name: Process JSON item
    command: echo "Processing file=${aJson.file} config=${aJson.config}"
"#,
    ),
];

#[test]
fn dagu_files_with_calls_and_local_dags_parse() {
    for (name, yaml) in DAGU_FILES {
        let dag = super::super::Dag::parse(yaml, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(dag.steps.iter().any(|s| s.call.is_some()), "{name}");
    }
    let nested = super::super::Dag::parse(DAGU_FILES[2].1, "nested").expect("parses");
    assert_eq!(nested.steps[1].name, "dag_2");
    let call = nested.steps[1].call.as_ref().expect("call");
    assert_eq!(call.dag, "nested.sub-workflow");
    assert_eq!(call.params, vec![(Some("TASK_ID".into()), "123".into())]);
    let issue = super::super::Dag::parse(DAGU_FILES[3].1, "issue").expect("parses");
    let call = issue.steps[1].call.as_ref().expect("call");
    assert_eq!(call.dag, "issue.issue-1274-worker");
    assert_eq!(
        call.parallel,
        Some(Parallel {
            items: ParallelItems::Variable("${jsonList}".into()),
            max_concurrent: 1
        })
    );
}
