//! The Dagu compatibility examples of `examples/dagu/`: every file there is registered on a
//! test cluster and run (with the params of its cases below), and each run's final status and
//! every step's final state (handler steps included; attempt, exit code and output where they
//! matter) are checked against the expectation table. A file without an expectation fails the
//! test, so a new example must say what it does. A second test checks that the set shows each
//! semantic in both of Dagu's key styles, and a third that `dagrid validate` accepts them all.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{dagrid_bin, Cluster, Options};
use serde_json::{json, Value};

/// The expected final state of one step of a run.
#[derive(Debug, Clone)]
struct StepExp {
    name: &'static str,
    status: &'static str,
    /// `Some(n)`: the step's `attempt` must be n.
    attempt: Option<u64>,
    /// `Some(Some(c))`: exit code c; `Some(None)`: no exit code (killed, never started).
    exit_code: Option<Option<i64>>,
    /// The value of its `output` variable.
    output: Option<&'static str>,
    /// `handler` of a handler step: `success`, `failure`, `abort` or `exit`.
    handler: Option<&'static str>,
}

fn st(name: &'static str, status: &'static str) -> StepExp {
    StepExp {
        name,
        status,
        attempt: None,
        exit_code: None,
        output: None,
        handler: None,
    }
}

impl StepExp {
    fn attempt(mut self, n: u64) -> Self {
        self.attempt = Some(n);
        self
    }
    fn exit(mut self, code: i64) -> Self {
        self.exit_code = Some(Some(code));
        self
    }
    fn no_exit(mut self) -> Self {
        self.exit_code = Some(None);
        self
    }
    fn out(mut self, value: &'static str) -> Self {
        self.output = Some(value);
        self
    }
    fn handler(mut self, on: &'static str) -> Self {
        self.handler = Some(on);
        self
    }
}

/// One run of an example file and what it must end with.
#[derive(Debug, Clone)]
struct Case {
    file: &'static str,
    /// Params of the submit; `{workdir}` is replaced by a fresh temp dir of this case.
    params: &'static [(&'static str, &'static str)],
    status: &'static str,
    /// Every step the run must show, handlers included, and no other.
    steps: Vec<StepExp>,
    /// Most main steps running at the same time (from their start and finish times).
    max_active: Option<usize>,
}

fn case(
    file: &'static str,
    params: &'static [(&'static str, &'static str)],
    status: &'static str,
    steps: Vec<StepExp>,
) -> Case {
    Case {
        file,
        params,
        status,
        steps,
        max_active: None,
    }
}

const WORKDIR: &[(&str, &str)] = &[("WORKDIR", "{workdir}")];

