//! DAG files of the process-level tests: the chaos DAGs, whose steps leave marker lines that
//! count executions.

/// Written into DAG files in place of the cluster's `marks/` directory.
pub const MARKS: &str = "@MARKS@";

/// The pid of the worker that runs a step, in shell: the step's parent, or its parent's parent
/// when the parent is the worker's step supervisor (`dagrid __step-supervisor`).
pub const WORKER_PID_SH: &str = r#"w=$PPID; case "$(tr '\0' ' ' < /proc/$w/cmdline 2>/dev/null)" in *__step-supervisor*) w=$(cut -d' ' -f4 /proc/$w/stat);; esac"#;

/// The one-step DAG of the chaos tests, named `name`. Its step `work` appends `<worker pid>
/// <pid>` ([`WORKER_PID_SH`]; the step's pid is its process group) to `marks/<run>.starts`
/// when it starts, sleeps
/// `SLEEP` seconds (`RESLEEP` instead when it is not the run's first start and `RESLEEP` is
/// set), and only then appends the run id to `marks/<run>`: an attempt killed mid-way writes
/// no marker line, and each line of `marks/<run>` is one execution that ran to its end.
pub fn one_step_dag(name: &str) -> String {
    format!(
        r#"name: {name}
dedup: none
params:
  - SLEEP: "0.3"
  - RESLEEP: ""
env:
  - MARKS: "@MARKS@"
steps:
  - name: work
    script: |
      {WORKER_PID_SH}
      echo "$w $$" >> "$MARKS/$DAG_RUN_ID.starts"
      if [ -n "$RESLEEP" ] && [ "$(wc -l < "$MARKS/$DAG_RUN_ID.starts")" -gt 1 ]; then
        sleep "$RESLEEP"
      else
        sleep "$SLEEP"
      fi
      echo "$DAG_RUN_ID" >> "$MARKS/$DAG_RUN_ID"
"#
    )
}

/// A two-step chain (`prepare` sleeps `SLEEP` and records its start, then `work` writes the
/// marker as in [`one_step_dag`]): the coordinator must queue the second step of each run.
pub fn chain_dag(name: &str) -> String {
    format!(
        r#"name: {name}
type: chain
dedup: none
params:
  - SLEEP: "0.2"
env:
  - MARKS: "@MARKS@"
steps:
  - name: prepare
    script: |
      {WORKER_PID_SH}
      echo "$w $$" >> "$MARKS/$DAG_RUN_ID.starts"
      sleep "$SLEEP"
  - name: work
    script: |
      sleep 0.05
      echo "$DAG_RUN_ID" >> "$MARKS/$DAG_RUN_ID"
"#
    )
}
