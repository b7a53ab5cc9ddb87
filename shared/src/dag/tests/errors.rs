//! One test per validation error: the field path and a key phrase of the message.

use super::super::{Dag, MAX_ERRORS, MAX_STEPS};
use super::{assert_error, errors};

const ONE_STEP: &str = "steps:\n  - {name: a, command: 'true'}\n";

#[test]
fn yaml_syntax_error_is_located_and_whole_file() {
    let error = assert_error("steps:\n  - name: a\n   command: [x\n", "", "invalid YAML");
    assert!(error.message.contains("line"), "{}", error.message);
    assert!(error.message.contains("column"), "{}", error.message);
}

#[test]
fn duplicate_yaml_key_is_a_syntax_error() {
    assert_error("name: a\nname: b\n".to_owned().as_str(), "", "duplicate");
}

#[test]
fn top_level_must_be_a_map() {
    assert_error("- a\n- b\n", "", "the top level must be a map");
    assert_error("", "", "found null");
    assert_error("just text", "", "found a string");
}

#[test]
fn missing_steps() {
    assert_error("name: a\n", "steps", "the DAG has no steps");
}

#[test]
fn empty_or_null_steps() {
    assert_error("steps: []\n", "steps", "the DAG has no steps");
    assert_error("steps:\n", "steps", "the DAG has no steps");
}

#[test]
fn steps_of_the_wrong_shape() {
    assert_error("steps: [3]\n", "steps[0]", "expected a step");
    assert_error("steps: {a: 3}\n", "steps.a", "expected a step");
    assert_error(
        "steps: [[[x]]]\n",
        "steps[0][0]",
        "nest steps one level deep only",
    );
    assert_error(
        "steps: [[]]\n",
        "steps[0]",
        "an empty list of parallel steps",
    );
}

#[test]
fn too_many_steps() {
    let steps = (0..=MAX_STEPS).map(|index| format!("  - {{name: s{index}, command: 'true'}}\n"));
    let yaml = format!("steps:\n{}", steps.collect::<String>());
    assert_error(&yaml, "steps", "dagrid accepts at most 1000");
}

#[test]
fn a_generated_name_may_clash_with_a_later_name() {
    // As in Dagu: names are generated in file order, skipping only the names seen so far.
    let yaml = "steps:\n  - echo a\n  - {name: cmd_1, command: 'true'}\n";
    assert_error(
        yaml,
        "steps[1].name",
        "\"cmd_1\" is also the name of steps[0]",
    );
}

#[test]
fn step_names_are_checked() {
    let long = "x".repeat(129);
    let yaml = format!(
        "steps:\n  - {{name: '{long}', command: 'true'}}\n  - {{name: a/b, command: 'true'}}\n  \
         - {{name: \"a\\tb\", command: 'true'}}\n  - {{name: '  ', command: 'true'}}\n"
    );
    assert_error(&yaml, "steps[0].name", "at most 128");
    assert_error(&yaml, "steps[1].name", "contains /");
    assert_error(&yaml, "steps[2].name", "control character");
    assert_error(&yaml, "steps[3].name", "is empty");
    let ok_long = format!(
        "steps:\n  - {{name: '{}', command: 'true'}}\n",
        "é".repeat(128)
    );
    assert!(
        Dag::parse(&ok_long, "t").is_ok(),
        "128 characters are allowed"
    );
}

#[test]
fn duplicate_step_names_name_both_positions() {
    let error = assert_error(
        "steps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n  - {name: a, command: 'true'}\n",
        "steps[2].name",
        "\"a\" is also the name of steps[0]",
    );
    assert!(error.message.contains("unique"));
}

#[test]
fn depends_on_an_unknown_step_suggests_the_closest() {
    let yaml = "steps:\n  - {name: fetch, command: 'true'}\n  - {name: b, command: 'true', depends: [fecth]}\n";
    assert_error(
        yaml,
        "steps[1].depends",
        "unknown step \"fecth\"; did you mean \"fetch\"?",
    );
}

#[test]
fn depends_on_an_unknown_step_without_a_close_name() {
    let yaml = "steps:\n  - {name: fetch, command: 'true'}\n  - {name: b, command: 'true', depends: zzzzzz}\n";
    assert_error(
        yaml,
        "steps[1].depends",
        "unknown step \"zzzzzz\"; depends must name a step",
    );
}

