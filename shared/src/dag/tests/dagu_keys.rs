//! Issue 15, points 4 and 8 and DAG-level `defaults`: `continueOn` as a word, `output` as a
//! map, handlers given as a string, `defaults` merged into steps, the one refusal message for
//! every Dagu key dagrid does not run yet, multi-document files, and the docs key table kept
//! in step with the key lists.

use serde_yaml::Value;

use super::super::report::Report;
use super::super::yaml_keys::{
    CONDITION, CONTINUE_ON, DEFAULTS, HANDLER_ON, OUTPUT, RETRY_POLICY, STEP, TOP_LEVEL,
};
use super::super::{defaults, ContinueOn};
use super::{assert_error, errors, ok};

const REFUSAL: &str = "a Dagu key that dagrid does not support yet: ";

fn step_with(extra: &str) -> String {
    format!("steps:\n  - name: a\n    command: 'true'\n{extra}")
}

// --- continueOn as a word -------------------------------------------------------------------

#[test]
fn continue_on_takes_dagu_words_in_both_spellings() {
    for (key, word, failure, skipped) in [
        ("continueOn", "failed", true, false),
        ("continue_on", "skipped", false, true),
        ("continue_on", " Failed ", true, false),
        ("continueOn", "SKIPPED", false, true),
    ] {
        let dag = ok(&step_with(&format!("    {key}: '{word}'\n")));
        let expected = ContinueOn {
            failure,
            skipped,
            ..ContinueOn::default()
        };
        assert_eq!(dag.steps[0].continue_on, Some(expected), "{key}: {word}");
    }
}

#[test]
fn continue_on_takes_failed_as_a_map_key_too() {
    let dag = ok(&step_with("    continue_on: {failed: true}\n"));
    assert!(dag.steps[0].continue_on.as_ref().unwrap().failure);
    assert_error(
        &step_with("    continue_on: {failed: true, failure: true}\n"),
        "steps[0].continue_on.failure",
        "two spellings of the same key",
    );
}

#[test]
fn continue_on_exit_code_takes_numbers_in_strings_as_dagu() {
    let dag = ok(&step_with("    continue_on: {exit_code: '3'}\n"));
    assert_eq!(
        dag.steps[0].continue_on.as_ref().unwrap().exit_codes,
        vec![3]
    );
    let dag = ok(&step_with("    continue_on: {exit_code: [1, '2']}\n"));
    assert_eq!(
        dag.steps[0].continue_on.as_ref().unwrap().exit_codes,
        vec![1, 2]
    );
    assert_error(
        &step_with("    continue_on: {exit_code: 'two'}\n"),
        "steps[0].continue_on.exit_code",
        "found a string",
    );
}

#[test]
fn continue_on_refuses_other_words() {
    assert_error(
        &step_with("    continueOn: failure\n"),
        "steps[0].continueOn",
        "\"failure\" is not a continueOn word; use failed or skipped",
    );
}

// --- output as a map ------------------------------------------------------------------------

#[test]
fn output_map_gives_the_variable_name() {
    let dag = ok(&step_with("    output: {name: RESULT}\n"));
    assert_eq!(dag.steps[0].output.as_deref(), Some("RESULT"));
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
    let dag = ok(&step_with(
        "    output:\n      name: $RESULT\n      omit: false\n",
    ));
    assert_eq!(dag.steps[0].output.as_deref(), Some("RESULT"));
    assert!(dag.warnings.is_empty(), "{:?}", dag.warnings);
}

#[test]
fn output_map_key_and_omit_warn_that_dagrid_keeps_no_outputs_file() {
    let dag = ok(&step_with(
        "    output: {name: RESULT, key: result, omit: true}\n",
    ));
    assert_eq!(dag.steps[0].output.as_deref(), Some("RESULT"));
    assert_eq!(dag.warnings.len(), 2, "{:?}", dag.warnings);
    assert!(dag.warnings[0].starts_with("steps[0].output.key: ignored by dagrid"));
    assert!(dag.warnings[1].starts_with("steps[0].output.omit: ignored by dagrid"));
    assert!(dag.warnings[1].contains("still shows the value"));
}

