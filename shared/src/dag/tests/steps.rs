//! The forms of `steps:` Dagu accepts (issue 15, points 1 to 3): nameless steps, command
//! strings, steps keyed by name, nested parallel lists, the `type` default, command lists,
//! command with script, plain shell step types, and DAG-level `shell`.

use super::super::{Dag, DagKind};
use super::{assert_error, errors, ok};

fn names(dag: &Dag) -> Vec<&str> {
    dag.steps.iter().map(|step| step.name.as_str()).collect()
}

fn depends(dag: &Dag) -> Vec<Vec<&str>> {
    let each = dag.steps.iter();
    each.map(|step| step.depends.iter().map(String::as_str).collect())
        .collect()
}

#[test]
fn a_nameless_step_takes_its_id_else_a_generated_name() {
    let dag = ok(r#"
type: graph
steps:
  - {id: fetch, command: "true"}
  - command: echo one
  - script: echo two
  - command: |
      echo three
      echo four
  - {type: shell, command: "true"}
  - {type: command, command: "true"}
  - {name: named, command: "true"}
  - {command: [echo a, echo b]}
"#);
    assert_eq!(
        names(&dag),
        [
            "fetch",
            "cmd_2",
            "script_3",
            "script_4",
            "shell_5",
            "command_6",
            "named",
            "cmd_8"
        ]
    );
}

#[test]
fn a_generated_name_skips_the_names_before_it() {
    // Dagu's counter starts at the item number and grows past names already taken.
    let dag = ok(r#"
type: graph
steps:
  - {name: cmd_2, command: "true"}
  - echo taken
  - echo next
"#);
    assert_eq!(names(&dag), ["cmd_2", "cmd_3", "cmd_4"]);
}

#[test]
fn depends_may_name_a_generated_name() {
    let dag = ok("steps:\n  - echo a\n  - {command: echo b, depends: cmd_1}\n");
    assert_eq!(depends(&dag), vec![vec![], vec!["cmd_1"]]);
}

#[test]
fn string_steps_are_commands() {
    let dag = ok("steps:\n  - echo hello\n  - printf '%s' x\n");
    assert_eq!(dag.steps[0].command.as_deref(), Some("echo hello"));
    assert_eq!(dag.steps[1].command.as_deref(), Some("printf '%s' x"));
    assert_eq!(names(&dag), ["cmd_1", "cmd_2"]);
}

#[test]
fn without_type_or_depends_the_steps_are_a_chain() {
    let dag = ok("steps:\n  - sleep 1\n  - sleep 1\n  - sleep 1\n");
    assert_eq!(dag.kind, DagKind::Chain);
    assert_eq!(depends(&dag), vec![vec![], vec!["cmd_1"], vec!["cmd_2"]]);
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
}

#[test]
fn without_type_but_with_depends_the_steps_are_a_graph_with_a_warning() {
    let dag = ok(r#"
steps:
  - {name: a, command: "true"}
  - {name: b, command: "true"}
  - {name: c, command: "true", depends: [a]}
"#);
    assert_eq!(dag.kind, DagKind::Graph);
    assert_eq!(depends(&dag), vec![vec![], vec![], vec!["a"]]);
    assert_eq!(dag.warnings.len(), 1, "{:?}", dag.warnings);
    let warning = &dag.warnings[0];
    assert!(warning.starts_with("type: not given and steps use depends (steps[2])"));
    assert!(warning.contains("add type: graph"), "{warning}");
    // An explicit empty depends counts too: it was written for a graph.
    let dag = ok("steps:\n  - {name: a, command: x, depends: []}\n  - {name: b, command: x}\n");
    assert_eq!(dag.kind, DagKind::Graph);
}

#[test]
fn an_explicit_type_says_no_warning_about_depends_in_a_graph() {
    let dag = ok(
        "type: graph\nsteps:\n  - {name: a, command: x}\n  - {name: b, command: x, depends: a}\n",
    );
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
}

#[test]
fn a_chain_with_depends_is_accepted_with_a_warning() {
    let dag = ok(r#"
type: chain
steps:
  - {name: a, command: "true"}
  - {name: b, command: "true"}
  - {name: c, command: "true", depends: a}
"#);
    assert_eq!(dag.kind, DagKind::Chain);
    assert_eq!(depends(&dag), vec![vec![], vec!["a"], vec!["a", "b"]]);
    assert_eq!(dag.warnings.len(), 1, "{:?}", dag.warnings);
    let warning = &dag.warnings[0];
    assert!(
        warning.starts_with("type: chain with depends (steps[2])"),
        "{warning}"
    );
    assert!(warning.contains("Dagu 2 refuses depends in a chain"));
}

#[test]
fn a_nested_list_runs_in_parallel_inside_the_chain() {
    let dag = ok(r#"
steps:
  - echo first
  - - echo left
    - echo middle
    - {name: right, command: echo right}
  - echo last
"#);
    assert_eq!(dag.kind, DagKind::Chain);
    // The members share their list's item number (2), so the second unnamed one would be
    // cmd_2 too and moves on to cmd_3, as in Dagu; the step after the list is item 3, whose
    // cmd_3 is taken.
    assert_eq!(names(&dag), ["cmd_1", "cmd_2", "cmd_3", "right", "cmd_4"]);
    assert_eq!(
        depends(&dag),
        vec![
            vec![],
            vec!["cmd_1"],
            vec!["cmd_1"],
            vec!["cmd_1"],
            vec!["cmd_2", "cmd_3", "right"]
        ]
    );
}

#[test]
fn nested_steps_are_located_by_both_indices() {
    let yaml = "steps:\n  - echo a\n  - - {name: x, command: echo, depends: nope}\n";
    assert_error(yaml, "steps[1][0].depends", "unknown step \"nope\"");
}

#[test]
fn steps_keyed_by_name_are_sorted_and_get_no_chain_edges() {
    let dag = ok(r#"
steps:
  zeta: {command: echo z}
  alpha:
    command: echo a
  mid: {command: echo m, name: other}
"#);
    assert_eq!(names(&dag), ["alpha", "mid", "zeta"]);
    assert_eq!(dag.kind, DagKind::Chain);
    assert_eq!(depends(&dag), vec![Vec::<&str>::new(), vec![], vec![]]);
    let joined = dag.warnings.join("\n");
    assert!(
        joined.contains("steps.mid.name: the step is named \"mid\" by its key"),
        "{joined}"
    );
    assert!(
        joined.contains("a chain adds no edges between them"),
        "{joined}"
    );
    let dag = ok("steps:\n  a: {command: x}\n  b: {command: x, depends: a}\n");
    assert_eq!(dag.kind, DagKind::Graph);
    assert_eq!(depends(&dag), vec![vec![], vec!["a"]]);
    assert_error(
        "steps:\n  a: {command: x, depends: nope}\n",
        "steps.a.depends",
        "unknown step \"nope\"",
    );
}

#[test]
fn a_command_list_runs_each_command_in_turn() {
    let dag = ok(r#"
steps:
  - name: a
    command:
      - echo one
      - echo key: value
      - 42
      - ""
      - cd /tmp
"#);
    let command = dag.steps[0].command.as_deref().unwrap();
    assert_eq!(
        command,
        "(\necho one\n) && (\necho key: value\n) && (\n42\n) && (\ncd /tmp\n)"
    );
    let dag = ok("steps:\n  - {name: a, command: [echo only]}\n");
    assert_eq!(dag.steps[0].command.as_deref(), Some("echo only"));
}

#[test]
fn command_and_script_together_make_the_command_the_interpreter() {
    let dag = ok("steps:\n  - {name: a, command: python3, script: 'print(1)'}\n");
    assert_eq!(dag.steps[0].command.as_deref(), Some("python3"));
    assert_eq!(dag.steps[0].script.as_deref(), Some("print(1)"));
}

#[test]
fn plain_shell_step_types_are_accepted_and_others_refused() {
    let dag = ok("steps:\n  - {name: a, type: command, command: x}\n  - {name: b, type: shell, script: x}\n  - {name: c, type: , command: x}\n");
    assert_eq!(dag.steps.len(), 3);
    for other in ["http", "docker", "ssh", "Shell"] {
        let yaml = format!("steps:\n  - {{name: a, type: {other}, command: x}}\n");
        assert_error(
            &yaml,
            "steps[0].type",
            "is a Dagu key dagrid does not support yet",
        );
    }
    assert_error(
        "steps:\n  - {name: a, type: [shell], command: x}\n",
        "steps[0].type",
        "expected a step type string, found a list",
    );
}

#[test]
fn dag_level_shell_reaches_every_step_without_its_own() {
    let dag = ok(r#"
shell: bash -e
steps:
  - {name: a, command: "echo {1..3}"}
  - {name: b, command: x, shell: [zsh, -c]}
handlerOn:
  exit:
    command: x
"#);
    assert_eq!(dag.steps[0].shell.as_deref(), Some("bash -e"));
    assert_eq!(dag.steps[1].shell.as_deref(), Some("zsh -c"));
    let exit = dag.handlers.exit.as_ref().unwrap();
    assert_eq!(exit.shell.as_deref(), Some("bash -e"));
    let dag = ok("shell: [bash, -o, pipefail]\nsteps:\n  - x\n");
    assert_eq!(dag.steps[0].shell.as_deref(), Some("bash -o pipefail"));
    assert_error(
        "shell: 3\nsteps:\n  - x\n",
        "shell",
        "expected a shell command string or a list of words, found a number",
    );
}

#[test]
fn a_dag_without_the_new_forms_encodes_as_before() {
    // No new field was added to Dag or Step: the encoding of older DAGs is unchanged.
    let dag = ok("type: graph\nsteps:\n  - {name: a, command: x}\n");
    let text = serde_json::to_string(&dag).unwrap();
    assert!(
        !text.contains("item") && !text.contains("kind\":\"Chain"),
        "{text}"
    );
}

#[test]
fn string_steps_of_wrong_shape_are_reported() {
    let found = errors("steps:\n  - ''\n");
    assert!(
        found
            .iter()
            .any(|e| e.field == "steps[0].command" && e.message.contains("is empty")),
        "{found:?}"
    );
}

#[test]
fn dagu_direct_shell_is_refused() {
    let yaml = "shell: direct\nsteps:\n  - {name: a, command: x, shell: direct}\n";
    assert_error(
        yaml,
        "shell",
        "`shell: direct` (run the command without a shell) is not supported yet",
    );
    assert_error(yaml, "steps[0].shell", "is not supported yet");
}
