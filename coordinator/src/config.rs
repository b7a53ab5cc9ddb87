//! Loading and checking the coordinator's settings ([`crate::Config`]) for `dagrid coordinator`
//! and `dagrid start-all`: a `--config` YAML file in Dagu's style, then `--queue` and `--timezone`
//! (or `DAGRID_QUEUES`, `DAGRID_TIMEZONE`), which override it; `--retention-age` and
//! `--retention-count` (`DAGRID_RETENTION_AGE`, `DAGRID_RETENTION_COUNT`), `--lease-timeout` and the HTTP limits (`--header-read-timeout`, `--body-read-timeout`, `--idle-timeout`, `--max-connections`) are flags only. Validated once, here, with
//! errors that name the flag or the file's field and the fix.
//!
//! The file takes Dagu's keys:
//!
//! ```yaml
//! queues:                      # or Dagu's form: queues: {enabled: true, config: [...]}
//!   - name: batch
//!     maxConcurrency: 2        # or max_concurrency
//! timezone: Europe/Paris       # or Dagu's tz
//! ```
//!
//! Other top-level keys (a full Dagu `config.yaml` has many) are ignored with a warning.
//!
//! API tokens ([`crate::Auth`]) come from the file's `auth:` section, from
//! `--token-file` (lines `<role> <token> [name]`) and from the environment variables
//! `DAGRID_ADMIN_TOKEN` and `DAGRID_READ_TOKEN`, all of them together:
//!
//! ```yaml
//! auth:
//!   tokens:
//!     - name: ci
//!       role: admin              # admin | read
//!       token_file: /etc/dagrid/ci.token   # or token_env: CI_TOKEN, or token: <value>
//!   public_metrics: true         # GET /metrics without a token (default true)
//!   public_health: false         # GET /health without a token (default false)
//! ```
//!
//! A token must have at least [`MIN_TOKEN_CHARS`] characters; names and values must differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_yaml::Value;

/// Why the settings cannot be loaded; the message names the flag, variable or field and the
/// fix (the CLI prints it with its cause: `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (`--config`, `--token-file`) cannot be read.
    #[error("{what}")]
    Read {
        /// Which file, and what to pass instead.
        what: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Flags of the coordinator's queue and schedule settings.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorConfigArgs {
    /// A YAML file of coordinator settings in Dagu's style:
    /// `queues: [{name: batch, maxConcurrency: 2}]` and `timezone: Europe/Paris`;
    /// --queue and --timezone override it.
    #[arg(long, env = "DAGRID_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// A named queue and its maxConcurrency, the most runs of the queue active at once:
    /// NAME=MAX. Repeatable, or comma-separated (DAGRID_QUEUES=batch=2,reports=1); overrides
    /// the same queue of --config.
    #[arg(
        long = "queue",
        env = "DAGRID_QUEUES",
        value_name = "NAME=MAX",
        value_delimiter = ',',
        value_parser = parse_queue_flag
    )]
    queues: Vec<(String, u32)>,
    /// Default IANA time zone of cron schedules that name none (no CRON_TZ= and no
    /// `timezone:` in the DAG), e.g. Europe/Paris; default UTC. Overrides --config.
    #[arg(long, env = "DAGRID_TIMEZONE", value_name = "ZONE", value_parser = parse_timezone_flag)]
    timezone: Option<String>,
    /// How long a worker may go without a heartbeat before the steps it claimed are taken
    /// back and run again elsewhere, e.g. 10s (the default) or 30s. At least 1s, and several
    /// times the workers' --heartbeat-interval.
    #[arg(long, env = "DAGRID_LEASE_TIMEOUT", value_name = "DURATION", value_parser = dagrid_shared::duration::parse_lease_timeout)]
    lease_timeout: Option<std::time::Duration>,
    /// How long a finished run (succeeded, failed, aborted) is kept after it finished, with
    /// its step log tails, e.g. 7d, 36h, 30m; 0 keeps runs whatever their age.
    #[arg(long, env = "DAGRID_RETENTION_AGE", value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    retention_age: std::time::Duration,
    /// How many finished runs are kept at most (the newest by creation time); 0 keeps any
    /// number.
    #[arg(
        long,
        env = "DAGRID_RETENTION_COUNT",
        value_name = "RUNS",
        default_value_t = 10_000
    )]
    retention_count: u64,
    /// Longest wait for a complete request head, also the longest silence of a kept-alive
    /// connection between requests, e.g. 10s (the default).
    #[arg(long, env = "DAGRID_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_http_timeout)]
    header_read_timeout: std::time::Duration,
    /// Longest silence while reading a request body (between two reads), e.g. 30s (the
    /// default); the request then fails with 400 body_read_failed.
    #[arg(long, env = "DAGRID_BODY_READ_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_http_timeout)]
    body_read_timeout: std::time::Duration,
    /// A connection on which no byte moves for this long is closed, e.g. 60s (the default);
    /// keep it above the event stream's 15s keep-alive.
    #[arg(long, env = "DAGRID_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_http_timeout)]
    idle_timeout: std::time::Duration,
    /// Most API connections served at once; 16 more are kept for /health/live, /health/ready
    /// and /metrics, and beyond those new connections are closed. Default: the open-files
    /// limit (raised to its hard limit at start) less 272, at most 16384.
    #[arg(long, env = "DAGRID_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// A file of API tokens, one per line: `<role> <token> [name]`, role `admin` or `read`
    /// (`#` starts a comment). Requests then need `Authorization: Bearer <token>` (the CLI's
    /// --token). Also DAGRID_ADMIN_TOKEN / DAGRID_READ_TOKEN and `auth.tokens` of --config.
    #[arg(long, env = "DAGRID_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve the API without any token on an address other than loopback (by default a
    /// coordinator without tokens refuses to listen beyond 127.0.0.1 / ::1).
    #[arg(long, env = "DAGRID_INSECURE_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "true|false")]
    insecure_no_auth: bool,
}

