//! A `dagrid` (or `dagrid-worker`) process of a test, with its output in a file: spawn,
//! signal, `kill -9`, crash (with its steps), wait.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::os::{lines_of, now_ms, send_signal, step_processes_of, tail_of};

/// A `dagrid` process with its output in a file.
#[derive(Debug)]
pub struct Proc {
    /// `coordinator-1`, `worker-3`, …
    pub name: String,
    /// Its process id (for a worker, also the middle part of its id `<host>-<pid>-<hex>`).
    pub pid: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// When it was spawned (ms).
    pub started_ms: u64,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `dagrid <args>` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, args: &[String], log: PathBuf) -> Proc {
        Self::spawn_with_env(name, args, &[], log)
    }

    /// [`Proc::spawn`] with more environment variables.
    pub fn spawn_with_env(name: &str, args: &[String], env: &[(&str, &str)], log: PathBuf) -> Proc {
        let out = File::create(&log).expect("create process log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_dagrid"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn dagrid");
        eprintln!(
            "[procs] {name}: pid {} `dagrid {}`",
            child.id(),
            args.join(" ")
        );
        Proc {
            name: name.to_string(),
            pid: child.id(),
            log,
            started_ms: now_ms(),
            child,
            exit: None,
        }
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// True until it has exited.
    pub fn alive(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&mut self, sig: &str) {
        assert!(self.alive(), "{} exited before {sig}", self.name);
        assert!(
            send_signal(self.pid as i64, sig),
            "kill -{sig} {}",
            self.pid
        );
    }

    /// `kill -9` of this process alone (the step processes a worker started live on, each in
    /// its own process group). Returns when it was killed (ms).
    pub fn kill9(&mut self) -> u64 {
        let at = now_ms();
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        at
    }

    /// A crash of the worker's whole machine or container: freezes the process (so it starts
    /// nothing more), then `kill -9`s it and the process group of each of its children (the
    /// steps it runs). Returns when it was killed (ms) and how many step groups died with it.
    pub fn crash(&mut self) -> (u64, usize) {
        if !self.alive() {
            return (now_ms(), 0);
        }
        send_signal(self.pid as i64, "STOP");
        let (children, supervisor) = step_processes_of(self.pid);
        if let Some(s) = supervisor {
            send_signal(s as i64, "KILL");
        }
        let at = self.kill9();
        for c in &children {
            send_signal(-(*c as i64), "KILL");
        }
        (at, children.len())
    }

    /// Waits (at most `timeout`) for it to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of its output.
    pub fn tail(&self, n: usize) -> String {
        tail_of(&self.log, n)
    }

    /// The first line of its output that contains every one of `needles` (case-insensitive).
    pub fn find_line(&self, needles: &[&str]) -> Option<String> {
        lines_of(&self.log).into_iter().find(|l| {
            let l = l.to_lowercase();
            needles.iter().all(|n| l.contains(&n.to_lowercase()))
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            send_signal(self.pid as i64, "CONT");
            self.crash();
        }
    }
}
