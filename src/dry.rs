//! `dagrid dry`: prints what a run of a DAG would do, without running anything and without
//! writing to Redis: the levels of the DAG (steps of one level can run at the same time),
//! then each step's command or script with its params and env expanded as the worker expands
//! them (`dagrid_worker::vars`). What is only known at run time stays unresolved as `${NAME}`:
//! earlier steps' `output` variables, `DAG_RUN_ID`, the worker's own environment.
//!
//! A DAG file is read locally (no coordinator needed, like `dagrid validate`); a name is looked
//! up on the coordinator (`GET /api/v1/dags/{name}` gives its source).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use dagrid_shared::dag::{BoundParam, Dag, DagErrors};
use dagrid_worker::vars;
use serde_json::Value;

use crate::client::{parse_params, Api};

/// `dagrid dry`: reads the DAG (`target` is a file when one exists at that path, else a
/// registered DAG's name), binds `params` and prints the plan.
pub(crate) async fn run(server: &str, target: &str, params: &[String]) -> anyhow::Result<ExitCode> {
    let dag = if Path::new(target).is_file() {
        Dag::from_file(Path::new(target)).map_err(|e| invalid(target, &e))?
    } else if target.contains('/') || target.ends_with(".yaml") || target.ends_with(".yml") {
        anyhow::bail!("no DAG file {target}; give a DAG file or the name of a registered DAG")
    } else {
        let api = Api::new(server)?;
        let v: Value = api
            .get(&format!("/api/v1/dags/{target}"))
            .await
            .with_context(|| format!("no file {target} here; looking it up as a registered DAG"))?;
        let source = v["source"]
            .as_str()
            .context("the coordinator sent the DAG without its source")?;
        registered(source, target).map_err(|e| invalid(target, &e))?
    };
    let given = parse_params(params)?;
    let bound = dag
        .bind_params(&given)
        .map_err(|e| invalid("--param", &e))?;
    print!("{}", render(&dag, &bound));
    Ok(ExitCode::SUCCESS)
}

/// The registered DAG `target` from its file's source: the file's DAG, or one of its local
/// DAGs (registered as `<DAG>.<local>` with the whole file as source).
fn registered(source: &str, target: &str) -> Result<Dag, DagErrors> {
    // A local's name is `<DAG>.<local>`, and the file's DAG may be named by its file stem
    // (the default name): try each split, from the right.
    for (dot, _) in target.rmatch_indices('.') {
        let Ok(main) = Dag::parse(source, &target[..dot]) else {
            break;
        };
        if let Some(local) = main.locals.into_iter().find(|l| l.name == target) {
            return Ok(local);
        }
    }
    Dag::parse(source, target)
}

fn invalid(what: &str, e: &DagErrors) -> anyhow::Error {
    let lines: Vec<String> =
        e.0.iter()
            .map(|e| {
                if e.field.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field, e.message)
                }
            })
            .collect();
    anyhow::anyhow!("{what}: {}", lines.join("; "))
}

/// The level of each step (0 for a step without `depends`, else one more than its deepest
/// dependency), in DAG file order.
fn levels(dag: &Dag) -> Vec<usize> {
    let deps = dag.dependencies();
    let mut level: Vec<Option<usize>> = vec![None; dag.steps.len()];
    // The DAG is acyclic (checked when parsed): at most one pass per step settles them all.
    for _ in 0..=dag.steps.len() {
        let mut done = true;
        for i in 0..dag.steps.len() {
            if level[i].is_some() {
                continue;
            }
            let known: Option<Vec<usize>> = deps[i].iter().map(|&d| level[d]).collect();
            match known {
                Some(ls) => level[i] = Some(ls.into_iter().map(|l| l + 1).max().unwrap_or(0)),
                None => done = false,
            }
        }
        if done {
            break;
        }
    }
    level.into_iter().map(Option::unwrap_or_default).collect()
}

