//! A step's environment and files: the variables it runs with ([`step_env`]: what the worker
//! lets it inherit, [`inherited`], then the DAG's `dotenv` files, the log paths and the task's
//! `env`), its working directory ([`step_dir`]) and where its attempt's files go
//! ([`AttemptPaths`]).

mod dotenv;
pub(crate) mod inherited;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dagrid_shared::model::StepTask;
use sha2::Digest;
use tokio::process::Command;

use crate::vars;
pub(crate) use inherited::{DefaultShell, Inherited};

/// Where one attempt's files go: `<log dir>/<dag>/<run id>.<step>.<attempt>.{log,script}`,
/// each name component made a file name with [`file_name`], so two steps of a run never share
/// a file whatever their names (`s a` and `s_a`, or two names in a non-Latin script); run ids
/// are UUIDs, so the first `.` ends the run id. One directory per DAG rather than per run:
/// making a directory, and the first file in a new one, costs several times a file made in an
/// existing directory on a journalled file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttemptPaths {
    /// The DAG's directory, which holds the files.
    pub(crate) dir: PathBuf,
    /// The full log.
    pub(crate) log: PathBuf,
    /// The script file, for steps whose `script` is executed as a file.
    pub(crate) script: PathBuf,
}

impl AttemptPaths {
    pub(crate) fn new(log_dir: &Path, task: &StepTask) -> Self {
        let dir = log_dir.join(file_name(&task.dag));
        let stem = format!(
            "{}.{}.{}",
            file_name(&task.run_id),
            file_name(&task.step),
            task.attempt
        );
        Self {
            log: dir.join(format!("{stem}.log")),
            script: dir.join(format!("{stem}.script")),
            dir,
        }
    }
}

/// The longest name (bytes) [`file_name`] keeps as it is.
const MAX_PLAIN_NAME: usize = 100;
/// How much of a [`sanitize`]d name [`file_name`] keeps before the hash (bytes).
const HASHED_NAME_PREFIX: usize = 64;

/// A name as one path component, distinct for distinct names: the name itself when it is
/// made only of `[A-Za-z0-9._-]`, not only of dots, and at most [`MAX_PLAIN_NAME`] bytes;
/// any other name becomes its [`sanitize`]d form cut to [`HASHED_NAME_PREFIX`] bytes, then
/// `+` and the first 16 hex digits of the SHA-256 of the name (`s a` → `s_a+…`). A plain name
/// never holds `+`, so it never meets a hashed one, and two hashed names meet only if their
/// hashes do (64 bits).
pub(crate) fn file_name(name: &str) -> String {
    let safe = sanitize(name);
    if safe == name && name.len() <= MAX_PLAIN_NAME {
        return safe;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    // `safe` is ASCII, so any byte index is a char boundary.
    let cut = safe.len().min(HASHED_NAME_PREFIX);
    format!("{}+{}", &safe[..cut], hex::encode(&digest[..8]))
}

/// A name made safe as one path component: every char outside `[A-Za-z0-9._-]` becomes `_`,
/// and a name made only of dots (`.`, `..`) or empty becomes underscores, so it cannot leave
/// the log directory. Distinct names may give the same result: file names use [`file_name`].
pub(crate) fn sanitize(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.chars().all(|c| c == '.') {
        "_".repeat(safe.len().max(1))
    } else {
        safe
    }
}

/// The step's environment (docs/dag-format.md, "How a step runs"): the task's `env` entries in order, those of
/// [`StepTask::expand`] expanded against what comes before them, over the environment the
/// worker's steps inherit.
pub(crate) fn step_env<'a>(
    task: &'a StepTask,
    paths: &AttemptPaths,
    inherited: &'a Inherited,
) -> Env<'a> {
    let log = paths.log.display().to_string();
    let mut env = Env::new(task, inherited);
    load_dotenv(task, &mut env);
    env.set("DAG_RUN_STEP_STDOUT_FILE", log.clone());
    env.set("DAG_RUN_LOG_FILE", log);
    let mut expand = task.expand.iter().copied().peekable();
    for (i, (name, value)) in task.env.iter().enumerate() {
        // `expand` is in increasing order; an index out of order or range expands nothing.
        while expand.next_if(|&e| (e as usize) < i).is_some() {}
        let value = if expand.next_if_eq(&(i as u32)).is_some() {
            vars::expand_value(value, &|n| env.get(n))
        } else {
            value.clone()
        };
        env.set(name, value);
    }
    env
}