/// Shortest API token accepted, in characters: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `--header-read-timeout`, `--body-read-timeout`, `--idle-timeout`: a humantime duration of
/// at least 100 ms.
fn parse_http_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; write a duration such as 10s or 1m"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s} is too short; use at least 100ms"));
    }
    Ok(d)
}

/// The effective settings, after the file and the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// Queue name → maxConcurrency (≥ 1).
    pub queues: BTreeMap<String, u32>,
    /// Default IANA zone of cron schedules; `None`: UTC.
    pub timezone: Option<String>,
    /// The lease (`--lease-timeout`); `None`: the coordinator's default.
    pub lease_timeout: Option<std::time::Duration>,
    /// Finished runs are deleted this long after they finished (`--retention-age`; zero: never
    /// by age).
    pub retention_age: std::time::Duration,
    /// At most this many finished runs are kept (`--retention-count`; 0: any number).
    pub retention_count: u64,
    /// API tokens and public paths.
    pub auth: AuthSettings,
    /// HTTP deadlines and connection cap (`--header-read-timeout`, `--body-read-timeout`,
    /// `--idle-timeout`, `--max-connections`).
    pub http: crate::HttpLimits,
}

/// The API access settings: tokens from every source, and which paths are public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// (name, role, secret), in the order read: the file's `auth.tokens`, `--token-file`, the
    /// environment.
    pub tokens: Vec<(String, crate::Role, String)>,
    /// `auth.public_metrics` (default true).
    pub public_metrics: bool,
    /// `auth.public_health` (default false).
    pub public_health: bool,
    /// `--insecure-no-auth`.
    pub insecure_no_auth: bool,
}

/// The coordinator's defaults ([`crate::Auth`]), no token.
impl Default for AuthSettings {
    fn default() -> Self {
        let auth = crate::Auth::default();
        Self {
            tokens: Vec::new(),
            public_metrics: auth.public_metrics,
            public_health: auth.public_health,
            insecure_no_auth: auth.insecure_no_auth,
        }
    }
}

impl AuthSettings {
    /// The coordinator's form.
    fn to_auth(&self) -> crate::Auth {
        crate::Auth {
            tokens: self
                .tokens
                .iter()
                .map(|(name, role, secret)| {
                    crate::ApiToken::new(name.clone(), *role, secret.clone())
                })
                .collect(),
            public_metrics: self.public_metrics,
            public_health: self.public_health,
            insecure_no_auth: self.insecure_no_auth,
        }
    }

