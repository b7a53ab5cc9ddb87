//! Which of the worker's own environment variables its steps inherit, decided once at worker
//! start ([`Inherited::capture`]) so that spawning a step filters nothing: it only removes the
//! names kept out ([`Inherited::apply`]).
//!
//! A variable is inherited when, in this order: its name does not start with `DAGRID_` (the
//! worker's own settings: the Redis URL with its password, API tokens, …, whatever the
//! allowlist says); its value holds none of [`StepEnv::secrets`]; its name matches one of
//! [`StepEnv::allow`] when any is given; and its name matches none of [`StepEnv::deny`]. The
//! variables dagrid sets for a step on purpose (`DAG_NAME`, `DAG_RUN_ID`, params, the DAG's
//! and the step's `env`, …) are not inherited but set over these, and no rule here touches them.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The prefix of the worker's own settings (`DAGRID_REDIS_URL`, `DAGRID_ADMIN_TOKEN`, …): a
/// variable whose name starts with it (in any case) never reaches a step.
pub const RESERVED_PREFIX: &str = "DAGRID_";

/// Secrets shorter than this (bytes) strip only a variable whose value is exactly the secret;
/// longer ones strip any variable whose value contains them. A short secret (a Redis password
/// `a`) would otherwise strip half of the environment.
const CONTAINED_SECRET_BYTES: usize = 8;

/// Which of the worker's environment variables steps inherit ([`crate::Config::step_env`]).
/// The default inherits every variable but the worker's own `DAGRID_*` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepEnv {
    /// Glob patterns of names (`*` any run of characters, `?` one, `[A-Z]` a class; `AWS_*`,
    /// `PATH`). When any is given, only the variables whose name matches one are inherited
    /// (include `PATH` and `HOME`: a step without `PATH` finds only programs given by path).
    /// Empty: every variable (`--step-env-allow`).
    pub allow: Vec<String>,
    /// Glob patterns of names never inherited, applied after [`StepEnv::allow`]
    /// (`--step-env-deny`).
    pub deny: Vec<String>,
    /// Secret values of the process (the Redis URL and its password, API tokens read from
    /// `--token-file` or the environment): a variable whose value holds one is not inherited,
    /// whatever its name. Empty secrets are ignored.
    pub secrets: Vec<String>,
}

/// A [`StepEnv`] pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the step environment pattern {pattern:?} is not a glob ({cause}); write a name or a pattern such as AWS_*")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// Why it does not parse.
    pub cause: String,
}

/// The inherited part of the steps' environment: the worker's variables [`StepEnv`] lets
/// through, by name, and the names of those it keeps out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inherited {
    vars: BTreeMap<OsString, OsString>,
    /// The worker's variables that steps do not inherit.
    removed: Vec<OsString>,
    /// The shell of the steps that name none, decided from the worker's `SHELL` at start.
    shell: DefaultShell,
}

/// Dagu's default shell, for a step whose file names no `shell` (step or DAG level): the
/// worker's `$SHELL` when set and not empty (whatever the step environment rules let
/// through), else `sh` (Dagu `cmdutil.GetShellCommand`). As in Dagu, a shell of the sh
/// family (`sh`, `bash`, `zsh`, `ksh`, `ash`, `dash`, by base name) gets `-e` (errexit), so a
/// failing line of a script fails the step; a shell the file names is run as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefaultShell {
    /// The program (`/bin/bash`, `sh`).
    pub(crate) program: String,
    /// Whether `-e` is passed before `-c` (Dagu's `IsUnixLikeShell`).
    pub(crate) errexit: bool,
}

impl DefaultShell {
    /// The default shell for a worker whose `SHELL` is `shell`.
    pub(crate) fn from_env(shell: Option<&OsStr>) -> Self {
        let program = shell
            .map(|s| s.to_string_lossy().trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "sh".to_string());
        let base = program.rsplit('/').next().unwrap_or_default();
        let errexit = matches!(base, "sh" | "bash" | "zsh" | "ksh" | "ash" | "dash");
        Self { program, errexit }
    }

    /// The program's arguments before `-c`: `["-e"]` or none.
    pub(crate) fn args(&self) -> &'static [&'static str] {
        if self.errexit {
            &["-e"]
        } else {
            &[]
        }
    }
}

impl Default for DefaultShell {
    fn default() -> Self {
        Self::from_env(None)
    }
}