#[test]
fn depends_with_an_empty_name() {
    let yaml = "steps:\n  - {name: a, command: 'true', depends: ['  ']}\n";
    assert_error(yaml, "steps[0].depends", "an empty step name");
}

#[test]
fn step_depending_on_itself() {
    let yaml = "steps:\n  - {name: a, command: 'true', depends: a}\n";
    assert_error(yaml, "steps[0].depends", "step \"a\" depends on itself");
}

#[test]
fn cycle_names_its_steps_in_order() {
    let yaml = r#"
steps:
  - {name: a, command: "true", depends: c}
  - {name: b, command: "true", depends: a}
  - {name: c, command: "true", depends: b}
  - {name: d, command: "true", depends: a}
"#;
    assert_error(
        yaml,
        "steps[0].depends",
        "steps a -> b -> c -> a form a cycle (each waits for the one before it); remove one of these depends",
    );
}

#[test]
fn each_separate_cycle_is_reported_once() {
    let yaml = r#"
steps:
  - {name: a, command: "true", depends: b}
  - {name: b, command: "true", depends: a}
  - {name: x, command: "true", depends: [y, a]}
  - {name: y, command: "true", depends: [x]}
"#;
    let found = errors(yaml);
    let cycles: Vec<&str> = found
        .iter()
        .filter(|error| error.message.contains("form a cycle"))
        .map(|error| error.message.as_str())
        .collect();
    assert_eq!(cycles.len(), 2, "{cycles:?}");
    assert!(cycles[0].starts_with("steps a -> b -> a"), "{cycles:?}");
    assert!(cycles[1].starts_with("steps x -> y -> x"), "{cycles:?}");
}

#[test]
fn chain_with_a_backward_depends_is_a_cycle() {
    let yaml = "type: chain\nsteps:\n  - {name: a, command: 'true', depends: b}\n  - {name: b, command: 'true'}\n";
    assert_error(yaml, "steps[0].depends", "steps a -> b -> a form a cycle");
}

#[test]
fn wrong_type_for_depends() {
    let yaml =
        "steps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true', depends: {a: 1}}\n";
    assert_error(
        yaml,
        "steps[1].depends",
        "expected a step name or a list of step names, found a map",
    );
    let yaml = "steps:\n  - {name: a, command: 'true', depends: [1]}\n";
    assert_error(
        yaml,
        "steps[0].depends[0]",
        "expected a step name, found a number; quote it",
    );
}

#[test]
fn wrong_types_for_other_keys() {
    let yaml = r"
name: [x]
description: {a: b}
type: 1
env: 3
params: true
steps:
  - name: 12
    command: {a: b}
    shell: {a: b}
    dir: [x]
    output: [x]
    id: 4
    description: [x]
  - name: b
    script: [x]
  - name: c
    command: !tag x
";
    assert_error(yaml, "name", "expected a DAG name string, found a list");
    assert_error(yaml, "description", "expected a string, found a map");
    assert_error(yaml, "type", "expected graph or chain, found a number");
    assert_error(yaml, "env", "found a number");
    assert_error(yaml, "params", "found a boolean");
    assert_error(
        yaml,
        "steps[0].name",
        "expected a step name string, found a number; quote it",
    );
    assert_error(yaml, "steps[0].command", "found a map");
    assert_error(yaml, "steps[0].shell", "found a map");
    assert_error(yaml, "steps[0].dir", "found a list");
    assert_error(yaml, "steps[0].output", "found a list");
    assert_error(yaml, "steps[0].id", "found a number");
    assert_error(yaml, "steps[0].description", "found a list");
    assert_error(yaml, "steps[1].script", "found a list");
    assert_error(yaml, "steps[2].command", "found a tagged value");
}

#[test]
fn invalid_env_names() {
    let yaml = r#"
env:
  1BAD: x
steps:
  - name: a
    command: "true"
    env: ["MY-VAR=1", {OK: 1}, {"has space": 2}]
"#;
    assert_error(yaml, "env.1BAD", "\"1BAD\" is not a valid env name");
    assert_error(
        yaml,
        "steps[0].env[0]",
        "\"MY-VAR\" is not a valid env name",
    );
    assert_error(yaml, "steps[0].env[2].has space", "not a valid env name");
}

#[test]
fn env_string_without_equals_and_nested_values() {
    let yaml = "env: [JUSTNAME, {A: [1]}, 5]\nsteps:\n  - {name: a, command: 'true'}\n";
    assert_error(yaml, "env[0]", "is not NAME=value");
    assert_error(yaml, "env[1].A", "found a list");
    assert_error(
        yaml,
        "env[2]",
        "expected a NAME: value map or a NAME=value string, found a number",
    );
}