/// The plan as printed: a header, the levels, then each step.
fn render(dag: &Dag, params: &[BoundParam]) -> String {
    let mut out = String::new();
    let level = levels(dag);
    let depth = level.iter().max().map_or(0, |l| l + 1);
    let shown: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.name {
            Some(n) => format!("{n}={}", p.value),
            None => format!("${}={}", i + 1, p.value),
        })
        .collect();
    let _ = writeln!(
        out,
        "DAG {} (dry run: nothing runs, nothing is written): {} step(s) in {depth} level(s)",
        dag.name,
        dag.steps.len()
    );
    if !shown.is_empty() {
        let _ = writeln!(out, "params: {}", shown.join(" "));
    }
    let _ = writeln!(out);
    for l in 0..depth {
        let names: Vec<&str> = dag
            .steps
            .iter()
            .zip(&level)
            .filter(|(_, sl)| **sl == l)
            .map(|(s, _)| s.name.as_str())
            .collect();
        let together = if names.len() > 1 {
            "  (in parallel)"
        } else {
            ""
        };
        let _ = writeln!(out, "level {}: {}{together}", l + 1, names.join(", "));
    }
    if let Some(n) = dag.max_active_steps {
        let _ = writeln!(out, "(at most {n} step(s) at once: maxActiveSteps)");
    }
    // The env the worker builds, in its order: run variables, params, the DAG's env, earlier
    // steps' outputs (unknown until they run), the step's env; each value expanded against
    // what comes before it.
    let mut base: BTreeMap<String, String> = BTreeMap::new();
    base.insert("DAG_NAME".into(), dag.name.clone());
    for p in params {
        if let Some(n) = &p.name {
            base.insert(n.clone(), p.value.clone());
        }
    }
    let args: Vec<String> = params.iter().map(|p| p.value.clone()).collect();
    let mut dag_env = Vec::new();
    for e in &dag.env {
        let v = expand(&e.value, &base, &args);
        base.insert(e.name.clone(), v.clone());
        dag_env.push((e.name.clone(), v));
    }
    if !dag_env.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "env:");
        for (k, v) in &dag_env {
            let _ = writeln!(out, "  {k}={v}");
        }
    }
    for (i, step) in dag.steps.iter().enumerate() {
        let mut env = base.clone();
        env.insert("DAG_RUN_STEP_NAME".into(), step.name.clone());
        let _ = writeln!(out);
        let after = if step.depends.is_empty() {
            String::new()
        } else {
            format!(" (after {})", step.depends.join(", "))
        };
        let _ = writeln!(out, "[{}] {}{after}", level[i] + 1, step.name);
        for e in &step.env {
            let v = expand(&e.value, &env, &args);
            let _ = writeln!(out, "  env      {}={v}", e.name);
            env.insert(e.name.clone(), v);
        }
        if let Some(d) = &step.dir {
            let _ = writeln!(out, "  dir      {}", expand(d, &env, &args));
        }
        match (&step.command, &step.script) {
            (Some(c), None) => {
                let how = if step.shell.is_none() && !vars::needs_shell(c) {
                    "run directly"
                } else {
                    "through the shell"
                };
                let _ = writeln!(out, "  command  {}   ({how})", expand(c, &env, &args));
            }
            (None, Some(s)) => {
                let _ = writeln!(out, "  script   (through the shell)");
                for line in expand(s, &env, &args).lines() {
                    let _ = writeln!(out, "    | {line}");
                }
            }
            (Some(c), Some(s)) => {
                let _ = writeln!(out, "  command  {}", expand(c, &env, &args));
                for line in expand(s, &env, &args).lines() {
                    let _ = writeln!(out, "    | {line}");
                }
            }
            (None, None) => {}
        }
        if let Some(call) = &step.call {
            let _ = writeln!(out, "  call     {}", describe_call(call, &env, &args));
            if !call.params.is_empty() {
                let params: Vec<String> = (call.params.iter())
                    .map(|(name, value)| {
                        let value = quote(&expand(value, &env, &args));
                        match name {
                            Some(name) => format!("{name}={value}"),
                            None => value,
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  params   {}", params.join(" "));
            }
        }
        if let Some(sh) = &step.shell {
            let _ = writeln!(out, "  shell    {sh}");
        }
        if let Some(o) = &step.output {
            let _ = writeln!(out, "  output   {o} (known once it ran: ${{{o}}} below)");
        }
        if let Some(r) = &step.retry {
            let _ = writeln!(out, "  retry    up to {} time(s)", r.limit);
        }
        if let Some(r) = &step.repeat {
            let _ = writeln!(out, "  repeat   {}", describe_repeat(r));
        }
        if let Some(ms) = step.timeout_ms {
            let _ = writeln!(out, "  timeout  {}", crate::format::human_ms(ms));
        }
        for c in &step.preconditions {
            let _ = writeln!(
                out,
                "  precondition  {} (checked on the worker at run time)",
                describe_condition(c)
            );
        }
        if let Some(c) = &step.continue_on {
            let _ = writeln!(out, "  continueOn    {}", describe_continue_on(c));
        }
    }
    if !dag.preconditions.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "DAG preconditions (checked before the first step; if one does not hold, no step runs and the run ends aborted):"
        );
        for c in &dag.preconditions {
            let _ = writeln!(out, "  {}", describe_condition(c));
        }
    }
    let handlers: Vec<(&str, &dagrid_shared::dag::Step)> = [
        ("success", dag.handlers.success.as_ref()),
        ("failure", dag.handlers.failure.as_ref()),
        ("abort", dag.handlers.abort.as_ref()),
        ("exit", dag.handlers.exit.as_ref()),
    ]
    .into_iter()
    .filter_map(|(on, s)| Some((on, s?)))
    .collect();
    if !handlers.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "handlers (after the main steps: the outcome's, then exit; DAG_RUN_STATUS set):"
        );
        for (on, step) in handlers {
            let what = step
                .command
                .as_deref()
                .map(|c| expand(c, &base, &args))
                .unwrap_or_else(|| "(script)".into());
            let _ = writeln!(out, "  {on:<8} {}: {what}", step.name);
        }
    }
    out
}

