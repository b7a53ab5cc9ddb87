//! A private redis-server: started on a free loopback port (and a unix socket) in its own data
//! directory, stopped when dropped. `dagrid start-all` uses it when no Redis URL is given, and
//! every test uses one of its own, so tests run in parallel and fault tests can stop and restart
//! their server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long the server may take to answer PING after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest unix socket path used (bytes): Linux's `sun_path` holds 108 with the final NUL;
/// a data directory deeper than this leaves the server on TCP only.
const MAX_SOCKET_PATH: usize = 100;

/// Errors starting the private redis-server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// redis-server is not on PATH.
    #[error(
        "redis-server not found on PATH; install it (Debian/Ubuntu: `sudo apt-get install redis-server`) or pass --redis-url to use a running Redis"
    )]
    NotInstalled,
    /// The data directory could not be made, or the process not started.
    #[error("cannot start redis-server: {0}")]
    Io(#[from] std::io::Error),
    /// It started but did not answer PING in time; its log is quoted.
    #[error(
        "redis-server did not answer on port {port} within {START_TIMEOUT:?}; its log says: {log}"
    )]
    NotAnswering {
        /// The port it was told to use.
        port: u16,
        /// The last lines of its log file.
        log: String,
    },
}

/// How the private server keeps its data.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Data directory; a fresh temporary one (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// `appendfsync` policy: `everysec` (default) or `always` (what fault tests use).
    pub appendfsync: &'static str,
    /// The default user's password (`requirepass`); [`EmbeddedRedis::url`] then carries it.
    pub password: Option<String>,
    /// More `redis-server` arguments, appended as given (tests: ACL users, TLS ports).
    pub extra_args: Vec<String>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            dir: None,
            appendfsync: "everysec",
            password: None,
            extra_args: Vec::new(),
        }
    }
}