    /// Adds a token read from `source` (a field name for messages), checking it.
    fn add(
        &mut self,
        source: String,
        name: String,
        role: crate::Role,
        secret: &str,
    ) -> Result<(), String> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(format!(
                "{source}: the token is empty; give it a secret value (e.g. `openssl rand -hex 32`)"
            ));
        }
        let chars = secret.chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(format!(
                "{source}: the token has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
            ));
        }
        if secret.chars().any(char::is_whitespace) {
            return Err(format!(
                "{source}: the token contains whitespace; use a token without spaces"
            ));
        }
        if let Some((other, _, _)) = self.tokens.iter().find(|(n, _, _)| *n == name) {
            return Err(format!(
                "{source}: the name {other:?} is given to two tokens; name each token once"
            ));
        }
        if let Some((other, _, _)) = self.tokens.iter().find(|(_, _, s)| s == secret) {
            return Err(format!(
                "{source}: the token has the same value as token {other:?}; give each token its own"
            ));
        }
        self.tokens.push((name, role, secret.to_string()));
        Ok(())
    }
}

/// `admin` or `read`.
fn parse_role(s: &str) -> Result<crate::Role, String> {
    match s.trim() {
        "admin" => Ok(crate::Role::Admin),
        "read" => Ok(crate::Role::Read),
        other => Err(format!("{other:?} is not a role; use admin or read")),
    }
}

/// The lines of a `--token-file`: `<role> <token> [name]`; blank lines and `#` comments
/// skipped. A line without a name is named `<file>:<line>`.
fn read_token_file(path: &Path, auth: &mut AuthSettings) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: format!(
            "cannot read --token-file {}; pass a readable file of `<role> <token> [name]` lines",
            path.display()
        ),
        source,
    })?;
    for (i, line) in text.lines().enumerate() {
        let at = format!("--token-file {} line {}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (role, secret, name) = match fields.as_slice() {
            [role, secret] => (*role, *secret, format!("{}:{}", path.display(), i + 1)),
            [role, secret, name] => (*role, *secret, name.to_string()),
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "{at}: write `<role> <token> [name]`, e.g. `admin 3f9c… ci`"
                )))
            }
        };
        let role = parse_role(role).map_err(|e| ConfigError::Invalid(format!("{at}: role {e}")))?;
        auth.add(at, name, role, secret)
            .map_err(ConfigError::Invalid)?;
    }
    Ok(())
}

impl CoordinatorSettings {
    /// Puts the settings into the coordinator's configuration.
    pub fn apply(self, config: &mut crate::Config) {
        config.queues = self.queues;
        config.timezone = self.timezone;
        config.lease_timeout = self.lease_timeout;
        config.retention_age = self.retention_age;
        config.retention_count = self.retention_count;
        config.auth = self.auth.to_auth();
        config.http = self.http;
    }
}

impl CoordinatorConfigArgs {
    /// Reads `--config` (if any) and lays the flags over it; returns the settings and the
    /// warnings to log (keys of the file that dagrid does not use).
    ///
    /// # Errors
    /// When the file cannot be read, is not YAML, or has invalid queues or time zone; every
    /// problem of the file is listed, each with its field.
    pub fn resolve(&self) -> Result<(CoordinatorSettings, Vec<String>), ConfigError> {
        self.resolve_with_env(|name| std::env::var(name).ok())
    }