#[test]
fn invalid_param_names() {
    let yaml = format!("params:\n  my-param: 1\n{ONE_STEP}");
    assert_error(&yaml, "params.my-param", "not a valid param name");
    let yaml = format!("params:\n  - 2x: 1\n{ONE_STEP}");
    assert_error(&yaml, "params[0].2x", "not a valid param name");
}

#[test]
fn param_declared_twice() {
    let yaml = format!("params: A=1 A=2\n{ONE_STEP}");
    assert_error(&yaml, "params.A", "declared twice");
}

#[test]
fn params_with_unbalanced_quotes() {
    let yaml = format!("params: \"a 'b\"\n{ONE_STEP}");
    assert_error(&yaml, "params", "balance the quotes");
}

#[test]
fn params_list_item_with_several_entries() {
    let yaml = format!("params:\n  - name: FOO\n{ONE_STEP}");
    assert_error(&yaml, "params.FOO", "at least one field besides name");
    let yaml = format!("params:\n  - [x]\n  - A: {{b: c}}\n{ONE_STEP}");
    assert_error(&yaml, "params[0]", "found a list");
    assert_error(&yaml, "params[1].A", "as `- name: A`");
}

#[test]
fn invalid_output_name() {
    let yaml = "steps:\n  - {name: a, command: 'true', output: $my-var}\n";
    assert_error(
        yaml,
        "steps[0].output",
        "\"my-var\" is not a valid output variable name",
    );
}

#[test]
fn invalid_dag_names() {
    let with = |name: &str| format!("name: '{name}'\n{ONE_STEP}");
    assert_error(&with("my dag"), "name", "Redis keys and URLs");
    assert_error(&with(&"a".repeat(65)), "name", "longer than 64");
    assert_error(&with(".."), "name", "only dots");
    assert_error(&with(""), "name", "is empty");
    assert!(Dag::parse(&with(&"a".repeat(64)), "t").is_ok());
    assert!(Dag::parse(&with("A-z_0.9"), "t").is_ok());
}

#[test]
fn invalid_default_name_from_the_file() {
    let error = match Dag::parse(ONE_STEP, "my report") {
        Err(errors) => errors.0,
        Ok(dag) => panic!("parsed {dag:?}"),
    };
    assert_eq!(error[0].field, "name");
    assert!(error[0].message.contains("its file name \"my report\""));
    assert!(error[0].message.contains("add name: or rename the file"));
}

#[test]
fn invalid_type_value() {
    let yaml = format!("type: agent\n{ONE_STEP}");
    assert_error(&yaml, "type", "\"agent\" is not a DAG type");
}

#[test]
fn a_command_list_must_list_commands() {
    let yaml = "steps:\n  - {name: a, command: ['', ' ']}\n";
    assert_error(yaml, "steps[0].command", "lists no command");
    assert_eq!(errors(yaml).len(), 1, "no extra 'neither' error");
    let yaml = "steps:\n  - {name: a, command: [echo a, [x]]}\n";
    assert_error(
        yaml,
        "steps[0].command[1]",
        "expected a command line string, found a list",
    );
}

#[test]
fn a_command_list_with_a_script_is_refused() {
    let yaml = "steps:\n  - {name: a, command: [python3, perl], script: print(1)}\n";
    assert_error(
        yaml,
        "steps[0].command",
        "step \"a\" has a list of commands and a script",
    );
}

#[test]
fn step_with_neither_command_nor_script() {
    let yaml = "steps:\n  - {name: a, command: , description: x}\n";
    let error = assert_error(
        yaml,
        "steps[0]",
        "step \"a\" has neither command nor script",
    );
    assert!(error.message.contains("add command:"));
}

#[test]
fn empty_command_or_script() {
    let yaml = "steps:\n  - {name: a, command: '  '}\n  - {name: b, script: ''}\n";
    assert_error(yaml, "steps[0].command", "is empty");
    assert_error(yaml, "steps[1].script", "is empty");
}

