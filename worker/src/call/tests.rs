use std::collections::HashMap;

use dagrid_shared::dag::{Parallel, DEFAULT_MAX_CONCURRENT};

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn plan_with(call: &Call, vars: &HashMap<String, String>) -> Result<CallPlan, String> {
    plan(call, &|n| vars.get(n).cloned())
}

fn call(dag: &str, params: &[(Option<&str>, &str)], parallel: Option<ParallelItems>) -> Call {
    Call {
        dag: dag.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.map(str::to_string), v.to_string()))
            .collect(),
        parallel: parallel.map(|items| Parallel {
            items,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }),
    }
}

fn named(pairs: &[(&str, &str)]) -> Vec<(Option<String>, String)> {
    pairs
        .iter()
        .map(|(k, v)| (Some(k.to_string()), v.to_string()))
        .collect()
}

fn positional(v: &str) -> Vec<(Option<String>, String)> {
    vec![(None, v.to_string())]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn items_split_as_dagu_parse_separated_values() {
    // JSON array: strings as text, others as JSON, null as "null".
    assert_eq!(
        split_items(r#" ["a b", 1, 2.5, true, null, {"k":"v"}, [1,2]] "#),
        strings(&["a b", "1", "2.5", "true", "null", r#"{"k":"v"}"#, "[1,2]"])
    );
    // A JSON object is one item.
    assert_eq!(split_items(r#"{"a": 1}"#), strings(&[r#"{"a": 1}"#]));
    // Lines: trimmed, empty ones dropped; a line break wins over other separators.
    assert_eq!(
        split_items("a.txt\n\n  b c.txt \r\nd,e\n"),
        strings(&["a.txt", "b c.txt", "d,e"])
    );
    // Quoted strings and bare words.
    assert_eq!(
        split_items(r#""item one" "item two" three """#),
        strings(&["item one", "item two", "three", ""])
    );
    assert_eq!(split_items(r#""é ü" ø"#), strings(&["é ü", "ø"]));
    // The most frequent separator; a tie goes to the earlier of tab, pipe, semicolon, comma.
    assert_eq!(split_items("a, b,,c"), strings(&["a", "b", "c"]));
    assert_eq!(split_items("a;b;c,d"), strings(&["a", "b", "c,d"]));
    assert_eq!(split_items("a|b;c"), strings(&["a", "b;c"]));
    assert_eq!(split_items("a\tb c"), strings(&["a", "b c"]));
    // Spaces; a JSON scalar alone is one item.
    assert_eq!(split_items("  x  y\tz "), strings(&["x  y", "z"]));
    assert_eq!(split_items("x y  z"), strings(&["x", "y", "z"]));
    assert_eq!(split_items("42"), strings(&["42"]));
    // Nothing.
    assert!(split_items(" \n\t ").is_empty());
    assert!(split_items("[]").is_empty());
    // Invalid JSON is text.
    assert_eq!(split_items("[a, b]"), strings(&["[a", "b]"]));
}

#[test]
fn a_single_call_expands_the_name_and_params_and_keeps_names() {
    let vars = env(&[("REGION", "eu"), ("OUT", "report.csv"), ("1", "first")]);
    let c = call(
        "etl-${REGION}",
        &[
            (Some("FILE"), "${OUT}"),
            (None, "$1"),
            (Some("RAW"), "$$HOME ${NOPE}x"),
        ],
        None,
    );
    let plan = plan_with(&c, &vars).unwrap();
    assert_eq!(plan.dag, "etl-eu");
    assert_eq!(plan.parallel, None);
    assert_eq!(
        plan.children,
        vec![vec![
            (Some("FILE".into()), "report.csv".into()),
            (None, "first".into()),
            (Some("RAW".into()), "$$HOME x".into()),
        ]]
    );
    // No params: one child without params.
    let plan = plan_with(&call("child", &[], None), &vars).unwrap();
    assert_eq!(plan.children, vec![Vec::new()]);
}

#[test]
fn a_value_of_the_environment_is_never_expanded_again() {
    let vars = env(&[("P", "${SECRET} $(rm -rf /)"), ("SECRET", "s3cr3t")]);
    let c = call(
        "child",
        &[(Some("X"), "${P}"), (Some("I"), "${ITEM}")],
        Some(ParallelItems::List(vec![ParallelItem::Value(
            "${P}".into(),
        )])),
    );
    let plan = plan_with(&c, &vars).unwrap();
    assert_eq!(
        plan.children,
        vec![named(&[
            ("X", "${SECRET} $(rm -rf /)"),
            ("I", "${SECRET} $(rm -rf /)")
        ])]
    );
}

#[test]
fn parallel_list_items_without_params_become_positional_or_named_params() {
    let vars = env(&[("DAY", "mon")]);
    let c = call(
        "per-file",
        &[],
        Some(ParallelItems::List(vec![
            ParallelItem::Value("a-${DAY}.txt".into()),
            ParallelItem::Params(vec![
                ("SRC".into(), "s3://${DAY}".into()),
                ("N".into(), "2".into()),
            ]),
            ParallelItem::Value("a-${DAY}.txt".into()),
        ])),
    );
    let plan = plan_with(&c, &vars).unwrap();
    assert_eq!(plan.dag, "per-file");
    assert_eq!(plan.parallel, Some(DEFAULT_MAX_CONCURRENT));
    assert_eq!(
        plan.children,
        vec![
            positional("a-mon.txt"),
            named(&[("N", "2"), ("SRC", "s3://mon")]),
            positional("a-mon.txt"),
        ],
        "fields by name; duplicates kept for the coordinator to deduplicate"
    );
}

#[test]
fn parallel_params_see_item_and_item_fields() {
    let vars = env(&[("BUCKET", "b1"), ("ITEM", "not this one")]);
    let c = call(
        "child",
        &[
            (Some("WHOLE"), "$ITEM"),
            (Some("PATH"), "${BUCKET}/${ITEM.file}"),
            (Some("DEEP"), "${ITEM.meta.size}-${ITEM.missing}"),
            (None, "${ITEM.n}"),
        ],
        Some(ParallelItems::Variable("${FILES}".into())),
    );
    let files = r#"[{"file":"a.txt","n":3,"meta":{"size":10}}, "plain", {"file":"$BUCKET"}]"#;
    let mut vars = vars;
    vars.insert("FILES".into(), files.into());
    let plan = plan_with(&c, &vars).unwrap();
    let first: serde_json::Value = serde_json::from_str(&plan.children[0][0].1).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"file": "a.txt", "n": 3, "meta": {"size": 10}})
    );
    assert_eq!(
        plan.children[0][1..],
        [
            (Some("PATH".into()), "b1/a.txt".into()),
            (Some("DEEP".into()), "10-".into()),
            (None, "3".into()),
        ]
    );
    assert_eq!(
        plan.children[1],
        vec![
            (Some("WHOLE".into()), "plain".into()),
            (Some("PATH".into()), "b1/".into()),
            (Some("DEEP".into()), "-".into()),
            (None, "".into()),
        ],
        "a scalar item has no fields"
    );
    assert_eq!(
        plan.children[2][1],
        (Some("PATH".into()), "b1/$BUCKET".into()),
        "a field's value is inserted verbatim"
    );
}

#[test]
fn parallel_variable_items_without_params() {
    let vars = env(&[
        ("LINES", "one.txt\ntwo.txt\n"),
        ("OBJS", r#"[{"k":"v","n":1,"b":true,"o":{"x":null}}, 7]"#),
    ]);
    let c = call(
        "child",
        &[],
        Some(ParallelItems::Variable("${LINES}".into())),
    );
    let plan = plan_with(&c, &vars).unwrap();
    assert_eq!(
        plan.children,
        vec![positional("one.txt"), positional("two.txt")]
    );
    let c = call("child", &[], Some(ParallelItems::Variable("$OBJS".into())));
    let plan = plan_with(&c, &vars).unwrap();
    assert_eq!(
        plan.children,
        vec![
            named(&[
                ("b", "true"),
                ("k", "v"),
                ("n", "1"),
                ("o", r#"{"x":null}"#)
            ]),
            positional("7"),
        ]
    );
}

#[test]
fn the_child_dag_name_may_use_item_but_must_be_one_dag() {
    let vars = env(&[]);
    let list = |items: &[&str]| {
        Some(ParallelItems::List(
            items
                .iter()
                .map(|i| ParallelItem::Value(i.to_string()))
                .collect(),
        ))
    };
    let same = call("job-${ITEM}", &[], list(&["x", "x"]));
    assert_eq!(plan_with(&same, &vars).unwrap().dag, "job-x");
    let differ = call("job-${ITEM}", &[], list(&["x", "y"]));
    let err = plan_with(&differ, &vars).unwrap_err();
    assert!(
        err.contains("job-x") && err.contains("job-y") && err.contains("item 2"),
        "{err}"
    );
}

#[test]
fn errors_name_the_problem() {
    let vars = env(&[("EMPTY", " \n "), ("BAD", "a/b")]);
    let empty = call(
        "child",
        &[],
        Some(ParallelItems::Variable("${EMPTY}".into())),
    );
    let err = plan_with(&empty, &vars).unwrap_err();
    assert!(
        err.starts_with("parallel: ${EMPTY} expanded to no items; "),
        "{err}"
    );
    let none = call("child", &[], Some(ParallelItems::List(Vec::new())));
    assert!(plan_with(&none, &vars)
        .unwrap_err()
        .contains("lists no items"));

    let many = "x\n".repeat(MAX_PARALLEL_ITEMS + 1);
    let vars_many = env(&[("MANY", many.as_str())]);
    let over = call("child", &[], Some(ParallelItems::Variable("$MANY".into())));
    let err = plan_with(&over, &vars_many).unwrap_err();
    assert!(
        err.contains(&format!("{} items", MAX_PARALLEL_ITEMS + 1)),
        "{err}"
    );

    for template in ["${NOPE}", "${BAD}", "..", &"x".repeat(65)] {
        let err = plan_with(&call(template, &[], None), &vars).unwrap_err();
        assert!(
            err.starts_with("call: the child DAG's name") && err.contains(NAME_RULE),
            "{template}: {err}"
        );
    }

    let big = "y".repeat(MAX_PARAM_VALUE_BYTES + 1);
    let vars_big = env(&[("BIG", big.as_str())]);
    let err = plan_with(&call("child", &[(Some("P"), "$BIG")], None), &vars_big).unwrap_err();
    assert!(
        err.contains("param P is") && err.contains("at most"),
        "{err}"
    );
    let fan = call(
        "child",
        &[],
        Some(ParallelItems::List(vec![
            ParallelItem::Value("ok".into()),
            ParallelItem::Value("$BIG".into()),
        ])),
    );
    let err = plan_with(&fan, &vars_big).unwrap_err();
    assert!(
        err.contains("positional param 1 of the child run for item 2"),
        "{err}"
    );
    // Values within the limit each, over the run's total together.
    let third = "h".repeat(MAX_PARAMS_BYTES / 3 + 1);
    let vars_third = env(&[("H", third.as_str())]);
    let err = plan_with(
        &call(
            "child",
            &[(None, "$H"), (Some("Q"), "$H"), (None, "$H")],
            None,
        ),
        &vars_third,
    )
    .unwrap_err();
    assert!(err.contains("add up to") && err.contains("64 KiB"), "{err}");
    // Exactly the limit is fine.
    let edge = "z".repeat(MAX_PARAM_VALUE_BYTES);
    let vars_edge = env(&[("E", edge.as_str())]);
    assert!(plan_with(&call("child", &[(None, "$E")], None), &vars_edge).is_ok());
}

#[test]
fn the_whole_plan_is_bounded() {
    let value = "v".repeat(MAX_PARAM_VALUE_BYTES);
    let n = MAX_CALL_PLAN_BYTES / value.len() + 1;
    let vars = env(&[("V", value.as_str())]);
    let items = vec![ParallelItem::Value("$V".into()); n];
    let c = call("child", &[], Some(ParallelItems::List(items)));
    let err = plan_with(&c, &vars).unwrap_err();
    assert!(
        err.contains("64 MiB") && err.contains(&format!("at item {n} of {n}")),
        "{err}"
    );
}