/// `text` as one shell word: as is when plain, else in single quotes.
fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A call step as the plan shows it: `b`, `b (parallel over ${FILES}, max 5)` or
/// `b (parallel over 3 items, max 10)`; the DAG name is expanded.
fn describe_call(
    call: &dagrid_shared::dag::Call,
    env: &BTreeMap<String, String>,
    args: &[String],
) -> String {
    let dag = expand(&call.dag, env, args);
    let Some(parallel) = &call.parallel else {
        return format!("{dag} (one child run)");
    };
    let over = match &parallel.items {
        dagrid_shared::dag::ParallelItems::Variable(v) => v.clone(),
        dagrid_shared::dag::ParallelItems::List(items) => format!("{} items", items.len()),
    };
    format!(
        "{dag} (parallel over {over}, max {} at once)",
        parallel.max_concurrent
    )
}

/// One precondition as the plan shows it: `condition` (a command), or `condition` == / ~
/// `expected`, negated when `negate`.
fn describe_condition(c: &dagrid_shared::dag::Condition) -> String {
    let check = match &c.expected {
        None => format!("`{}` exits 0", c.condition),
        Some(e) => match e.strip_prefix(dagrid_shared::dag::REGEX_PREFIX) {
            Some(re) => format!("{:?} matches /{re}/", c.condition),
            None => format!("{:?} equals {e:?}", c.condition),
        },
    };
    if c.negate {
        format!("not ({check})")
    } else {
        check
    }
}

/// A step's `repeatPolicy` as the plan shows it: `until "$N" equals "3", every 1s, at most
/// 5 executions`.
fn describe_repeat(r: &dagrid_shared::dag::RepeatPolicy) -> String {
    use dagrid_shared::dag::RepeatMode;
    let mode = match r.mode {
        RepeatMode::While => "while",
        RepeatMode::Until => "until",
    };
    let check = match (&r.condition, r.exit_codes.as_slice()) {
        (Some(c), _) => describe_condition(c),
        (None, []) => "it succeeds".to_string(),
        (None, codes) => format!("the exit code is in {codes:?}"),
    };
    let mut text = format!("{mode} {check} (checked on the worker after each execution)");
    if r.interval_ms > 0 {
        text.push_str(&format!(
            ", every {}",
            crate::format::human_ms(r.interval_ms)
        ));
        if r.backoff_milli > 0 {
            text.push_str(&format!(
                " growing ×{} each time",
                r.backoff_milli as f64 / 1000.0
            ));
        }
    }
    if r.limit > 0 {
        text.push_str(&format!(", at most {} executions", r.limit));
    }
    text
}

/// A step's `continueOn` as the plan shows it.
fn describe_continue_on(c: &dagrid_shared::dag::ContinueOn) -> String {
    let mut parts = Vec::new();
    if c.failure {
        parts.push("failure".to_string());
    }
    if c.skipped {
        parts.push("skipped".to_string());
    }
    if !c.exit_codes.is_empty() {
        parts.push(format!("exitCode {:?}", c.exit_codes));
    }
    if !c.output.is_empty() {
        parts.push(format!("output {:?}", c.output));
    }
    if c.mark_success {
        parts.push("markSuccess".to_string());
    }
    parts.join(", ")
}