#[test]
fn output_map_problems_are_errors() {
    assert_error(
        &step_with("    output: {name: RESULT, schema: {type: object}}\n"),
        "steps[0].output.schema",
        &format!("{REFUSAL}schema ("),
    );
    assert_error(
        &step_with("    output: {name: '  '}\n"),
        "steps[0].output.name",
        "is empty",
    );
    assert_error(
        &step_with("    output: {name: 'not a name'}\n"),
        "steps[0].output",
        "not a valid output variable name",
    );
    assert_error(
        &step_with("    output: {name: R, omit: 'yes'}\n"),
        "steps[0].output.omit",
        "true or false",
    );
    // Dagu 2.6.2's structured outputs: a map of entries, without `name`.
    let error = assert_error(
        &step_with("    output:\n      version: {from: stdout, decode: json, select: .v}\n"),
        "steps[0].output",
        &format!("{REFUSAL}output as a map of entries ("),
    );
    assert!(error.message.contains("output: NAME"), "{error}");
}

#[test]
fn a_precondition_takes_dagu_old_command_alias() {
    let dag = ok(&step_with(
        "    preconditions:\n      - command: test -d /\n",
    ));
    assert_eq!(dag.steps[0].preconditions[0].condition, "test -d /");
    assert_eq!(dag.steps[0].preconditions[0].expected, None);
}

// --- handlers given as a string -------------------------------------------------------------

#[test]
fn a_handler_given_as_a_string_is_refused_with_the_map_to_write() {
    let yaml = "steps:\n  - {name: a, command: 'true'}\nhandler_on:\n  failure: echo failed\n";
    assert_error(
        yaml,
        "handler_on.failure",
        "write it as a map, as Dagu requires: command: \"echo failed\"",
    );
}

// --- defaults -------------------------------------------------------------------------------