fn cases() -> Vec<Case> {
    vec![
        case(
            "v1-nightly-report.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("prepare", "succeeded").exit(0),
                st("count", "succeeded").out("3"),
                st("big_report", "skipped").no_exit(),
                st("summary", "succeeded").out("rows=3"),
                st("publish", "succeeded").out("rows=3"),
            ],
        ),
        case(
            "v2-deploy-gate.yaml",
            WORKDIR,
            "aborted",
            // Unmet DAG-level preconditions end the run aborted, every step skipped; the abort
            // (`cancel`) handler and then `exit` run with DAG_RUN_STATUS=aborted
            // (docs/dag-format.md, Handlers).
            vec![
                st("build", "skipped").no_exit(),
                st("migrate", "skipped").no_exit(),
                st("release", "skipped").no_exit(),
                st("onCancel", "succeeded").handler("abort").out("aborted"),
                st("onExit", "succeeded").handler("exit").out("aborted"),
            ],
        ),
        case(
            "v2-deploy-gate.yaml",
            &[("WORKDIR", "{workdir}"), ("DEPLOY_ENV", "prod")],
            "succeeded",
            vec![
                st("build", "succeeded"),
                st("migrate", "succeeded"),
                st("release", "succeeded").out("released 1.4.2 to prod"),
                st("onSuccess", "succeeded")
                    .handler("success")
                    .out("succeeded"),
                st("onExit", "succeeded").handler("exit").out("succeeded"),
            ],
        ),
        case(
            "v1-log-rotation.yaml",
            &[],
            "failed",
            vec![
                st("compress", "succeeded").exit(3),
                st("prune", "failed").exit(1),
                st("verify", "failed").exit(1),
                st("ship_remote", "skipped").no_exit(),
                st("report", "succeeded").out("rotation done"),
                st("onFailure", "succeeded")
                    .handler("failure")
                    .out("failed"),
                st("onExit", "succeeded").handler("exit").out("failed"),
            ],
        ),
        case(
            "v2-cache-warmup.yaml",
            &[],
            "failed",
            vec![
                st("fetch_index", "succeeded").exit(1),
                st("warm_pages", "failed").exit(4),
                st("purge_stale", "skipped").no_exit(),
                st("report", "succeeded"),
                st("onFailure", "succeeded")
                    .handler("failure")
                    .out("failed"),
                st("onExit", "succeeded").handler("exit").out("failed"),
            ],
        ),
        case(
            "v1-backup-snapshot.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("snapshot", "succeeded")
                    .attempt(2)
                    .exit(0)
                    .out("attempt 2"),
                st("upload", "succeeded").attempt(1),
                st("onSuccess", "succeeded")
                    .handler("success")
                    .out("succeeded"),
                st("onExit", "succeeded").handler("exit").out("succeeded"),
            ],
        ),
        case(
            "v2-flaky-sync.yaml",
            WORKDIR,
            "failed",
            vec![
                st("pull_manifest", "succeeded")
                    .attempt(2)
                    .out("manifest v7"),
                st("push_mirror", "failed").attempt(2).exit(75),
                st("push_archive", "failed").attempt(1).exit(2),
                st("onFailure", "succeeded")
                    .handler("failure")
                    .out("failed"),
            ],
        ),
        case(
            "v1-import-timeout.yaml",
            &[],
            "failed",
            vec![
                st("fetch", "succeeded"),
                st("long_import", "aborted").no_exit(),
                st("load_index", "aborted").no_exit(),
                st("onCancel", "succeeded").handler("abort").out("failed"),
                st("onExit", "succeeded").handler("exit").out("failed"),
            ],
        ),
        case(
            "v2-health-probe.yaml",
            &[],
            "succeeded",
            vec![
                st("probe_primary", "succeeded").attempt(1).no_exit(),
                st("failover", "succeeded").out("replica"),
                st("report", "succeeded").out("primary down, using replica"),
            ],
        ),
        Case {
            max_active: Some(2),
            ..case(
                "v1-thumbnails.yaml",
                WORKDIR,
                "succeeded",
                vec![
                    st("list", "succeeded"),
                    st("resize_a", "succeeded"),
                    st("resize_b", "succeeded"),
                    st("resize_c", "succeeded"),
                    st("resize_d", "succeeded"),
                    st("index", "succeeded").out("4 thumbnails"),
                ],
            )
        },
        Case {
            max_active: Some(1),
            ..case(
                "v2-db-maintenance.yaml",
                WORKDIR,
                "succeeded",
                vec![
                    st("vacuum_orders", "succeeded"),
                    st("vacuum_customers", "succeeded"),
                    st("vacuum_events", "succeeded"),
                    st("analyze", "succeeded").out("3 tables vacuumed"),
                ],
            )
        },
        case(
            "v1-sales-etl.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("extract", "succeeded").out("5"),
                st("clean_eu", "succeeded").out("2"),
                st("clean_us", "succeeded").out("3"),
                st("load", "succeeded").out("loaded 2+3 of 5"),
            ],
        ),
        case(
            "v2-sales-etl.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("extract", "succeeded").out("5"),
                st("clean_eu", "succeeded").out("2"),
                st("clean_us", "succeeded").out("3"),
                st("load", "succeeded").out("loaded 2+3 of 5 into sales-2024"),
            ],
        ),
        case(
            "v2-greeting-cards.yaml",
            &[],
            "succeeded",
            vec![
                st("formal_card", "succeeded").out("Dear Ms. Lovelace"),
                st("casual_card", "succeeded").out("Hi Ada!"),
                st("envelope", "succeeded").out("To: Ada Lovelace"),
            ],
        ),
        case(
            "v2-greeting-cards.yaml",
            &[("2", "Byron")],
            "succeeded",
            vec![
                st("formal_card", "skipped").no_exit(),
                st("casual_card", "succeeded").out("Hi Ada!"),
                st("envelope", "succeeded").out("To: Ada Byron"),
            ],
        ),
        // params: typed params, extra named params, expansions, backtick values evaluated once
        // per run, dotenv, working_dir.
        case(
            "params-backtick-once.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("first", "succeeded"),
                st("second", "succeeded"),
                st("compare", "succeeded").attempt(2).out("same"),
            ],
        ),
        case(
            "params-typed.yaml",
            &[("TARGET", "prod")],
            "succeeded",
            vec![st("show", "succeeded").out("2x fast to prod (computed)")],
        ),
        case(
            "params-typed.yaml",
            &[
                ("COUNT", " 5"),
                ("MODE", "slow"),
                ("TARGET", "qa"),
                ("STAMP", "given"),
            ],
            "succeeded",
            vec![st("show", "succeeded").out("5x slow to qa (given)")],
        ),
        case(
            "params-positional.yaml",
            &[],
            "succeeded",
            vec![st("show", "succeeded").out("TARGET [none]")],
        ),
        case(
            "params-positional.yaml",
            &[("TARGET", "x")],
            "succeeded",
            vec![st("show", "succeeded").out("TARGET [x]")],
        ),
        case(
            "params-positional.yaml",
            &[("1", "a.csv")],
            "succeeded",
            vec![st("show", "succeeded").out("a.csv [none]")],
        ),
        case(
            "params-expansions.yaml",
            &[],
            "succeeded",
            vec![st("show", "succeeded").out("report|tar.gz|13|rep|default|FAST|$5")],
        ),
        case(
            "params-dotenv.yaml",
            &[],
            "succeeded",
            vec![st("greet", "succeeded").out("hello from the dotenv file")],
        ),
        case(
            "params-working-dir.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("make", "succeeded"),
                st("top", "succeeded").out("top"),
                st("nested", "succeeded").out("nested"),
            ],
        ),
        // steps: nameless, string, map-keyed and nested steps; chain by default, graph with
        // depends; command lists, command with script, shell (issue 15, points 1 to 3).
        Case {
            max_active: Some(1),
            ..case(
                "steps-nameless.yaml",
                WORKDIR,
                "succeeded",
                vec![
                    st("prepare", "succeeded"),
                    st("cmd_2", "succeeded"),
                    st("script_3", "succeeded"),
                    st("cmd_4", "succeeded").out("hello from a script"),
                ],
            )
        },
        Case {
            max_active: Some(1),
            ..case(
                "steps-strings.yaml",
                WORKDIR,
                "failed",
                vec![
                    st("cmd_1", "succeeded").exit(0),
                    st("cmd_2", "failed").exit(3),
                    st("cmd_3", "skipped").no_exit(),
                ],
            )
        },
        case(
            "steps-keyed.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("build", "succeeded"),
                st("publish", "succeeded").out("built v1"),
            ],
        ),
        case(
            "steps-parallel-group.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("setup", "succeeded"),
                st("left", "succeeded").exit(0),
                st("right", "succeeded").exit(0),
                st("join", "succeeded").out("left+right"),
            ],
        ),
        case(
            "steps-graph-depends.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("fetch_a", "succeeded").exit(0),
                st("fetch_b", "succeeded").exit(0),
                st("merge", "succeeded").out("a,b"),
            ],
        ),
        case(
            "steps-command-list.yaml",
            &[],
            "failed",
            vec![
                st("in_turn", "succeeded").out("one\n/tmp"),
                st("stops", "failed").exit(4),
            ],
        ),
        case(
            "steps-command-script.yaml",
            &[],
            "succeeded",
            vec![
                st("by_awk", "succeeded").out("sum 5"),
                st("by_bash", "succeeded").out("1 2 3"),
            ],
        ),
        case(
            "steps-shell.yaml",
            &[],
            "succeeded",
            vec![
                st("braces", "succeeded").out("1 2 3"),
                st("literal", "succeeded").out("{1..3}"),
            ],
        ),
        case(
            "steps-default-shell.yaml",
            &[],
            "failed",
            vec![
                st("stops_early", "failed").exit(1),
                st("runs_on", "succeeded").out("before\nafter"),
            ],
        ),
        // runpol: DAG-level retry_policy (the run retried once, automatically) and delay_sec.
        case(
            "runpol-retry-run.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("prepare", "succeeded").attempt(1),
                st("fetch", "succeeded").attempt(2).out("v3"),
                st("publish", "succeeded").out("published v3"),
            ],
        ),
        case(
            "runpol-delay.yaml",
            &[],
            "succeeded",
            vec![st("greet", "succeeded").out("hello after the delay")],
        ),
        // keys: continueOn words, output as a map, DAG-level defaults.
        case(
            "keys-continue-on-word.yaml",
            &[],
            "failed",
            vec![
                st("lint", "failed").exit(2),
                st("test", "succeeded").out("tests passed"),
                st("optional_docs", "skipped").no_exit(),
                st("publish", "succeeded").out("published after tests passed"),
            ],
        ),
        case(
            "keys-output-map.yaml",
            &[],
            "succeeded",
            vec![
                st("version", "succeeded").out("1.4.2"),
                st("token", "succeeded").out("s3cr3t"),
                st("release", "succeeded").out("release 1.4.2 signed with s3cr3t"),
            ],
        ),
        case(
            "keys-defaults.yaml",
            WORKDIR,
            "failed",
            vec![
                st("flaky", "succeeded").attempt(2).out("nightly ok"),
                st("once", "failed").attempt(1).exit(3),
                st("report", "succeeded").out("nightly-report"),
                st("onExit", "succeeded")
                    .handler("exit")
                    .out("nightly done"),
            ],
        ),
        // repeat: step repeatPolicy (each execution an attempt) and DAG maxOutputSize.
        case(
            "repeat-until-counter.yaml",
            WORKDIR,
            "succeeded",
            vec![
                st("poll", "succeeded").attempt(3).out("3"),
                st("report", "succeeded").attempt(1).out("counted to 3"),
            ],
        ),
        case(
            "repeat-while-exit-code.yaml",
            WORKDIR,
            "succeeded",
            vec![st("wait_for_lock", "succeeded").attempt(3).exit(0)],
        ),
        case(
            "repeat-limit.yaml",
            &[],
            "failed",
            vec![
                st("heartbeat", "succeeded").attempt(3).out("tick"),
                st("probe", "failed").attempt(2).exit(1),
            ],
        ),
        case(
            "repeat-max-output-size.yaml",
            &[],
            "failed",
            vec![
                st("small", "succeeded").out("hello"),
                st("big", "failed").attempt(1).exit(0),
                st("no_capture", "succeeded"),
            ],
        ),
    ]
}