/// `template` expanded as the worker expands it, with what is known before the run; the rest
/// (outputs, `DAG_RUN_ID`, the worker's environment) shown as `${NAME}`.
fn expand(template: &str, env: &BTreeMap<String, String>, args: &[String]) -> String {
    vars::expand(template, |name| {
        if let Some(v) = env.get(name) {
            return Some(v.clone());
        }
        match name.parse::<usize>() {
            Ok(0) => Some("$0".into()),
            Ok(n) => Some(args.get(n - 1).cloned().unwrap_or_default()),
            Err(_) => Some(format!("${{{name}}}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAMOND: &str = r#"name: diamond
params:
  - NAME: world
  - COUNT: "2"
env:
  - GREETING: hello ${NAME}
steps:
  - name: a
    command: echo ${GREETING} $COUNT
    output: A
  - name: b
    depends: [a]
    command: echo got ${A} | tr a-z A-Z
  - name: c
    depends: [a]
    env:
      - WHERE: /tmp/${NAME}
    script: |
      echo $WHERE $DAG_RUN_ID
  - name: d
    depends: [b, c]
    command: echo done $1
"#;

    #[test]
    fn preconditions_continue_on_and_handlers_are_listed() {
        let yaml = "params: \"MODE=fast\"\npreconditions:\n  - condition: \"`date +%Y`\"\n    expected: \"re:^20\"\nsteps:\n  - name: a\n    command: echo ${MODE}\n    preconditions:\n      - condition: \"${MODE}\"\n        expected: fast\n        negate: true\n      - test -d /tmp\n    continue_on:\n      exit_code: [3]\n      mark_success: true\nhandler_on:\n  failure:\n    command: echo failed ${MODE}\n";
        let dag = Dag::parse(yaml, "p").unwrap();
        let bound = dag.bind_params(&BTreeMap::new()).unwrap();
        let text = render(&dag, &bound);
        assert!(
            text.contains("precondition  not (\"${MODE}\" equals \"fast\") (checked on the worker at run time)"),
            "{text}"
        );
        assert!(
            text.contains("precondition  `test -d /tmp` exits 0"),
            "{text}"
        );
        assert!(
            text.contains("continueOn    exitCode [3], markSuccess"),
            "{text}"
        );
        assert!(text.contains("DAG preconditions"), "{text}");
        assert!(text.contains("\"`date +%Y`\" matches /^20/"), "{text}");
        assert!(
            text.contains("failure  onFailure: echo failed fast"),
            "{text}"
        );
    }

    #[test]
    fn a_registered_local_dag_is_found_in_its_file() {
        let source = "steps: [{name: a, call: one}]\n---\nname: one\nsteps: [{name: b, call: two}]\n---\nname: two\nsteps: [{name: c, command: echo}]\n";
        let local = registered(source, "file.one").expect("parse");
        assert_eq!(local.name, "file.one");
        assert_eq!(
            local.steps[0].call.as_ref().map(|c| c.dag.as_str()),
            Some("file.two")
        );
        assert_eq!(registered(source, "file").expect("parse").name, "file");
    }

    #[test]
    fn a_call_step_shows_its_dag_items_and_params() {
        let yaml = "params: \"WHO=me\"\nsteps:\n  - name: a\n    call: child\n    params: \"X=${WHO} 'two words'\"\n  - name: b\n    call: child\n    parallel: {items: '${FILES}', max_concurrent: 5}\n  - name: c\n    call: child\n    parallel: [1, 2, 3]\n";
        let dag = Dag::parse(yaml, "t").expect("parse");
        let text = render(&dag, &dag.bind_params(&BTreeMap::new()).expect("bind"));
        assert!(
            text.contains("  call     child (one child run)\n  params   X=me 'two words'"),
            "{text}"
        );
        assert!(
            text.contains("  call     child (parallel over ${FILES}, max 5 at once)"),
            "{text}"
        );
        assert!(
            text.contains("  call     child (parallel over 3 items, max 10 at once)"),
            "{text}"
        );
    }

    #[test]
    fn a_repeat_policy_is_described() {
        let yaml = "steps:\n  - name: a\n    command: x\n    output: N\n    repeat_policy: {repeat: until, condition: \"$N\", expected: \"3\", interval_sec: 2, limit: 5}\n";
        let dag = Dag::parse(yaml, "r").unwrap();
        let text = render(&dag, &dag.bind_params(&BTreeMap::new()).unwrap());
        assert!(
            text.contains("repeat   until \"$N\" equals \"3\" (checked on the worker after each execution), every 2s, at most 5 executions"),
            "{text}"
        );
    }

    #[test]
    fn a_diamond_shows_its_levels_and_expanded_commands() {
        let dag = Dag::parse(DIAMOND, "diamond").unwrap();
        let given = BTreeMap::from([("NAME".to_string(), "dagrid".to_string())]);
        let bound = dag.bind_params(&given).unwrap();
        let text = render(&dag, &bound);
        assert!(text.contains("4 step(s) in 3 level(s)"), "{text}");
        assert!(text.contains("params: NAME=dagrid COUNT=2"), "{text}");
        assert!(text.contains("level 1: a\n"), "{text}");
        assert!(text.contains("level 2: b, c  (in parallel)"), "{text}");
        assert!(text.contains("level 3: d\n"), "{text}");
        assert!(text.contains("  GREETING=hello dagrid"), "{text}");
        assert!(
            text.contains("  command  echo hello dagrid 2   (run directly)"),
            "{text}"
        );
        assert!(
            text.contains(
                "[2] b (after a)\n  command  echo got ${A} | tr a-z A-Z   (through the shell)"
            ),
            "{text}"
        );
        assert!(text.contains("  env      WHERE=/tmp/dagrid"), "{text}");
        assert!(
            text.contains("    | echo /tmp/dagrid ${DAG_RUN_ID}"),
            "{text}"
        );
        assert!(text.contains("  command  echo done dagrid"), "{text}");
    }
}
