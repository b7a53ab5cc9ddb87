//! Property tests: `Dag::parse` never panics, and what it accepts is a valid DAG.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

use super::super::names::bounded_distance;
use super::super::Dag;

const WORDS: &[&str] = &[
    "name",
    "steps",
    "depends",
    "command",
    "script",
    "params",
    "env",
    "type",
    "id",
    "output",
    "shell",
    "dir",
    "workingDir",
    "working_dir",
    "chain",
    "graph",
    "preconditions",
    "tags",
    "description",
    "a",
    "b",
    "c",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        "[a-zA-Z_$=. 0-9/'\"-]{0,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        word().prop_map(Value::String),
    ]
}

fn mapping(entries: Vec<(String, Value)>) -> Value {
    let entries = entries.into_iter();
    Value::Mapping(
        entries
            .map(|(key, value)| (Value::String(key), value))
            .collect(),
    )
}

/// Any small YAML document, with keys biased towards the ones dagrid reads.
fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((word(), inner), 0..6).prop_map(mapping),
        ]
    })
}

const STEP_NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// A DAG-shaped document: steps with names from a small pool and random `depends`, so
/// duplicates, unknown targets and cycles all occur.
fn dag_document() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(STEP_NAMES).prop_map(str::to_owned);
    let depends = prop::collection::vec(name.clone(), 0..3);
    let step =
        (name, prop::option::of(depends), any::<bool>()).prop_map(|(name, depends, script)| {
            let action = if script { "script" } else { "command" };
            let mut entries = vec![
                ("name".to_owned(), Value::String(name)),
                (action.to_owned(), Value::String("true".to_owned())),
            ];
            if let Some(depends) = depends {
                let depends = depends.into_iter().map(Value::String).collect();
                entries.push(("depends".to_owned(), Value::Sequence(depends)));
            }
            mapping(entries)
        });
    let kind = prop::sample::select(&["graph", "chain"][..]);
    (prop::collection::vec(step, 1..6), kind).prop_map(|(steps, kind)| {
        let mut top = Mapping::new();
        top.insert("type".into(), Value::String(kind.to_owned()));
        top.insert("steps".into(), Value::Sequence(steps));
        Value::Mapping(top)
    })
}

/// What every parsed DAG satisfies: unique names, resolvable depends, no cycle.
fn assert_valid(dag: &Dag) {
    let names: HashSet<&str> = dag.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(names.len(), dag.steps.len(), "step names are unique");
    let dependencies = dag.dependencies();
    for (step, targets) in dag.steps.iter().zip(&dependencies) {
        assert_eq!(step.depends.len(), targets.len(), "every depends resolves");
    }
    // Kahn's algorithm visits every step exactly when there is no cycle.
    let dependents = dag.dependents();
    let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut ready: VecDeque<usize> = (0..dag.steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut visited = 0;
    while let Some(step) = ready.pop_front() {
        visited += 1;
        for &next in &dependents[step] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push_back(next);
            }
        }
    }
    assert_eq!(visited, dag.steps.len(), "no cycle");
}

fn check(yaml: &str) {
    match Dag::parse(yaml, "prop") {
        Ok(dag) => assert_valid(&dag),
        Err(errors) => assert!(!errors.0.is_empty()),
    }
}

/// The plain optimal-string-alignment distance (Levenshtein plus adjacent swaps).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut value = (rows[i - 1][j - 1] + cost)
                .min(rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                value = value.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = value;
        }
    }
    rows[a.len()][b.len()]
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_strings(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_like_text(text in "[a-z:\\-\\[\\]{}\n #&*!|>'\"=$<,]{0,200}") {
        check(&text);
    }

    #[test]
    fn parse_never_panics_on_small_yaml_documents(document in document()) {
        let text = serde_yaml::to_string(&document).unwrap_or_default();
        check(&text);
    }

    #[test]
    fn accepted_dag_documents_are_valid(document in dag_document()) {
        let text = serde_yaml::to_string(&document).unwrap_or_default();
        check(&text);
    }

    #[test]
    fn bounded_distance_agrees_with_the_plain_distance(
        a in "[abc]{0,8}",
        b in "[abc]{0,8}",
        max in 0usize..4,
    ) {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let exact = edit_distance(&a, &b);
        let expected = (exact <= max).then_some(exact);
        prop_assert_eq!(bounded_distance(&a, &b, max), expected);
    }
}