/// The YAML files of `examples/dagu/`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dagu");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The most steps whose [started, finished) intervals overlap at one time.
fn max_overlap(run: &Value) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for s in run["steps"].as_array().into_iter().flatten() {
        if s.get("handler").is_some() {
            continue;
        }
        if let (Some(a), Some(b)) = (s["started_ms"].as_u64(), s["finished_ms"].as_u64()) {
            edges.push((a, 1));
            edges.push((b, -1));
        }
    }
    // At equal times a finish comes before a start: touching intervals do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// Every difference between a finished run and its case, one line each.
fn check(case: &Case, run: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let label = format!("{} {:?}", case.file, case.params);
    if run["status"] != case.status {
        problems.push(format!(
            "{label}: run status {} (expected {})",
            run["status"], case.status
        ));
    }
    let steps: BTreeMap<&str, &Value> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["name"].as_str().unwrap_or_default(), s))
        .collect();
    let expected: BTreeSet<&str> = case.steps.iter().map(|s| s.name).collect();
    for name in steps.keys() {
        if !expected.contains(name) {
            problems.push(format!("{label}: unexpected step {name}: {}", steps[name]));
        }
    }
    for exp in &case.steps {
        let Some(s) = steps.get(exp.name) else {
            problems.push(format!("{label}: no step {}", exp.name));
            continue;
        };
        let name = exp.name;
        if s["status"] != exp.status {
            problems.push(format!(
                "{label}: step {name} is {} (expected {}); error: {}",
                s["status"], exp.status, s["error"]
            ));
        }
        if let Some(n) = exp.attempt {
            if s["attempt"].as_u64() != Some(n) {
                problems.push(format!(
                    "{label}: step {name} attempt {} (expected {n})",
                    s["attempt"]
                ));
            }
        }
        if let Some(code) = exp.exit_code {
            if s["exit_code"].as_i64() != code {
                problems.push(format!(
                    "{label}: step {name} exit code {} (expected {code:?})",
                    s["exit_code"]
                ));
            }
        }
        if let Some(out) = exp.output {
            if s["output"][1].as_str() != Some(out) {
                problems.push(format!(
                    "{label}: step {name} output {} (expected {out:?})",
                    s["output"]
                ));
            }
        }
        let handler = s.get("handler").and_then(Value::as_str);
        if handler != exp.handler {
            problems.push(format!(
                "{label}: step {name} handler {handler:?} (expected {:?})",
                exp.handler
            ));
        }
    }
    if let Some(most) = case.max_active {
        let seen = max_overlap(run);
        if seen > most {
            problems.push(format!(
                "{label}: {seen} steps ran at once (at most {most} expected)"
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dagu_example_ends_as_expected() {
    let files = example_files();
    assert!(files.len() >= 12, "examples/dagu has {} files", files.len());
    let cases = cases();
    let names: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    let covered: BTreeSet<String> = cases.iter().map(|c| c.file.to_string()).collect();
    let missing: Vec<&String> = names.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "examples without an expectation in tests/it/dagu_examples.rs: {missing:?}"
    );
    let stale: Vec<&String> = covered.difference(&names).collect();
    assert!(
        stale.is_empty(),
        "expectations for missing files: {stale:?}"
    );

    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            (
                file_name(p),
                std::fs::read_to_string(p).expect("read example"),
            )
        })
        .collect();
    let dags: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, y)| (n.as_str(), y.as_str()))
        .collect();
    let c = Cluster::start_with(
        &dags,
        Options {
            concurrency: 4,
            ..Options::default()
        },
    )
    .await;

    let mut dirs = Vec::new();
    let mut runs = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let workdir = dir.path().display().to_string();
        let params: serde_json::Map<String, Value> = case
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.replace("{workdir}", &workdir))))
            .collect();
        let dag = case.file.trim_end_matches(".yaml");
        runs.push(c.submit(dag, Value::Object(params)).await);
        dirs.push(dir);
    }
    let mut problems = Vec::new();
    for (case, id) in cases.iter().zip(&runs) {
        let mut run = c.wait(id).await;
        // A failed run whose DAG retry_policy retries it is not done yet.
        while run["retry_at_ms"].is_u64() || run["status"] == "running" {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            run = c.wait(id).await;
        }
        let found = check(case, &run);
        if !found.is_empty() {
            problems.extend(found);
            problems.push(format!("  run: {run}"));
        }
    }
    c.stop().await;
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Mapping keys anywhere in a YAML document.
fn keys(value: &serde_yaml::Value, into: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    into.insert(k.to_string());
                }
                keys(v, into);
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| keys(v, into)),
        _ => {}
    }
}