/// A running private redis-server bound to 127.0.0.1, with `appendonly yes` (by default
/// `appendfsync everysec`: a crash of the machine loses at most the last second of writes) and
/// `maxmemory-policy noeviction` (Redis never deletes keys to free memory), the settings
/// [`crate::redis::server_check`] asks of any Redis.
#[derive(Debug)]
pub struct EmbeddedRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// `<dir>/redis.sock` (mode 0700) when that path is short enough for a unix socket.
    socket: Option<PathBuf>,
    appendfsync: &'static str,
    password: Option<String>,
    extra_args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl EmbeddedRedis {
    /// Starts redis-server on a free port and waits until it answers PING.
    ///
    /// # Errors
    /// [`EmbeddedError::NotInstalled`] when redis-server is not on PATH, or another
    /// [`EmbeddedError`] when it does not start.
    pub async fn start(options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let (temp, dir) = match options.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                // Absolute: redis-server changes into `--dir` before it binds its socket, and a
                // unix URL needs an absolute path.
                (None, std::fs::canonicalize(&dir)?)
            }
            None => {
                let t = tempfile::Builder::new().prefix("dagrid-redis-").tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let socket = Some(dir.join("redis.sock")).filter(|p| socket_path_fits(p));
        let mut last = None;
        // A free port can be taken by someone else between our probe and redis-server's bind.
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = Self {
                child: None,
                port,
                dir: dir.clone(),
                socket: socket.clone(),
                appendfsync: options.appendfsync,
                password: options.password.clone(),
                extra_args: options.extra_args.clone(),
                _temp: None,
            };
            match server.spawn().await {
                Ok(()) => {
                    server._temp = temp;
                    return Ok(server);
                }
                Err(e @ EmbeddedError::NotAnswering { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(EmbeddedError::NotAnswering {
            port: 0,
            log: String::new(),
        }))
    }

    async fn spawn(&mut self) -> Result<(), EmbeddedError> {
        let log = self.dir.join("redis.log");
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        if let Some(socket) = &self.socket {
            command
                .arg("--unixsocket")
                .arg(socket)
                .args(["--unixsocketperm", "700"]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", self.appendfsync])
            .args(["--save", ""])
            .args(["--maxmemory-policy", "noeviction"])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => EmbeddedError::NotInstalled,
                _ => EmbeddedError::Io(e),
            })?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.answers().await {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait()?.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill().await;
        Err(EmbeddedError::NotAnswering {
            port: self.port,
            log: tail_of(&log),
        })
    }

    async fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING").query_async::<()>(&mut c).await.is_ok()
    }

    /// `redis://127.0.0.1:<port>`, or `redis://:<password>@127.0.0.1:<port>` with a password
    /// (percent-encoded).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{}@127.0.0.1:{}", encoded(p), self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The URL for clients on this machine: `unix://<dir>/redis.sock` (with `?pass=<password>`
    /// when it has one), else [`EmbeddedRedis::url`]. A unix socket skips the TCP stack: each
    /// round trip costs Redis and its client about half the system time of one over loopback
    /// TCP, which is most of what a one-step run costs beyond its process.
    pub fn local_url(&self) -> String {
        match (&self.socket, &self.password) {
            (Some(s), Some(p)) => format!("unix://{}?pass={}", s.display(), encoded(p)),
            (Some(s), None) => format!("unix://{}", s.display()),
            (None, _) => self.url(),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (the append-only file lives here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it with SIGTERM (Redis flushes the append-only file and exits) and waits.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Kills it with SIGKILL (a crash: only what reached the append-only file survives).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and data directory, after [`EmbeddedRedis::stop`] or
    /// [`EmbeddedRedis::kill`].
    ///
    /// # Errors
    /// As [`EmbeddedRedis::start`].
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop().await;
        self.spawn().await
    }
}

/// What a URL's password may hold as it is (RFC 3986's unreserved characters); the rest is
/// percent-encoded.
const PASSWORD_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a URL ([`PASSWORD_SET`]).
fn encoded(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, PASSWORD_SET)
}

/// Whether `path` can be a unix socket in a `unix://` URL: short enough for `sun_path`
/// ([`MAX_SOCKET_PATH`]) and made of characters a URL path keeps as they are (letters, digits,
/// `/ . _ -`); any other data directory leaves the server on TCP only.
fn socket_path_fits(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        p.len() <= MAX_SOCKET_PATH
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ping(url: &str) -> redis::RedisResult<String> {
        let client = redis::Client::open(url)?;
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut c).await
    }

    #[tokio::test]
    async fn answers_on_its_unix_socket_and_on_tcp() {
        let server = EmbeddedRedis::start(EmbeddedOptions {
            password: Some("p w/?#".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let local = server.local_url();
        assert!(local.starts_with("unix://"), "{local}");
        assert!(
            local.ends_with("/redis.sock?pass=p%20w%2F%3F%23"),
            "{local}"
        );
        assert_eq!(ping(&local).await.unwrap(), "PONG");
        assert_eq!(ping(&server.url()).await.unwrap(), "PONG");
        let mode = std::fs::metadata(server.dir().join("redis.sock"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn socket_paths_are_short_plain_and_absolute() {
        assert!(socket_path_fits(Path::new(
            "/tmp/dagrid-redis-Ab_1.x/redis.sock"
        )));
        assert!(!socket_path_fits(Path::new("/tmp/a b/redis.sock")));
        assert!(!socket_path_fits(Path::new("/tmp/a?b/redis.sock")));
        assert!(!socket_path_fits(Path::new(&format!(
            "/{}/redis.sock",
            "d".repeat(100)
        ))));
    }

    #[tokio::test]
    async fn a_relative_data_dir_is_made_absolute() {
        let base = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let rel = base.path().strip_prefix("/").unwrap();
        let relative = std::path::PathBuf::from(
            std::iter::repeat_n("..", cwd.components().count() - 1)
                .collect::<Vec<_>>()
                .join("/"),
        )
        .join(rel)
        .join("data");
        let server = EmbeddedRedis::start(EmbeddedOptions {
            dir: Some(relative),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(server.dir().is_absolute());
        assert_eq!(ping(&server.local_url()).await.unwrap(), "PONG");
    }

    #[tokio::test]
    async fn a_data_dir_too_deep_for_a_socket_leaves_tcp() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("d".repeat(120));
        let server = EmbeddedRedis::start(EmbeddedOptions {
            dir: Some(deep),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(server.local_url(), server.url());
        assert_eq!(ping(&server.local_url()).await.unwrap(), "PONG");
    }
}