    /// [`Self::resolve`], reading environment variables through `env`.
    fn resolve_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(CoordinatorSettings, Vec<String>), ConfigError> {
        let (mut settings, warnings) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    what: format!(
                        "cannot read --config {}; pass an existing YAML file",
                        path.display()
                    ),
                    source,
                })?;
                let file = parse_config_file(&text, &env).map_err(|problems| {
                    ConfigError::Invalid(format!(
                        "--config {}:\n  {}",
                        path.display(),
                        problems.join("\n  ")
                    ))
                })?;
                let warnings = file
                    .warnings
                    .iter()
                    .map(|w| format!("--config {}: {w}", path.display()))
                    .collect();
                (file.settings, warnings)
            }
            None => (CoordinatorSettings::default(), Vec::new()),
        };
        let mut seen = BTreeMap::new();
        for (name, max) in &self.queues {
            if let Some(previous) = seen.insert(name.as_str(), *max) {
                return Err(ConfigError::Invalid(format!(
                    "--queue {name} is given twice ({name}={previous} and {name}={max}); give each queue once"
                )));
            }
            settings.queues.insert(name.clone(), *max);
        }
        if let Some(tz) = &self.timezone {
            settings.timezone = Some(tz.clone());
        }
        settings.lease_timeout = self.lease_timeout;
        settings.retention_age = self.retention_age;
        settings.retention_count = self.retention_count;
        if let Some(path) = &self.token_file {
            read_token_file(path, &mut settings.auth)?;
        }
        for (var, role) in [
            ("DAGRID_ADMIN_TOKEN", crate::Role::Admin),
            ("DAGRID_READ_TOKEN", crate::Role::Read),
        ] {
            if let Some(secret) = env(var) {
                settings
                    .auth
                    .add(var.to_string(), var.to_string(), role, &secret)
                    .map_err(ConfigError::Invalid)?;
            }
        }
        settings.auth.insecure_no_auth = self.insecure_no_auth;
        settings.http = crate::HttpLimits {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections.map(|n| n as usize),
        };
        Ok((settings, warnings))
    }

    /// The config file, if one was given (for log lines).
    pub fn file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// Why `name` is not a valid queue name, if it is not: the rule of DAG names
/// ([`dagrid_shared::dag::name_problem`]), with the fix.
pub fn queue_name_problem(name: &str) -> Option<String> {
    dagrid_shared::dag::name_problem(name)
        .map(|problem| format!("{problem}; {}", dagrid_shared::dag::NAME_RULE))
}

/// `--queue NAME=MAX`.
fn parse_queue_flag(s: &str) -> Result<(String, u32), String> {
    let Some((name, max)) = s.split_once('=') else {
        return Err(
            "no `=`; write NAME=MAX, e.g. --queue batch=2 (DAGRID_QUEUES=batch=2,reports=1)".into(),
        );
    };
    let (name, max) = (name.trim(), max.trim());
    if let Some(problem) = queue_name_problem(name) {
        return Err(format!("the queue name {name:?} {problem}"));
    }
    let max = check_max(max.parse::<i64>().ok())?;
    Ok((name.to_string(), max))
}

/// A maxConcurrency: an integer from 1 to 2^32-1.
fn check_max(n: Option<i64>) -> Result<u32, String> {
    match n {
        Some(n) if n >= 1 => u32::try_from(n)
            .map_err(|_| format!("maxConcurrency {n} is too large; use at most {}", u32::MAX)),
        Some(_) => Err("maxConcurrency must be at least 1 (pause a queue with `dagrid queue pause NAME` instead)".into()),
        None => Err("maxConcurrency must be a whole number of runs, at least 1".into()),
    }
}

/// `--timezone ZONE`.
fn parse_timezone_flag(s: &str) -> Result<String, String> {
    dagrid_shared::schedule::parse_timezone(s).map(|_| s.trim().to_string())
}

/// What a `--config` file holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct ConfigFile {
    settings: CoordinatorSettings,
    /// Keys dagrid does not use, ignored.
    warnings: Vec<String>,
}