/// The DAG's `working_dir` of `task`, expanded (`$VAR`, a leading `~`); `None` without one.
pub(crate) fn dag_dir(task: &StepTask, env: &Env<'_>) -> Option<String> {
    let raw = task.dag_values.working_dir.as_deref()?;
    Some(expand_home(&vars::expand(raw, |n| env.get(n)), env))
}

/// The step's working directory, expanded (`None`: the worker's own).
///
/// # Errors
/// The message for the failed report when the directory does not exist.
pub(crate) fn step_dir(task: &StepTask, env: &Env<'_>) -> Result<Option<String>, String> {
    let base = dag_dir(task, env);
    let (dir, what) = match task.dir.as_deref().filter(|d| !d.trim().is_empty()) {
        // Dagu: a step without `dir` runs in the DAG's `working_dir`.
        None => match base {
            None => return Ok(None),
            Some(base) => (base, "the DAG's working_dir"),
        },
        Some(raw) => {
            let dir = expand_home(&vars::expand(raw, |n| env.get(n)), env);
            // Dagu: a relative step `dir` is relative to the DAG's `working_dir`.
            match base.filter(|_| Path::new(&dir).is_relative()) {
                Some(base) => (
                    Path::new(&base).join(&dir).display().to_string(),
                    "the step's dir (relative to the DAG's working_dir)",
                ),
                None => (dir, "the step's dir"),
            }
        }
    };
    if !Path::new(&dir).is_dir() {
        return Err(format!(
            "working directory \"{dir}\" does not exist or is not a directory; check {what}"
        ));
    }
    Ok(Some(dir))
}

/// The program and arguments (before `-c`) of the step's shell: `shell` as written, split
/// into words, or when the step names none the worker's default ([`DefaultShell`]: its
/// `$SHELL` or `sh`, with `-e` for the sh family, as in Dagu).
///
/// # Errors
/// The message for the failed report when `shell` does not parse or is empty.
pub(crate) fn shell_words_of(
    shell: Option<&str>,
    default: &DefaultShell,
) -> Result<(String, Vec<String>), String> {
    let Some(raw) = shell.filter(|s| !s.trim().is_empty()) else {
        let args = default.args().iter().map(|a| a.to_string()).collect();
        return Ok((default.program.clone(), args));
    };
    let mut words = shell_words::split(raw)
        .map_err(|e| format!("the step's shell \"{raw}\" does not parse: {e}; fix its quoting"))?
        .into_iter();
    let program = words
        .next()
        .ok_or_else(|| format!("the step's shell \"{raw}\" is empty"))?;
    Ok((program, words.collect()))
}

/// A leading `~` (alone or before `/`) replaced by the home directory.
fn expand_home(dir: &str, env: &Env) -> String {
    match (dir.strip_prefix('~'), env.get("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => dir.to_string(),
    }
}

/// The environment being built: the step's entries over what it inherits from the worker.
pub(crate) struct Env<'a> {
    task: &'a StepTask,
    inherited: &'a Inherited,
    /// Entries set for the step, in the order they were set (later ones win).
    overlay: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl<'a> Env<'a> {
    /// The step's shell as a program and its arguments before `-c` ([`shell_words_of`], with
    /// the worker's default shell).
    ///
    /// # Errors
    /// The message for the failed report when `shell` does not parse or is empty.
    pub(crate) fn shell_words(&self, shell: Option<&str>) -> Result<(String, Vec<String>), String> {
        shell_words_of(shell, self.inherited.shell())
    }

    fn new(task: &'a StepTask, inherited: &'a Inherited) -> Self {
        Self {
            task,
            inherited,
            overlay: Vec::new(),
            index: HashMap::new(),
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: String) {
        match self.index.get(name) {
            Some(&i) => self.overlay[i].1 = value,
            None => {
                self.index.insert(name.to_string(), self.overlay.len());
                self.overlay.push((name.to_string(), value));
            }
        }
    }

    /// The step's entries, set over what it inherits, in order.
    pub(crate) fn overlay(&self) -> &[(String, String)] {
        &self.overlay
    }

    /// Gives `cmd` this environment: the inherited one ([`Inherited::apply`]), then the
    /// step's entries over it.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        self.inherited.apply(cmd);
        cmd.envs(self.overlay.iter().map(|(k, v)| (k, v)));
    }

    /// A variable's value: `0` is the DAG name, `1`.. the positional params, other names the
    /// step's entries, then the inherited environment.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        if let Ok(n) = name.parse::<usize>() {
            return match n {
                0 => Some(self.task.dag.clone()),
                n => self.task.args.get(n - 1).cloned(),
            };
        }
        match self.index.get(name) {
            Some(&i) => Some(self.overlay[i].1.clone()),
            None => self
                .inherited
                .get(name)
                .map(|v| v.to_string_lossy().into_owned()),
        }
    }
}