#[test]
fn step_ids_are_checked() {
    let yaml = r#"
steps:
  - {name: a, id: 1x, command: "true"}
  - {name: b, id: stdout, command: "true"}
  - {name: c, id: same, command: "true"}
  - {name: d, id: same, command: "true"}
  - {name: e, id: a, command: "true"}
  - {name: f, id: f, command: "true"}
"#;
    assert_error(yaml, "steps[0].id", "not a valid step id");
    assert_error(yaml, "steps[1].id", "reserved");
    assert_error(yaml, "steps[3].id", "\"same\" is also the id of steps[2]");
    assert_error(yaml, "steps[4].id", "\"a\" is the name of steps[0]");
    assert_eq!(errors(yaml).len(), 4, "an id equal to its own name is fine");
}

#[test]
fn non_string_keys() {
    let yaml = "1: x\nsteps:\n  - {name: a, command: 'true', true: 1}\n";
    assert_error(yaml, "", "keys must be strings, found a number (1)");
    assert_error(
        yaml,
        "steps[0]",
        "keys must be strings, found a boolean (true)",
    );
}

#[test]
fn all_problems_are_collected() {
    let yaml = r#"
name: bad name
schedule: "* * * *"
steps:
  - {name: a, command: "true", repeatPolicy: x}
  - {name: "a/b", command: "true", depends: missing}
"#;
    let found = errors(yaml);
    let fields: Vec<&str> = found.iter().map(|error| error.field.as_str()).collect();
    for field in [
        "name",
        "schedule",
        "steps[0].repeatPolicy",
        "steps[1].name",
        "steps[1].depends",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
}

#[test]
fn errors_beyond_the_cap_are_counted() {
    let steps = (0..MAX_ERRORS + 50)
        .map(|index| format!("  - {{name: s{index}, command: 'true', depends: nope{index}}}\n"));
    let yaml = format!("steps:\n{}", steps.collect::<String>());
    let found = errors(&yaml);
    assert_eq!(found.len(), MAX_ERRORS + 1);
    let last = &found[MAX_ERRORS];
    assert_eq!(last.field, "");
    assert!(
        last.message.contains("50 more problems"),
        "{}",
        last.message
    );
}

#[test]
fn io_error_is_a_whole_file_error() {
    let missing = std::path::Path::new("/nonexistent/dagwork/none.yaml");
    let error = match Dag::from_file(missing) {
        Err(errors) => errors.0,
        Ok(dag) => panic!("parsed {dag:?}"),
    };
    assert_eq!(error.len(), 1);
    assert_eq!(error[0].field, "");
    assert!(error[0]
        .message
        .contains("cannot read DAG file /nonexistent/dagwork/none.yaml"));
}

/// The example of DAGU-FORMAT.md verbatim.
const FORMAT_EXAMPLE: &str = r#"
params: "report.csv"
env:
  - OUT: /tmp/out
steps:
  - name: fetch
    command: cp $1 ${OUT}/input.csv
  - name: count
    command: wc -l ${OUT}/input.csv
    output: LINES
    depends: [fetch]
  - name: big
    command: echo "large file: ${LINES}"
    depends: [count]
    preconditions:
      - condition: "`wc -l < ${OUT}/input.csv`"
        expected: "re:[0-9]{4,}"
handlerOn:
  failure:
    command: echo "run ${DAG_RUN_ID} failed"
"#;

/// As printed, the example is not valid YAML: `command: echo "large file: ${LINES}"` is a
/// plain scalar containing `: `. The error says where.
#[test]
fn format_example_verbatim_is_a_yaml_error_at_the_unquoted_colon() {
    let error = assert_error(FORMAT_EXAMPLE, "", "invalid YAML");
    assert!(error.message.contains("line 13"), "{}", error.message);
}

/// The example with that command quoted parses: its `preconditions` and `handlerOn` are
/// supported.
#[test]
fn format_example_with_the_command_quoted_parses() {
    let yaml = &FORMAT_EXAMPLE.replace(
        r#"command: echo "large file: ${LINES}""#,
        r#"command: 'echo "large file: ${LINES}"'"#,
    );
    let dag = super::ok(yaml);
    assert_eq!(dag.steps[2].preconditions.len(), 1);
    assert!(dag.handlers.failure.is_some());
}

#[test]
fn a_long_cycle_is_named_in_full() {
    let steps = (0..1000).map(|index| {
        let previous = (index + 999) % 1000;
        format!("  - {{name: s{index}, command: 'true', depends: s{previous}}}\n")
    });
    let yaml = format!("steps:\n{}", steps.collect::<String>());
    let found = errors(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, "steps[0].depends");
    assert!(found[0].message.starts_with("steps s0 -> s1 -> s2 -> "));
    assert!(found[0].message.contains("s998 -> s999 -> s0 form a cycle"));
}