/// Parses the text of a `--config` file.
///
/// # Errors
/// Every problem found, one message each, naming the field (`queues[1].maxConcurrency`).
fn parse_config_file(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConfigFile, Vec<String>> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
    let mut out = ConfigFile::default();
    let mut problems = Vec::new();
    let top = match doc {
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        _ => {
            return Err(vec![
                "the file must be a mapping of settings, e.g. `timezone: UTC`".into(),
            ])
        }
    };
    let mut timezone_key: Option<&str> = None;
    for (key, value) in &top {
        let Some(key) = key.as_str() else {
            problems.push(format!("key {key:?} is not a string"));
            continue;
        };
        match key {
            "queues" => read_queues(value, &mut out, &mut problems),
            "auth" => read_auth(value, env, &mut out.settings.auth, &mut problems),
            "timezone" | "tz" => {
                if let Some(other) = timezone_key {
                    problems.push(format!("both {other} and {key} are set; keep one of them"));
                    continue;
                }
                timezone_key = Some(key);
                match value.as_str() {
                    Some(zone) => match dagrid_shared::schedule::parse_timezone(zone) {
                        Ok(_) => out.settings.timezone = Some(zone.trim().to_string()),
                        Err(e) => problems.push(format!("{key}: {e}")),
                    },
                    None => problems.push(format!(
                        "{key}: must be an IANA time zone name such as Europe/Paris"
                    )),
                }
            }
            other => out
                .warnings
                .push(format!("key `{other}` is not a dagrid setting; ignored")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `auth:`: `tokens` (a list of `{name, role, token | token_file | token_env}`),
/// `public_metrics`, `public_health`.
fn read_auth(
    value: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    auth: &mut AuthSettings,
    problems: &mut Vec<String>,
) {
    let m = match value {
        Value::Null => return,
        Value::Mapping(m) => m,
        _ => {
            problems.push(
                "auth must be a mapping: {tokens: [...], public_metrics, public_health}".into(),
            );
            return;
        }
    };
    for (k, v) in m {
        match k.as_str().unwrap_or_default() {
            key @ ("public_metrics" | "public_health") => match v.as_bool() {
                Some(b) if key == "public_metrics" => auth.public_metrics = b,
                Some(b) => auth.public_health = b,
                None => problems.push(format!("auth.{key} must be true or false")),
            },
            "tokens" => {
                let Some(items) = v.as_sequence() else {
                    if !v.is_null() {
                        problems.push("auth.tokens must be a list of {name, role, token_file | token_env | token}".into());
                    }
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Err(e) = read_token(&format!("auth.tokens[{i}]"), item, env, auth) {
                        problems.push(e);
                    }
                }
            }
            other => problems.push(format!(
                "auth.{other} is not an auth setting; use tokens, public_metrics and public_health"
            )),
        }
    }
}

/// One entry of `auth.tokens`.
fn read_token(
    at: &str,
    item: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    auth: &mut AuthSettings,
) -> Result<(), String> {
    let Value::Mapping(m) = item else {
        return Err(format!(
            "{at} must be a mapping {{name, role, token_file | token_env | token}}"
        ));
    };
    let mut name = None;
    let mut role = None;
    let mut secret: Option<(&str, String)> = None;
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{at}.{key} must be a string"))
        };
        match key {
            "name" => name = Some(text()?),
            "role" => {
                role = Some(parse_role(&text()?).map_err(|e| format!("{at}.role: {e}"))?)
            }
            "token" | "token_file" | "token_env" => {
                if let Some((other, _)) = secret {
                    return Err(format!(
                        "{at}: both {other} and {key} are set; give the token one way"
                    ));
                }
                let value = text()?;
                let value = match key {
                    "token_file" => std::fs::read_to_string(&value).map_err(|e| {
                        format!("{at}.token_file: cannot read {value}: {e}; pass a readable file holding the token")
                    })?,
                    "token_env" => env(&value).ok_or_else(|| {
                        format!("{at}.token_env: the environment variable {value} is not set; set it to the token")
                    })?,
                    _ => value,
                };
                secret = Some((key, value));
            }
            other => {
                return Err(format!(
                    "{at}.{other} is not a token setting; use name, role and one of token_file, token_env, token"
                ))
            }
        }
    }
    let name = name.ok_or_else(|| format!("{at}.name is missing; name every token (for logs)"))?;
    if name.trim().is_empty() {
        return Err(format!("{at}.name is empty; name every token (for logs)"));
    }
    let role = role.ok_or_else(|| format!("{at}.role is missing; use admin or read"))?;
    let (key, secret) = secret
        .ok_or_else(|| format!("{at}: no token; give one of token_file, token_env or token"))?;
    auth.add(format!("{at}.{key}"), name, role, &secret)
}

/// `queues:` as a list of `{name, maxConcurrency}`, or Dagu's `{enabled, config: [...]}`.
fn read_queues(value: &Value, out: &mut ConfigFile, problems: &mut Vec<String>) {
    let (items, field) = match value {
        Value::Null => return,
        Value::Sequence(items) => (items, "queues"),
        Value::Mapping(m) => {
            for (k, _) in m {
                let k = k.as_str().unwrap_or_default();
                if !matches!(k, "enabled" | "config") {
                    problems.push(format!(
                        "queues.{k} is not a queues setting; use enabled and config (a list of {{name, maxConcurrency}})"
                    ));
                }
            }
            match m.get("enabled") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    out.warnings.push(
                        "queues.enabled is false: no queue limits are configured from this file"
                            .into(),
                    );
                    return;
                }
                Some(_) => {
                    problems.push("queues.enabled must be true or false".into());
                    return;
                }
            }
            match m.get("config") {
                None | Some(Value::Null) => return,
                Some(Value::Sequence(items)) => (items, "queues.config"),
                Some(_) => {
                    problems.push("queues.config must be a list of {name, maxConcurrency}".into());
                    return;
                }
            }
        }
        _ => {
            problems.push(
                "queues must be a list of {name, maxConcurrency}, e.g. queues: [{name: batch, maxConcurrency: 2}]"
                    .into(),
            );
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::Mapping(m) = item else {
            problems.push(format!("{at} must be a mapping {{name, maxConcurrency}}"));
            continue;
        };
        let mut name = None;
        let mut max: Option<(&str, &Value)> = None;
        for (k, v) in m {
            match k.as_str().unwrap_or_default() {
                "name" => name = Some(v),
                key @ ("maxConcurrency" | "max_concurrency") => {
                    if let Some((other, _)) = max {
                        problems.push(format!(
                            "{at}: both {other} and {key} are set; keep one of them"
                        ));
                    }
                    max = Some((key, v));
                }
                other => problems.push(format!(
                    "{at}.{other} is not a queue setting; use name and maxConcurrency"
                )),
            }
        }
        let name = match name.map(|v| v.as_str()) {
            None => {
                problems.push(format!("{at}.name is missing; every queue needs a name"));
                None
            }
            Some(None) => {
                problems.push(format!("{at}.name must be a string"));
                None
            }
            Some(Some(n)) => match queue_name_problem(n) {
                Some(problem) => {
                    problems.push(format!("{at}.name {n:?} {problem}"));
                    None
                }
                None => Some(n),
            },
        };
        let max = match max {
            None => {
                problems.push(format!(
                    "{at}.maxConcurrency is missing; give the most runs of the queue active at once, at least 1"
                ));
                None
            }
            Some((key, v)) => match check_max(v.as_i64()) {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!("{at}.{key}: {e}"));
                    None
                }
            },
        };
        if let (Some(name), Some(max)) = (name, max) {
            if out.settings.queues.insert(name.to_string(), max).is_some() {
                problems.push(format!(
                    "{at}.name: queue {name} is listed twice; list each queue once"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The file parser with no environment variable set.
    fn parse_config_file(text: &str) -> Result<ConfigFile, Vec<String>> {
        super::parse_config_file(text, &|_| None)
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CoordinatorConfigArgs,
    }

    fn parse(args: &[&str]) -> Result<CoordinatorConfigArgs, String> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn queue_names_follow_the_dag_name_rule() {
        for ok in ["batch", "a", "A.b-c_9", &"x".repeat(64)] {
            assert_eq!(queue_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "..", "has space", "slash/", "é", &"x".repeat(65)] {
            assert!(queue_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn queue_flags_are_name_equals_max() {
        assert_eq!(parse_queue_flag("batch=2").unwrap(), ("batch".into(), 2));
        assert_eq!(
            parse_queue_flag(" batch = 3 ").unwrap(),
            ("batch".into(), 3)
        );
        let e = parse_queue_flag("batch=0").unwrap_err();
        assert!(e.starts_with("maxConcurrency must be at least 1"), "{e}");
        let e = parse_queue_flag("batch").unwrap_err();
        assert!(e.contains("write NAME=MAX"), "{e}");
        let e = parse_queue_flag("bad name=2").unwrap_err();
        assert!(e.contains("A-Z a-z 0-9 _ . -"), "{e}");
        assert!(parse_queue_flag("batch=two").is_err());
        assert!(parse_queue_flag("batch=-1").is_err());
        assert!(parse_queue_flag("batch=4294967296")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn flags_repeat_or_take_commas_and_twice_is_an_error() {
        let args = parse(&["--queue", "a=2,b=3", "--queue", "c=1"]).unwrap();
        let (s, _) = args.resolve().unwrap();
        assert_eq!(
            s.queues,
            BTreeMap::from([("a".into(), 2), ("b".into(), 3), ("c".into(), 1)])
        );
        let twice = parse(&["--queue", "a=2", "--queue", "a=3"]).unwrap();
        let e = twice.resolve().unwrap_err().to_string();
        assert!(e.contains("--queue a is given twice"), "{e}");
        let e = parse(&["--queue", "a=0"]).unwrap_err();
        assert!(
            e.contains("'a=0' for '--queue <NAME=MAX>': maxConcurrency must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn retention_defaults_to_7_days_and_10000_runs_and_0_disables() {
        let (s, _) = parse(&[]).unwrap().resolve().unwrap();
        assert_eq!(
            s.retention_age,
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(s.retention_count, 10_000);
        let args = parse(&["--retention-age", "0", "--retention-count", "0"]).unwrap();
        let (s, _) = args.resolve().unwrap();
        assert_eq!(s.retention_age, std::time::Duration::ZERO);
        assert_eq!(s.retention_count, 0);
        let (s, _) = parse(&["--retention-age", "36h"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(s.retention_age, std::time::Duration::from_secs(36 * 3600));
        assert!(parse(&["--retention-age", "soon"]).is_err());
    }

    #[test]
    fn timezones_are_iana_names() {
        let args = parse(&["--timezone", "Europe/Paris"]).unwrap();
        assert_eq!(
            args.resolve().unwrap().0.timezone.as_deref(),
            Some("Europe/Paris")
        );
        let e = parse(&["--timezone", "Mars/Olympus"]).unwrap_err();
        assert!(e.contains("--timezone") && e.contains("IANA"), "{e}");
    }

    #[test]
    fn the_file_takes_a_list_or_daguss_form_and_either_spelling() {
        let f = parse_config_file(
            "queues:\n  - name: batch\n    maxConcurrency: 2\n  - name: reports\n    max_concurrency: 1\ntimezone: Europe/Paris\n",
        )
        .unwrap();
        assert_eq!(
            f.settings.queues,
            BTreeMap::from([("batch".into(), 2), ("reports".into(), 1)])
        );
        assert_eq!(f.settings.timezone.as_deref(), Some("Europe/Paris"));
        assert!(f.warnings.is_empty());

        let dagu = parse_config_file(
            "host: 127.0.0.1\ntz: UTC\nqueues:\n  enabled: true\n  config:\n    - name: critical\n      maxConcurrency: 5\n",
        )
        .unwrap();
        assert_eq!(
            dagu.settings.queues,
            BTreeMap::from([("critical".into(), 5)])
        );
        assert_eq!(dagu.settings.timezone.as_deref(), Some("UTC"));
        assert_eq!(dagu.warnings.len(), 1, "{:?}", dagu.warnings);
        assert!(dagu.warnings[0].contains("`host`"));

        let off =
            parse_config_file("queues: {enabled: false, config: [{name: a, maxConcurrency: 1}]}")
                .unwrap();
        assert!(off.settings.queues.is_empty());
        assert!(off.warnings[0].contains("enabled is false"));

        assert_eq!(parse_config_file("").unwrap(), ConfigFile::default());
    }

    #[test]
    fn every_problem_of_the_file_is_named_with_its_field() {
        let problems = parse_config_file(
            "queues:\n  - name: batch\n    maxConcurrency: 0\n  - name: bad name\n    maxConcurrency: 1\n  - maxConcurency: 2\n    name: x\n  - name: batch\n    maxConcurrency: 1\ntimezone: Mars/Olympus\n",
        )
        .unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains("queues[0].maxConcurrency: maxConcurrency must be at least 1"),
            "{all}"
        );
        assert!(all.contains("queues[1].name \"bad name\""), "{all}");
        assert!(
            all.contains("queues[2].maxConcurency is not a queue setting"),
            "{all}"
        );
        assert!(all.contains("queues[2].maxConcurrency is missing"), "{all}");
        assert!(
            all.contains("timezone: \"Mars/Olympus\" is not an IANA time zone"),
            "{all}"
        );
        // queues[3] repeats batch, whose first entry was invalid, so it is not a duplicate.
        assert_eq!(problems.len(), 5, "{all}");

        let dup = parse_config_file(
            "queues: [{name: a, maxConcurrency: 1}, {name: a, maxConcurrency: 2}]",
        )
        .unwrap_err();
        assert!(
            dup[0].contains("queues[1].name: queue a is listed twice"),
            "{dup:?}"
        );
        let both = parse_config_file("timezone: UTC\ntz: UTC\n").unwrap_err();
        assert!(both[0].contains("both timezone and tz"), "{both:?}");
        assert!(parse_config_file("queues: 3").unwrap_err()[0].contains("must be a list"));
        assert!(parse_config_file("- a").unwrap_err()[0].contains("mapping"));
        assert!(parse_config_file("a: [").unwrap_err()[0].contains("not valid YAML"));
    }

    #[test]
    fn flags_override_the_file_queue_by_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dagrid.yaml");
        std::fs::write(
            &path,
            "queues: [{name: batch, maxConcurrency: 2}, {name: reports, maxConcurrency: 1}]\ntimezone: Europe/Paris\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let args = parse(&["--config", path, "--queue", "batch=8", "--timezone", "UTC"]).unwrap();
        let (s, warnings) = args.resolve().unwrap();
        assert_eq!(
            s.queues,
            BTreeMap::from([("batch".into(), 8), ("reports".into(), 1)])
        );
        assert_eq!(s.timezone.as_deref(), Some("UTC"));
        assert!(warnings.is_empty());

        std::fs::write(
            dir.path().join("bad.yaml"),
            "queues: [{name: a, maxConcurrency: 0}]",
        )
        .unwrap();
        let bad = dir.path().join("bad.yaml");
        let e = parse(&["--config", bad.to_str().unwrap()])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--config ") && e.contains("queues[0].maxConcurrency"),
            "{e}"
        );
        let missing = parse(&["--config", "/nonexistent/dagrid.yaml"]).unwrap();
        assert!(missing
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("cannot read --config"));
    }

    #[test]
    fn tokens_come_from_the_file_the_token_file_and_the_environment() {
        use crate::Role;
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("ci.token");
        std::fs::write(&secret_file, "file-secret-0123456789\n").unwrap();
        let config = dir.path().join("dagrid.yaml");
        std::fs::write(
            &config,
            format!(
                "auth:\n  tokens:\n    - {{name: ci, role: admin, token_file: {}}}\n    - {{name: dash, role: read, token_env: DASH}}\n  public_metrics: false\n  public_health: true\n",
                secret_file.display()
            ),
        )
        .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "# comment\n\nread line-secret-0123456789 viewer\n").unwrap();
        let args = parse(&[
            "--config",
            config.to_str().unwrap(),
            "--token-file",
            tokens.to_str().unwrap(),
        ])
        .unwrap();
        let env = |name: &str| match name {
            "DASH" => Some("env-secret-0123456789".to_string()),
            "DAGRID_ADMIN_TOKEN" => Some("admin-secret-0123456789".to_string()),
            _ => None,
        };
        let (s, warnings) = args.resolve_with_env(env).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let got: Vec<(&str, Role, &str)> = s
            .auth
            .tokens
            .iter()
            .map(|(n, r, t)| (n.as_str(), *r, t.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ci", Role::Admin, "file-secret-0123456789"),
                ("dash", Role::Read, "env-secret-0123456789"),
                ("viewer", Role::Read, "line-secret-0123456789"),
                ("DAGRID_ADMIN_TOKEN", Role::Admin, "admin-secret-0123456789"),
            ]
        );
        assert!(!s.auth.public_metrics && s.auth.public_health);
        assert!(!s.auth.insecure_no_auth);
        let open = parse(&["--insecure-no-auth"]).unwrap();
        assert!(
            open.resolve_with_env(|_| None)
                .unwrap()
                .0
                .auth
                .insecure_no_auth
        );
        let (none, _) = parse(&[]).unwrap().resolve_with_env(|_| None).unwrap();
        assert!(none.auth.tokens.is_empty() && none.auth.public_metrics);
    }

    #[test]
    fn bad_token_settings_name_their_field() {
        let problems = parse_config_file(
            "auth:\n  tokens:\n    - {name: a, role: writer, token: 0123456789abcdefg}\n    - {role: read, token: 0123456789abcdefg}\n    - {name: c, role: read, token: x, token_env: Y}\n    - {name: d, role: read}\n  public_health: maybe\n  other: 1\n",
        )
        .unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "auth.tokens[0].role: \"writer\" is not a role; use admin or read",
            "auth.tokens[1].name is missing",
            "auth.tokens[2]: both token and token_env are set",
            "auth.tokens[3]: no token",
            "auth.public_health must be true or false",
            "auth.other is not an auth setting",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        assert!(!all.contains("0123456789abcdefg"), "{all}");
    }
}