/// (v1 key, v2 key) pairs that must each occur in some example.
const KEY_STYLES: &[(&str, &str)] = &[
    ("precondition", "preconditions"),
    ("continueOn", "continue_on"),
    ("exitCode", "exit_code"),
    ("markSuccess", "mark_success"),
    ("handlerOn", "handler_on"),
    ("cancel", "abort"),
    ("retryPolicy", "retry_policy"),
    ("intervalSec", "interval_sec"),
    ("maxIntervalSec", "max_interval_sec"),
    ("timeoutSec", "timeout_sec"),
    ("maxActiveSteps", "max_active_steps"),
    ("signalOnStop", "signal_on_stop"),
    ("maxCleanUpTimeSec", "max_clean_up_time_sec"),
    ("workingDir", "working_dir"),
];

#[test]
fn each_semantic_appears_in_both_key_styles() {
    let mut all = BTreeSet::new();
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("read example");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        let mut found = BTreeSet::new();
        keys(&doc, &mut found);
        // A file named v1-… or v2-… is written in that style only.
        let name = file_name(&path);
        for (v1, v2) in KEY_STYLES {
            if name.starts_with("v1-") {
                assert!(!found.contains(*v2), "{name} (v1 style) uses {v2}");
            }
            if name.starts_with("v2-") {
                assert!(!found.contains(*v1), "{name} (v2 style) uses {v1}");
            }
        }
        all.extend(found);
    }
    let missing: Vec<&str> = KEY_STYLES
        .iter()
        .flat_map(|(a, b)| [a, b])
        .filter(|k| !all.contains(**k))
        .copied()
        .collect();
    assert!(missing.is_empty(), "no example uses {missing:?}");
}

#[test]
fn dagrid_validate_accepts_every_example() {
    let files = example_files();
    let out = std::process::Command::new(dagrid_bin())
        .arg("validate")
        .args(&files)
        .output()
        .expect("run dagrid validate");
    assert!(
        out.status.success(),
        "dagrid validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
