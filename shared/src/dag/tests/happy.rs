//! Files that parse: both key styles, every params and env form, chains, the graph helpers.

use super::super::{Dag, DagError, DagKind, EnvVar, ParamDef, Step};
use super::{ok, parse};

fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(name, value)| EnvVar {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

fn named(name: &str, default: &str) -> ParamDef {
    ParamDef {
        name: Some(name.to_owned()),
        default: default.to_owned(),
        typed: None,
    }
}

fn positional(default: &str) -> ParamDef {
    ParamDef {
        name: None,
        default: default.to_owned(),
        typed: None,
    }
}

fn depends(dag: &Dag) -> Vec<Vec<&str>> {
    let steps = dag.steps.iter();
    steps
        .map(|step| step.depends.iter().map(String::as_str).collect())
        .collect()
}

const V1_FILE: &str = r"
name: etl-v1
description: nightly load
type: graph
params:
  - INPUT: data.csv
env:
  - OUT: /tmp/out
steps:
  - name: fetch
    command: cp ${INPUT} ${OUT}/input.csv
    workingDir: /srv
    shell: bash -e
    env:
      - MODE: fast
  - name: count
    script: |
      wc -l input.csv
    dir: /srv
    output: $LINES
    depends: fetch
";

const V2_FILE: &str = r"
name: etl-v2
description: nightly load
type: graph
params:
  - INPUT: data.csv
env:
  - OUT: /tmp/out
steps:
  - name: fetch
    id: fetcher
    command: cp ${INPUT} ${OUT}/input.csv
    working_dir: /srv
    shell: [bash, -e]
    env:
      - MODE: fast
  - name: count
    script: |
      wc -l input.csv
    working_dir: /srv
    output: LINES
    depends: [fetcher]
";

#[test]
fn v1_and_v2_key_styles_parse_to_the_same_dag() {
    let v1 = ok(V1_FILE);
    let mut v2 = ok(V2_FILE);
    assert_eq!(v1.name, "etl-v1");
    assert_eq!(v2.name, "etl-v2");
    v2.name = v1.name.clone();
    assert_eq!(v1, v2);
}

#[test]
fn v1_file_has_every_supported_field() {
    let dag = ok(V1_FILE);
    assert_eq!(dag.description.as_deref(), Some("nightly load"));
    assert_eq!(dag.kind, DagKind::Graph);
    assert_eq!(dag.params, vec![named("INPUT", "data.csv")]);
    assert_eq!(dag.env, env(&[("OUT", "/tmp/out")]));
    assert!(dag.warnings.is_empty());
    let fetch = Step {
        name: "fetch".into(),
        description: None,
        command: Some("cp ${INPUT} ${OUT}/input.csv".into()),
        script: None,
        shell: Some("bash -e".into()),
        dir: Some("/srv".into()),
        env: env(&[("MODE", "fast")]),
        depends: vec![],
        output: None,
        retry: None,
        timeout_ms: None,
        signal_on_stop: None,
        preconditions: vec![],
        continue_on: None,
        repeat: None,
        worker_selector: None,
        call: None,
    };
    let count = Step {
        name: "count".into(),
        description: None,
        command: None,
        script: Some("wc -l input.csv\n".into()),
        shell: None,
        dir: Some("/srv".into()),
        env: vec![],
        depends: vec!["fetch".into()],
        output: Some("LINES".into()),
        retry: None,
        timeout_ms: None,
        signal_on_stop: None,
        preconditions: vec![],
        continue_on: None,
        repeat: None,
        worker_selector: None,
        call: None,
    };
    assert_eq!(dag.steps, vec![fetch, count]);
}

#[test]
fn name_defaults_to_the_given_default() {
    let dag = Dag::parse("steps:\n  - name: a\n    command: 'true'\n", "my_file.v2");
    assert_eq!(dag.map(|dag| dag.name).ok().as_deref(), Some("my_file.v2"));
}

#[test]
fn params_string_form_splits_like_a_shell() {
    let dag = ok(r#"
params: 'report.csv MODE=fast "two words" NOTE="a b" 9X=y'
steps: [{name: a, command: "true"}]
"#);
    assert_eq!(
        dag.params,
        vec![
            positional("report.csv"),
            named("MODE", "fast"),
            positional("two words"),
            named("NOTE", "a b"),
            positional("9X=y"),
        ]
    );
}

#[test]
fn params_list_form_takes_maps_strings_and_scalars() {
    let dag = ok(r#"
params:
  - FILE: report.csv
  - COUNT: 3
  - DRY: true
  - EMPTY:
  - MODE=fast
  - plain value
  - 42
steps: [{name: a, command: "true"}]
"#);
    assert_eq!(
        dag.params,
        vec![
            named("FILE", "report.csv"),
            named("COUNT", "3"),
            named("DRY", "true"),
            named("EMPTY", ""),
            named("MODE", "fast"),
            positional("plain value"),
            positional("42"),
        ]
    );
}

#[test]
fn params_map_form_keeps_order_and_stringifies() {
    let dag = ok(r#"
params:
  Z: last-declared-first
  A: 1.5
  B: false
  C: null
steps: [{name: a, command: "true"}]
"#);
    assert_eq!(
        dag.params,
        vec![
            named("Z", "last-declared-first"),
            named("A", "1.5"),
            named("B", "false"),
            named("C", ""),
        ]
    );
}

#[test]
fn params_null_declares_nothing() {
    assert!(ok("params:\nsteps: [{name: a, command: 'true'}]\n")
        .params
        .is_empty());
}

#[test]
fn env_map_form() {
    let dag = ok("env:\n  B: 2\n  A: x\n  C: true\n  D:\nsteps: [{name: a, command: 'true'}]\n");
    assert_eq!(
        dag.env,
        env(&[("B", "2"), ("A", "x"), ("C", "true"), ("D", "")])
    );
}

#[test]
fn env_list_of_maps_form_keeps_order_and_duplicates() {
    let dag = ok(r#"
env:
  - PATH: ${PATH}:/opt/bin
  - BASE: /data
  - PATH: ${PATH}:${BASE}/bin
steps: [{name: a, command: "true"}]
"#);
    assert_eq!(
        dag.env,
        env(&[
            ("PATH", "${PATH}:/opt/bin"),
            ("BASE", "/data"),
            ("PATH", "${PATH}:${BASE}/bin"),
        ])
    );
}

#[test]
fn env_list_of_strings_and_mixed_forms() {
    let dag = ok(r#"
env:
  - A=1
  - B=x=y
  - C=
  - D: 4
    E: 5
steps: [{name: a, command: "true", env: ["S=1", {T: 2}]}]
"#);
    assert_eq!(
        dag.env,
        env(&[("A", "1"), ("B", "x=y"), ("C", ""), ("D", "4"), ("E", "5")])
    );
    assert_eq!(dag.steps[0].env, env(&[("S", "1"), ("T", "2")]));
}

#[test]
fn chain_adds_the_previous_step_unless_depends_is_written() {
    let dag = ok(r#"
type: chain
steps:
  - {name: a, command: "true"}
  - {name: b, command: "true"}
  - {name: c, command: "true", depends: []}
  - {name: d, command: "true"}
  - {name: e, command: "true", depends: [a]}
  - name: f
    command: "true"
    depends:
"#);
    assert_eq!(dag.kind, DagKind::Chain);
    // A written depends adds to the implicit edge (Dagu 1.22 to 1.30); an empty one removes it.
    let expected: Vec<Vec<&str>> =
        vec![vec![], vec!["a"], vec![], vec!["c"], vec!["a", "d"], vec![]];
    assert_eq!(depends(&dag), expected);
}

#[test]
fn graph_adds_no_edges() {
    let dag =
        ok("type: graph\nsteps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n");
    assert_eq!(dag.kind, DagKind::Graph);
    assert_eq!(depends(&dag), vec![Vec::<&str>::new(), vec![]]);
}

#[test]
fn depends_are_trimmed_resolved_by_id_and_deduplicated() {
    let dag = ok(r#"
steps:
  - {name: fetch data, id: fetch, command: "true"}
  - {name: b, command: "true", depends: [" fetch data ", fetch, fetch data]}
"#);
    assert_eq!(dag.steps[1].depends, vec!["fetch data".to_owned()]);
}

#[test]
fn dependencies_and_dependents_are_index_views() {
    let dag = ok(r#"
steps:
  - {name: a, command: "true"}
  - {name: b, command: "true", depends: a}
  - {name: c, command: "true", depends: [a, b]}
  - {name: d, command: "true"}
"#);
    assert_eq!(
        dag.dependencies(),
        vec![vec![], vec![0], vec![0, 1], vec![]]
    );
    assert_eq!(dag.dependents(), vec![vec![1, 2], vec![2], vec![], vec![]]);
    assert_eq!(dag.step_index("c"), Some(2));
    assert_eq!(dag.step_index("zz"), None);
}

#[test]
fn step_fields_take_their_documented_shapes() {
    let dag = ok(r#"
steps:
  - name: "  spaced  "
    description: does things
    command: echo hi
    shell: ""
    dir: ""
    output: " $OUT "
  - name: b
    command: "true"
    output: ""
    shell: [sh, -c, "set -e"]
"#);
    let first = &dag.steps[0];
    assert_eq!(first.name, "spaced");
    assert_eq!(first.description.as_deref(), Some("does things"));
    assert_eq!(first.shell, None);
    assert_eq!(first.dir, None);
    assert_eq!(first.output.as_deref(), Some("OUT"));
    assert_eq!(dag.steps[1].output, None);
    assert_eq!(dag.steps[1].shell.as_deref(), Some("sh -c 'set -e'"));
}

#[test]
fn informational_keys_become_warnings() {
    let dag = ok(r#"
tags: [etl]
group: reports
histRetentionDays: 3
steps:
  - {name: a, command: "true", log_output: merged}
"#);
    assert_eq!(
        dag.warnings,
        vec![
            "tags: ignored by dagrid (informational)".to_owned(),
            "group: ignored by dagrid (informational)".to_owned(),
            "histRetentionDays: ignored by dagrid (informational)".to_owned(),
            "steps[0].log_output: ignored by dagrid (informational)".to_owned(),
        ]
    );
}

#[test]
fn yaml_anchors_and_merge_keys_are_resolved() {
    let dag = ok(r#"
steps:
  - &common {name: a, command: "true", shell: bash, dir: /srv}
  - <<: *common
    name: b
"#);
    assert_eq!(dag.steps[1].name, "b");
    assert_eq!(dag.steps[1].shell.as_deref(), Some("bash"));
    assert_eq!(dag.steps[1].dir.as_deref(), Some("/srv"));
    assert_eq!(dag.steps[1].command.as_deref(), Some("true"));
}

/// The example of DAGU-FORMAT.md without its unsupported parts (`preconditions`, `handlerOn`),
/// and with the `big` step's command quoted: as printed there, `echo "large file: …"` is a
/// plain scalar holding `: `, which YAML rejects (see `errors::format_example_verbatim…`).
const FORMAT_EXAMPLE_SUPPORTED: &str = r#"
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
    command: 'echo "large file: ${LINES}"'
    depends: [count]
"#;

#[test]
fn format_example_supported_parts_parse() {
    let dag = match Dag::parse(FORMAT_EXAMPLE_SUPPORTED, "example") {
        Ok(dag) => dag,
        Err(errors) => panic!("{errors}"),
    };
    assert_eq!(dag.name, "example");
    assert_eq!(dag.params, vec![positional("report.csv")]);
    assert_eq!(dag.env, env(&[("OUT", "/tmp/out")]));
    let names: Vec<&str> = dag.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(names, ["fetch", "count", "big"]);
    assert_eq!(
        dag.steps[2].command.as_deref(),
        Some("echo \"large file: ${LINES}\"")
    );
    assert_eq!(dag.steps[1].output.as_deref(), Some("LINES"));
    assert_eq!(dag.dependencies(), vec![vec![], vec![0], vec![1]]);
}

#[test]
fn from_file_uses_the_file_stem_as_default_name() {
    let dir = std::env::temp_dir().join(format!("dagwork-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nightly-report.yaml");
    std::fs::write(&path, "steps:\n  - {name: a, command: 'true'}\n").unwrap();
    let parsed = Dag::from_file(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        parsed.map(|dag| dag.name).ok().as_deref(),
        Some("nightly-report")
    );
}

#[test]
fn a_dag_round_trips_through_serde() {
    let dag = ok(V1_FILE);
    let text = serde_yaml::to_string(&dag).unwrap();
    let back: Dag = serde_yaml::from_str(&text).unwrap();
    assert_eq!(back, dag);
}

#[test]
fn display_puts_one_error_per_line() {
    let Err(error) = parse("steps: 3\nname: 'a b'\n") else {
        panic!("expected errors");
    };
    let text = error.to_string();
    assert_eq!(text.lines().count(), error.0.len());
    assert!(text.contains("steps: expected a list of steps, found a number"));
    let whole_file = DagError::new("", "no field");
    assert_eq!(whole_file.to_string(), "no field");
}

#[test]
fn a_large_graph_parses_and_indexes() {
    let steps = (0..1000).map(|index| {
        let depends: Vec<String> = (index.max(20) - 20..index)
            .map(|d| format!("s{d}"))
            .collect();
        format!(
            "  - {{name: s{index}, command: 'true', depends: [{}]}}\n",
            depends.join(", ")
        )
    });
    let dag = ok(&format!("steps:\n{}", steps.collect::<String>()));
    let dependencies = dag.dependencies();
    assert_eq!(dependencies[999], (979..999).collect::<Vec<_>>());
    assert_eq!(dag.dependents()[0], (1..=20).collect::<Vec<_>>());
}