impl Inherited {
    /// Filters `vars` (the worker's environment, `std::env::vars_os()`) by `rules`.
    ///
    /// # Errors
    /// A pattern of `rules` that does not parse.
    pub(crate) fn capture(
        rules: &StepEnv,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, PatternError> {
        let compile = |patterns: &[String]| -> Result<Vec<glob::Pattern>, PatternError> {
            patterns
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    glob::Pattern::new(p).map_err(|e| PatternError {
                        pattern: p.to_string(),
                        cause: e.msg.to_string(),
                    })
                })
                .collect()
        };
        let allow = compile(&rules.allow)?;
        let deny = compile(&rules.deny)?;
        let secrets: Vec<&[u8]> = rules
            .secrets
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| !s.is_empty())
            .collect();
        let (vars, removed): (BTreeMap<_, _>, BTreeMap<_, _>) =
            vars.into_iter().partition(|(name, value)| {
                let name = name.to_string_lossy();
                !is_reserved(&name)
                    && !holds_secret(value, &secrets)
                    && (allow.is_empty() || allow.iter().any(|p| p.matches(&name)))
                    && !deny.iter().any(|p| p.matches(&name))
            });
        let shell_var = OsStr::new("SHELL");
        let shell = DefaultShell::from_env(
            vars.get(shell_var)
                .or_else(|| removed.get(shell_var))
                .map(OsString::as_os_str),
        );
        Ok(Self {
            vars,
            removed: removed.into_keys().collect(),
            shell,
        })
    }

    /// The shell of the steps that name none ([`DefaultShell`]), decided at capture.
    pub(crate) fn shell(&self) -> &DefaultShell {
        &self.shell
    }

    /// The worker's own environment, filtered by `rules`.
    ///
    /// # Errors
    /// A pattern of `rules` that does not parse.
    pub(crate) fn from_process(rules: &StepEnv) -> Result<Self, PatternError> {
        Self::capture(rules, std::env::vars_os())
    }

    /// A variable's value.
    pub(crate) fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// Every inherited variable, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars.iter()
    }

    /// How many variables steps inherit.
    pub(crate) fn len(&self) -> usize {
        self.vars.len()
    }

    /// Makes `cmd` start with the inherited environment: removes the worker's variables that
    /// steps do not inherit (a few `env_remove`, no scan of the environment). Leaving the rest
    /// to the process's own environment, rather than `env_clear` and setting every variable,
    /// keeps `PATH` untouched, so std can still start the program with `posix_spawnp` (it
    /// falls back to fork and exec once a command's `PATH` was changed). This relies on the
    /// worker's process environment staying as it was at start (dagrid never calls
    /// `std::env::set_var`).
    pub(crate) fn apply(&self, cmd: &mut tokio::process::Command) {
        for name in &self.removed {
            cmd.env_remove(name);
        }
    }
}

/// True for the worker's own settings ([`RESERVED_PREFIX`], in any case).
/// Makes this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`, Linux): its `/proc/<pid>/`
/// files (`environ`, `mem`, `cmdline`'s neighbours) then belong to root and `ptrace` needs
/// `CAP_SYS_PTRACE`, so a step running as the worker's user cannot read the worker's
/// environment (the Redis URL, tokens) or memory. Steps themselves are not affected: `execve`
/// makes them dumpable again. No core dumps are written for the worker. Elsewhere, nothing.
///
/// # Errors
/// The `prctl` error, which the worker logs as a warning and goes on.
pub(crate) fn hide_process_from_steps() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_dumpable(false).map_err(|e| e.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// True when `value` is one of `secrets`, or contains one of at least
/// [`CONTAINED_SECRET_BYTES`].
fn holds_secret(value: &OsStr, secrets: &[&[u8]]) -> bool {
    let value = value.as_encoded_bytes();
    secrets.iter().any(|s| {
        value == *s
            || (s.len() >= CONTAINED_SECRET_BYTES && value.windows(s.len()).any(|w| w == *s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(inherited: &Inherited) -> Vec<String> {
        inherited
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    const WORKER_ENV: &[(&str, &str)] = &[
        ("PATH", "/usr/bin"),
        ("HOME", "/home/w"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_SECRET_ACCESS_KEY", "k"),
        ("DAGRID_REDIS_URL", "redis://:hunter2hunter2@db:6379"),
        ("DAGRID_ADMIN_TOKEN", "0123456789abcdef0123"),
        ("dagrid_lower", "x"),
        ("CI_TOKEN", "0123456789abcdef0123"),
        ("LOG_URL", "see redis://:hunter2hunter2@db:6379 here"),
        ("SHORT", "pw"),
        ("HAS_PW", "pwd"),
    ];

    #[test]
    fn the_workers_settings_and_secrets_never_pass() {
        let rules = StepEnv {
            secrets: vec![
                "0123456789abcdef0123".into(),
                "hunter2hunter2".into(),
                "pw".into(),
                String::new(),
            ],
            ..StepEnv::default()
        };
        let inherited = Inherited::capture(&rules, vars(WORKER_ENV)).unwrap();
        assert_eq!(
            names(&inherited),
            [
                "AWS_REGION",
                "AWS_SECRET_ACCESS_KEY",
                "HAS_PW",
                "HOME",
                "PATH"
            ],
            "DAGRID_* in any case, a token's value under another name, a value holding the \
             Redis password and one equal to a short secret are stripped; a value merely \
             containing a short secret is not"
        );
        assert_eq!(inherited.get("HOME"), Some(OsStr::new("/home/w")));
        assert_eq!(inherited.get("DAGRID_REDIS_URL"), None);
        assert_eq!(
            inherited.removed,
            [
                "CI_TOKEN",
                "DAGRID_ADMIN_TOKEN",
                "DAGRID_REDIS_URL",
                "LOG_URL",
                "SHORT",
                "dagrid_lower"
            ],
            "what a spawn removes from the process's environment"
        );
    }

    #[test]
    fn allow_then_deny_and_never_the_reserved_prefix() {
        let rules = StepEnv {
            allow: vec!["PATH".into(), "AWS_*".into(), "DAGRID_*".into()],
            deny: vec!["*SECRET*".into()],
            secrets: vec![],
        };
        let inherited = Inherited::capture(&rules, vars(WORKER_ENV)).unwrap();
        assert_eq!(names(&inherited), ["AWS_REGION", "PATH"]);
        let deny_only = StepEnv {
            deny: vec!["AWS_*".into(), " ".into()],
            ..StepEnv::default()
        };
        let inherited = Inherited::capture(&deny_only, vars(WORKER_ENV)).unwrap();
        assert!(!names(&inherited).iter().any(|n| n.starts_with("AWS_")));
        assert!(names(&inherited).contains(&"PATH".to_string()));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let rules = StepEnv {
            allow: vec!["AWS_[".into()],
            ..StepEnv::default()
        };
        let e = Inherited::capture(&rules, vars(WORKER_ENV)).unwrap_err();
        assert_eq!(e.pattern, "AWS_[");
        assert!(e.to_string().contains("AWS_*"), "{e}");
    }
}
