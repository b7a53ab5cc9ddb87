//! The unknown-key policy: unsupported Dagu keys, informational keys, unknown keys, and two
//! spellings of one key.

use super::super::names::{bounded_distance, suggest};
use super::{assert_error, errors, ok};

#[test]
fn unsupported_top_level_keys_are_errors_in_both_spellings() {
    for key in ["signalOnStop", "mailOn", "smtp"] {
        let yaml = format!("{key}: x\nsteps:\n  - {{name: a, command: 'true'}}\n");
        assert_error(
            &yaml,
            key,
            &format!("a Dagu key that dagrid does not support yet: {key} ("),
        );
    }
}

#[test]
fn unsupported_step_keys_are_errors_in_both_spellings() {
    for key in ["mailOnError", "executor", "stdout", "stderr", "type"] {
        let yaml = format!("steps:\n  - {{name: a, command: 'true', {key}: x}}\n");
        assert_error(
            &yaml,
            &format!("steps[0].{key}"),
            &format!("a Dagu key that dagrid does not support yet: {key} ("),
        );
    }
}

#[test]
fn informational_keys_in_both_spellings_only_warn() {
    let dag = ok(r#"
labels: [a]
hist_retention_days: 3
logDir: /var/log
steps: [{name: a, command: "true", logOutput: merged}]
"#);
    assert_eq!(dag.warnings.len(), 4, "{:?}", dag.warnings);
    assert!(dag.warnings[3].starts_with("steps[0].logOutput: ignored by dagrid"));
}

#[test]
fn unknown_key_suggests_the_closest_known_key() {
    let yaml = "stpes: []\nsteps:\n  - {name: a, commnd: 'true'}\n  - {name: b, command: 'true', WorkingDir: /x, dependson: a}\n";
    assert_error(
        yaml,
        "stpes",
        "unknown key \"stpes\"; did you mean \"steps\"?",
    );
    assert_error(yaml, "steps[0].commnd", "did you mean \"command\"?");
    assert_error(yaml, "steps[1].WorkingDir", "did you mean \"workingDir\"?");
    assert_error(yaml, "steps[1].dependson", "did you mean \"depends\"?");
}

#[test]
fn unknown_key_without_a_close_match_lists_valid_keys() {
    let yaml = "steps:\n  - {name: a, command: 'true', frobnicate: 1}\n";
    let error = assert_error(
        yaml,
        "steps[0].frobnicate",
        "unknown key \"frobnicate\"; valid keys here:",
    );
    assert!(error.message.contains("depends"));
    assert!(error.message.contains("working_dir"));
}

#[test]
fn two_spellings_of_one_key_are_an_error() {
    let yaml = "steps:\n  - {name: a, command: 'true', dir: /a, workingDir: /b}\n";
    assert_error(
        yaml,
        "steps[0].workingDir",
        "\"dir\" and \"workingDir\" are two spellings of the same key; keep one",
    );
    let yaml = "tags: [a]\nlabels: [b]\nsteps:\n  - {name: a, command: 'true'}\n";
    assert_error(yaml, "labels", "\"tags\" and \"labels\" are two spellings");
    let yaml = "steps:\n  - {name: a, command: 'true', precondition: x, preconditions: y}\n";
    assert!(errors(yaml)
        .iter()
        .any(|error| error.message.contains("two spellings")));
}

#[test]
fn suggestions_need_to_be_close() {
    assert_eq!(suggest("nam", ["name", "env"]), Some("name"));
    assert_eq!(
        suggest("timeout_secs", ["timeoutSec", "timeout_sec"]),
        Some("timeoutSec")
    );
    assert_eq!(suggest("xyz", ["env", "dir"]), None);
    assert_eq!(suggest("ab", ["id"]), None);
}

#[test]
fn bounded_distance_on_examples() {
    let chars = |text: &str| text.chars().collect::<Vec<_>>();
    let cases = [
        ("kitten", "sitting", 3),
        ("", "ab", 2),
        ("ab", "", 2),
        ("flaw", "lawn", 2),
        ("same", "same", 0),
        ("abc", "acb", 1),
        ("stpes", "steps", 1),
    ];
    for (a, b, distance) in cases {
        let within = |max| bounded_distance(&chars(a), &chars(b), max);
        assert_eq!(within(distance), Some(distance), "{a} {b}");
        assert_eq!(within(distance + 2), Some(distance), "{a} {b}");
        if distance > 0 {
            assert_eq!(within(distance - 1), None, "{a} {b}");
        }
    }
}