/// Loads `task`'s dotenv files (Dagu's DAG-level `dotenv`) into `env`: over what the step
/// inherits and under everything the task sets (params, `env`), so the DAG's `env` can use
/// them.
///
/// Paths are expanded (`$VAR`, a leading `~`); a relative one is relative to the DAG's
/// `working_dir` when it has one (then `.env` there is loaded first, as Dagu prepends it),
/// else to the worker's directory. A missing or unreadable file is skipped (Dagu logs and
/// goes on); later files override earlier ones. Names starting with `DAGRID_` (the worker's
/// own settings) are never loaded. The file format is in [`dotenv`].
fn load_dotenv(task: &StepTask, env: &mut Env<'_>) {
    if task.dag_values.dotenv.is_empty() {
        return;
    }
    // The DAG's working_dir may use params, which are set after the dotenv files.
    let base = task.dag_values.working_dir.as_deref().map(|raw| {
        let lookup = |n: &str| {
            env.get(n).or_else(|| {
                let mut set = task.env.iter().rev();
                set.find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        PathBuf::from(vars::expand(raw, lookup))
    });
    let base = base.filter(|b| !b.as_os_str().is_empty());
    let mut files: Vec<&str> = Vec::new();
    if base.is_some() {
        files.push(".env");
    }
    for file in &task.dag_values.dotenv {
        if !files.contains(&file.as_str()) {
            files.push(file);
        }
    }
    for file in files {
        let expanded = vars::expand(file, |n| env.get(n));
        let path = match (expanded.strip_prefix('~'), env.get("HOME")) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(format!("{home}{rest}"))
            }
            _ => PathBuf::from(&expanded),
        };
        let path = match &base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            tracing::debug!(file = %Path::new(&path).display(), "dotenv file not loaded (missing or unreadable)");
            continue;
        };
        for (name, value) in dotenv::parse(&text) {
            if !name.starts_with("DAGRID_") {
                env.set(&name, value);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A step task running `command`, for tests.
    pub(crate) fn task(command: &str) -> StepTask {
        StepTask {
            call: None,
            run_id: "run-1".into(),
            dag: "dag-a".into(),
            step: "step-1".into(),
            attempt: 1,
            token: "tok".into(),
            command: Some(command.into()),
            script: None,
            shell: None,
            dir: None,
            env: Vec::new(),
            expand: Vec::new(),
            args: Vec::new(),
            output: None,
            queued_ms: 0,
            priority: Default::default(),
            timeout_ms: None,
            stop_signal: None,
            cleanup_ms: 5_000,
            ignore_preconditions: false,
            preconditions: vec![],
            dag_preconditions: vec![],
            continue_on_output: vec![],
            repeat: None,
            max_output_size: None,
            repeats: 0,
            dag_values: Default::default(),
        }
    }

    /// What steps inherit from this test process by default (all but `DAGRID_*`).
    pub(crate) fn inherited() -> Inherited {
        Inherited::from_process(&inherited::StepEnv::default()).unwrap()
    }

    /// With a `working_dir`, `.env` there is loaded first, then the listed files (relative to
    /// it, later ones winning); params and `env` override them; `DAGRID_*` never loads.
    #[test]
    fn files_load_under_the_task_env_relative_to_the_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "A=dot\nB=dot\nDAGRID_REDIS_URL=redis://x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("more.env"), "B=more\nC=more\n").unwrap();
        let mut task = task("true");
        task.dag_values.working_dir = Some("${WD}".into());
        task.dag_values.dotenv = vec!["more.env".into(), "missing.env".into()];
        let wd = dir.path().display().to_string();
        task.env = vec![("WD".into(), wd), ("C".into(), "param".into())];
        let paths = AttemptPaths::new(dir.path(), &task);
        let inherited = inherited();
        let env = step_env(&task, &paths, &inherited);
        assert_eq!(env.get("A").as_deref(), Some("dot"));
        assert_eq!(env.get("B").as_deref(), Some("more"));
        assert_eq!(env.get("C").as_deref(), Some("param"));
        assert!(env.overlay().iter().all(|(k, _)| k != "DAGRID_REDIS_URL"));
    }

    #[test]
    fn sanitize_keeps_names_inside_the_log_dir() {
        assert_eq!(sanitize("a b/c"), "a_b_c");
        assert_eq!(sanitize("ok.name-1_x"), "ok.name-1_x");
        assert_eq!(sanitize(".."), "__");
        assert_eq!(sanitize("."), "_");
        assert_eq!(sanitize(""), "_");
    }
}