#[test]
fn defaults_apply_to_steps_without_their_own_value() {
    let dag = ok(r#"
type: graph
defaults:
  retry_policy: {limit: 2, interval_sec: 1}
  timeout_sec: 30
  signal_on_stop: SIGINT
  continue_on: failed
steps:
  - name: a
    command: 'true'
  - name: b
    command: 'true'
    retryPolicy: {limit: 5, intervalSec: 3}
    timeout_sec: 0
    continueOn: {skipped: true}
"#);
    let (a, b) = (&dag.steps[0], &dag.steps[1]);
    assert_eq!(
        a.retry.as_ref().map(|r| (r.limit, r.interval_ms)),
        Some((2, 1000))
    );
    assert_eq!(a.timeout_ms, Some(30_000));
    assert_eq!(a.signal_on_stop.as_deref(), Some("SIGINT"));
    assert!(a.continue_on.as_ref().unwrap().failure);
    // A step's own key wins, in either spelling, even when it says "none".
    assert_eq!(
        b.retry.as_ref().map(|r| (r.limit, r.interval_ms)),
        Some((5, 3000))
    );
    assert_eq!(b.timeout_ms, None);
    assert_eq!(b.signal_on_stop.as_deref(), Some("SIGINT"));
    let c = b.continue_on.as_ref().unwrap();
    assert!(c.skipped && !c.failure);
}

#[test]
fn defaults_env_and_preconditions_come_before_the_steps_own() {
    let dag = ok(r#"
type: graph
defaults:
  env: {A: from-defaults, B: from-defaults}
  preconditions: test -d /tmp
steps:
  - name: a
    command: 'true'
  - name: b
    command: 'true'
    env:
      - B=own
    preconditions:
      - condition: "${B}"
        expected: own
"#);
    let env = |i: usize| -> Vec<(String, String)> {
        let vars = dag.steps[i].env.iter();
        vars.map(|v| (v.name.clone(), v.value.clone())).collect()
    };
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        env(0),
        vec![pair("A", "from-defaults"), pair("B", "from-defaults")]
    );
    assert_eq!(
        env(1),
        vec![
            pair("A", "from-defaults"),
            pair("B", "from-defaults"),
            pair("B", "own")
        ],
        "the step's B comes last, so it wins"
    );
    let conditions = |i: usize| -> Vec<String> {
        let all = dag.steps[i].preconditions.iter();
        all.map(|c| c.condition.clone()).collect()
    };
    assert_eq!(conditions(0), vec!["test -d /tmp".to_string()]);
    assert_eq!(
        conditions(1),
        vec!["test -d /tmp".to_string(), "${B}".to_string()]
    );
}

#[test]
fn defaults_apply_to_handlers_except_continue_on() {
    let dag = ok(r#"
defaults:
  continue_on: skipped
  timeout_sec: 5
steps:
  - {name: a, command: 'true'}
handler_on:
  exit:
    command: echo done
"#);
    let exit = dag.handlers.exit.as_ref().unwrap();
    assert_eq!(exit.timeout_ms, Some(5_000));
    assert_eq!(exit.continue_on, None);
    assert!(dag.steps[0].continue_on.as_ref().unwrap().skipped);
}

#[test]
fn defaults_reach_string_nested_and_map_form_steps() {
    let mut root: Value = serde_yaml::from_str(
        r#"
defaults: {timeout_sec: 7, env: [X=1]}
steps:
  - echo one
  - [echo two, {command: echo three, env: {Y: 2}}]
"#,
    )
    .unwrap();
    let mut report = Report::default();
    defaults::apply(&mut root, &mut report);
    let expected: Value = serde_yaml::from_str(
        r#"
defaults: {timeout_sec: 7, env: [X=1]}
steps:
  - {command: echo one, timeout_sec: 7, env: [X=1]}
  - - {command: echo two, timeout_sec: 7, env: [X=1]}
    - {command: echo three, env: [X=1, {Y: 2}], timeout_sec: 7}
"#,
    )
    .unwrap();
    assert_eq!(root, expected);

    let mut root: Value = serde_yaml::from_str(
        "defaults: {timeout_sec: 7}\nsteps:\n  a: {command: x}\n  b: echo b\nhandler_on:\n  exit: echo x\n",
    )
    .unwrap();
    defaults::apply(&mut root, &mut report);
    assert_eq!(root["steps"]["a"]["timeout_sec"], Value::from(7));
    // Strings are step shorthand in the steps list only, as in Dagu.
    assert_eq!(root["steps"]["b"], Value::from("echo b"));
    assert_eq!(root["handler_on"]["exit"], Value::from("echo x"));
    assert!(report.finish().unwrap().is_empty());
}

#[test]
fn defaults_problems_are_errors_at_defaults() {
    let with = |defaults: &str| {
        format!("defaults: {defaults}\nsteps:\n  - {{name: a, command: 'true'}}\n")
    };
    assert_error(&with("[1]"), "defaults", "expected a map of step keys");
    assert_error(
        &with("{mail_on_error: true}"),
        "defaults.mail_on_error",
        &format!("{REFUSAL}mail_on_error (dagrid sends no mail"),
    );
    assert_error(
        &with("{agent: {model: x}}"),
        "defaults.agent",
        &format!("{REFUSAL}agent ("),
    );
    assert_error(
        &with("{timeout: 3}"),
        "defaults.timeout",
        "unknown key \"timeout\"",
    );
    // A bad default value is reported once, at defaults, and not merged.
    let found = errors(
        "defaults: {timeout_sec: soon, retry_policy: {limit: -1}}\nsteps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n",
    );
    let fields: Vec<&str> = found.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["defaults.timeout_sec", "defaults.retry_policy.limit"],
        "{found:?}"
    );

    // The refusal is given once, not once per step.
    let found = errors(
        "defaults: {mailOnError: true}\nsteps:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
}

// --- workerSelector ---------------------------------------------------------------------------

#[test]
fn worker_selector_is_a_map_of_labels_read_as_text() {
    for key in ["workerSelector", "worker_selector"] {
        let yaml = format!(
            "{key}: {{gpu: true, region: eu, cores: 8}}\nsteps:\n  - {{name: a, command: 'true'}}\n"
        );
        let dag = ok(&yaml);
        assert_eq!(
            dag.worker_selector.canonical(),
            "cores=8,gpu=true,region=eu"
        );
    }
    let none = ok("steps:\n  - {name: a, command: 'true'}\n");
    assert!(none.worker_selector.is_empty());
    // Dagu's "local" (run on the Dagu instance itself): no selector, with a warning.
    let local = ok("workerSelector: local\nsteps:\n  - {name: a, command: 'true'}\n");
    assert!(local.worker_selector.is_empty());
    assert!(
        local.warnings.iter().any(|w| w.contains("local")),
        "{:?}",
        local.warnings
    );
}

#[test]
fn a_step_worker_selector_replaces_the_dags_for_that_step() {
    for key in ["workerSelector", "worker_selector"] {
        let yaml = format!(
            "workerSelector: {{gpu: true}}\nsteps:\n  - {{name: a, command: 'true', {key}: {{zone: b}}}}\n  - {{name: b, command: 'true', {key}: {{}}}}\n  - {{name: c, command: 'true'}}\n  - {{name: d, command: 'true', {key}: null}}\nhandlerOn:\n  exit: {{command: 'true', {key}: {{disk: ssd}}}}\n"
        );
        let dag = ok(&yaml);
        let of = |n: &str| dag.steps.iter().find(|s| s.name == n).unwrap();
        assert_eq!(
            of("a").worker_selector.as_ref().unwrap().canonical(),
            "zone=b"
        );
        // `{}`: any worker; no key or null: the DAG's.
        assert!(of("b").worker_selector.as_ref().unwrap().is_empty());
        assert_eq!(of("c").worker_selector, None);
        assert_eq!(of("d").worker_selector, None);
        assert_eq!(dag.selector_of("a"), "zone=b");
        assert_eq!(dag.selector_of("b"), "");
        assert_eq!(dag.selector_of("c"), "gpu=true");
        assert_eq!(dag.selector_of("d"), "gpu=true");
        assert_eq!(dag.selector_of("onExit"), "disk=ssd");
        // An unknown step: the DAG's.
        assert_eq!(dag.selector_of("nope"), "gpu=true");
        // The run's streams: the DAG's selector first, then the other selectors of its steps.
        assert_eq!(dag.selectors(), vec!["gpu=true", "", "disk=ssd", "zone=b"]);
        assert_eq!(dag.selector_index("c"), 0);
        assert_eq!(dag.selector_index("b"), 1);
        assert_eq!(dag.selector_index("onExit"), 2);
        assert_eq!(dag.selector_index("a"), 3);
    }
    // Without step selectors: one stream, and the digest of the DAG is unchanged (no key).
    let plain = ok("workerSelector: {gpu: true}\nsteps:\n  - {name: a, command: 'true'}\n");
    assert_eq!(plain.selectors(), vec!["gpu=true"]);
    assert!(!serde_json::to_string(&plain.steps[0])
        .unwrap()
        .contains("worker_selector"));
    // A bad step selector names its field.
    assert_error(
        "steps:\n  - {name: a, command: 'true', workerSelector: [gpu]}\n",
        "steps[0].workerSelector",
        "a map of the labels",
    );
}

#[test]
fn a_bad_worker_selector_names_the_label_and_the_rule() {
    for (yaml_value, field, needle) in [
        ("[gpu]", "workerSelector", "a map of the labels"),
        ("somewhere", "workerSelector", "a map of the labels"),
        (
            "{gpu: [a]}",
            "workerSelector.gpu",
            "string, number or boolean",
        ),
        ("{'a b': x}", "workerSelector.a b", "label key"),
        ("{gpu: 'x y'}", "workerSelector.gpu", "value"),
    ] {
        let yaml =
            format!("workerSelector: {yaml_value}\nsteps:\n  - {{name: a, command: 'true'}}\n");
        assert_error(&yaml, field, needle);
    }
}

// --- the refusal of every other Dagu key ----------------------------------------------------

#[test]
fn dagu_top_level_keys_dagrid_does_not_run_get_one_message_with_advice() {
    for (key, advice) in [
        ("step_types", "shell steps only"),
        ("artifacts", "no artifact directory"),
        ("webhook", "dagrid's API"),
        ("container", "shell steps only"),
        ("smtp", "sends no mail"),
        ("secrets", "env or params"),
        ("functions", "call:"),
        ("kubernetes", "shell steps only"),
    ] {
        let yaml = format!("{key}: {{}}\nsteps:\n  - {{name: a, command: 'true'}}\n");
        let error = assert_error(&yaml, key, &format!("{REFUSAL}{key} ("));
        assert!(error.message.contains(advice), "{error}");
    }
}

#[test]
fn dagu_step_keys_dagrid_does_not_run_get_one_message_with_advice() {
    for (key, advice) in [
        ("container", "shell steps only"),
        ("tools", "shell steps only"),
        ("exec", "in command instead"),
        ("stdout", "> FILE"),
        ("approval", "shell steps only"),
    ] {
        let yaml = format!("steps:\n  - {{name: a, command: 'true', {key}: x}}\n");
        let error = assert_error(
            &yaml,
            &format!("steps[0].{key}"),
            &format!("{REFUSAL}{key} ("),
        );
        assert!(error.message.contains(advice), "{error}");
    }
    let yaml = "steps:\n  - {name: a, command: 'true'}\nhandler_on:\n  init: {command: x}\n";
    assert_error(yaml, "handler_on.init", &format!("{REFUSAL}init ("));
}

#[test]
fn storage_keys_only_warn() {
    let dag = ok(
        "hist_retention_runs: 10\nhistRetentionDays: 3\nsteps:\n  - {name: a, command: 'true'}\n",
    );
    assert_eq!(
        dag.warnings,
        vec![
            "hist_retention_runs: ignored by dagrid (informational)".to_string(),
            "histRetentionDays: ignored by dagrid (informational)".to_string(),
        ]
    );
}

/// The keys of Dagu's current DAG schema (`internal/cmn/schema/dag.schema.json` and the Go
/// structs of `spec/dag.go`, `spec/step.go`), and the v1 keys of older releases: each must be
/// known to dagrid (supported, refused with the message above, or a warning), never an
/// "unknown key".
#[test]
fn every_key_of_dagu_schema_is_known() {
    const TOP: &[&str] = &[
        "name",
        "description",
        "group",
        "dotenv",
        "working_dir",
        "schedule",
        "skip_if_successful",
        "catchup_window",
        "overlap_policy",
        "labels",
        "tags",
        "type",
        "env",
        "secrets",
        "defaults",
        "retry_policy",
        "log_dir",
        "artifacts",
        "log_output",
        "handler_on",
        "step_types",
        "smtp",
        "mail_on",
        "error_mail",
        "info_mail",
        "wait_mail",
        "timeout_sec",
        "delay_sec",
        "restart_wait_sec",
        "hist_retention_days",
        "hist_retention_runs",
        "max_active_runs",
        "queue",
        "max_active_steps",
        "max_clean_up_time_sec",
        "max_output_size",
        "preconditions",
        "params",
        "container",
        "registry_auths",
        "ssh",
        "s3",
        "llm",
        "harness",
        "harnesses",
        "steps",
        "otel",
        "run_config",
        "webhook",
        "worker_selector",
        "shell",
        "redis",
        "kubernetes",
        // v1 spellings and keys of older releases.
        "workingDir",
        "skipIfSuccessful",
        "catchupWindow",
        "overlapPolicy",
        "logDir",
        "logOutput",
        "handlerOn",
        "mailOn",
        "errorMail",
        "infoMail",
        "waitMail",
        "timeoutSec",
        "delaySec",
        "restartWaitSec",
        "histRetentionDays",
        "histRetentionRuns",
        "maxActiveRuns",
        "maxActiveSteps",
        "maxCleanUpTimeSec",
        "maxOutputSize",
        "precondition",
        "runConfig",
        "workerSelector",
        "registryAuths",
        "retryPolicy",
        "artifactDir",
        "enableArtifact",
        "functions",
    ];
    const STEP_KEYS: &[&str] = &[
        "name",
        "id",
        "description",
        "working_dir",
        "command",
        "exec",
        "shell",
        "shell_packages",
        "script",
        "stdout",
        "stderr",
        "log_output",
        "output",
        "depends",
        "continue_on",
        "retry_policy",
        "repeat_policy",
        "mail_on_error",
        "preconditions",
        "signal_on_stop",
        "timeout_sec",
        "call",
        "params",
        "parallel",
        "worker_selector",
        "env",
        "container",
        "type",
        "with",
        "config",
        "llm",
        "agent",
        "approval",
        "messages",
        "tools",
        "value",
        "routes",
        // v1 spellings and keys of older releases.
        "dir",
        "workingDir",
        "executor",
        "run",
        "precondition",
        "shellPackages",
        "logOutput",
        "continueOn",
        "retryPolicy",
        "repeatPolicy",
        "mailOnError",
        "signalOnStop",
        "timeoutSec",
        "workerSelector",
    ];
    let top = TOP_LEVEL.every_spelling();
    let unknown: Vec<_> = TOP.iter().filter(|k| !top.contains(k)).collect();
    assert!(
        unknown.is_empty(),
        "top-level keys unknown to dagrid: {unknown:?}"
    );
    let step = STEP.every_spelling();
    let unknown: Vec<_> = STEP_KEYS.iter().filter(|k| !step.contains(k)).collect();
    assert!(
        unknown.is_empty(),
        "step keys unknown to dagrid: {unknown:?}"
    );
    let handlers = HANDLER_ON.every_spelling();
    for key in [
        "init", "failure", "success", "abort", "cancel", "exit", "wait",
    ] {
        assert!(handlers.contains(&key), "handler_on.{key}");
    }
    let continue_on = CONTINUE_ON.every_spelling();
    for key in [
        "failure",
        "failed",
        "skipped",
        "exit_code",
        "output",
        "mark_success",
    ] {
        assert!(continue_on.contains(&key), "continue_on.{key}");
    }
}

// --- multi-document files -------------------------------------------------------------------

#[test]
fn empty_documents_do_not_count() {
    let dag = ok("---\nname: main\nsteps:\n  - {name: a, command: 'true'}\n---\n");
    assert_eq!(dag.name, "main");
    let dag = ok("---\n---\nsteps:\n  - {name: a, command: 'true'}\n");
    assert_eq!(dag.steps.len(), 1);
}

// --- docs/dag-format.md ---------------------------------------------------------------------

/// The part of docs/dag-format.md between `heading` and the next heading of the same level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/dag-format.md has no {heading:?}"));
    let level = heading.split(' ').next().unwrap_or_default();
    let rest = &doc[start + heading.len()..];
    let end = rest
        .match_indices(&format!("\n{level} "))
        .map(|(i, _)| i)
        .next()
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_docs_key_table_lists_every_key_dagrid_knows() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dag-format.md");
    let doc = std::fs::read_to_string(path).expect("read docs/dag-format.md");
    let all = section(&doc, "## Every Dagu key");
    let top = section(all, "### Top level");
    let step = section(all, "### Step level");
    let missing = |part: &str, keys: Vec<&'static str>| -> Vec<&'static str> {
        keys.into_iter()
            .filter(|key| !part.contains(&format!("`{key}`")))
            .collect()
    };
    let mut nested = Vec::new();
    nested.extend(RETRY_POLICY.every_spelling());
    nested.extend(HANDLER_ON.every_spelling());
    nested.extend(CONDITION.every_spelling());
    nested.extend(CONTINUE_ON.every_spelling());
    nested.extend(DEFAULTS.every_spelling());
    nested.extend(OUTPUT.every_spelling());
    let gaps = [
        ("### Top level", missing(top, TOP_LEVEL.every_spelling())),
        ("### Step level", missing(step, STEP.every_spelling())),
        ("## Every Dagu key", missing(all, nested)),
    ];
    for (part, keys) in gaps {
        assert!(
            keys.is_empty(),
            "docs/dag-format.md, {part}: no row names {keys:?}; add them to the key table"
        );
    }
}
