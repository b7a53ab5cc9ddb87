//! What the load-test binaries share: a private cluster ([`cluster::Cluster`]: its own
//! redis-server on a free port, `dagrid coordinator` and `dagrid worker` processes, all in one
//! temp dir and all stopped when it is dropped, also on error or Ctrl-C), Redis `INFO` readers
//! ([`redis_info`]), the run event stream ([`events`]) and the small statistics the figures
//! print ([`stats`]).

pub mod cluster;
pub mod events;
pub mod redis_info;
pub mod stats;

use std::future::Future;
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

/// Runs `work` until it ends or SIGINT/SIGTERM arrives; on a signal `work` is dropped (so the
/// clusters it holds stop their processes and remove their temp dirs) and an error is returned.
///
/// # Errors
/// The error of `work`, or "interrupted" on a signal.
pub async fn until_signal<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted (SIGINT); everything started was stopped"),
        _ = term.recv() => anyhow::bail!("interrupted (SIGTERM); everything started was stopped"),
        r = work => r,
    }
}

/// The reference of the throughput figures: `xargs -P <parallel> -n 1 <command…>` over `n`
/// arguments `0`, so `command 0` runs `n` times, at most `parallel` at once (`/bin/true 0`;
/// `sleep 2 0` sleeps 2 s). Returns the wall time from spawning xargs to its exit.
///
/// # Errors
/// xargs cannot be started, or exits with a failure.
pub async fn xargs(n: usize, parallel: usize, command: &[&str]) -> anyhow::Result<Duration> {
    use tokio::io::AsyncWriteExt;
    let input = "0\n".repeat(n);
    let started = std::time::Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", &parallel.to_string(), "-n", "1"])
        .args(command)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let status = child.wait().await?;
    let took = started.elapsed();
    anyhow::ensure!(
        status.success(),
        "xargs -P {parallel} {}: {status}",
        command.join(" ")
    );
    Ok(took)
}

/// A DAG file named `name` of `steps` steps in a chain (`s1`, then `s2` depending on it, …),
/// each running `command`, with a `FILE` param (what `dagrid batch` binds each file to) and
/// otherwise dagrid's defaults (dedup `active`, priority normal, no queue limit).
pub fn chain_dag(name: &str, steps: usize, command: &str) -> String {
    let mut y = format!("name: {name}\nparams:\n  - FILE: \"\"\nsteps:\n");
    for i in 1..=steps {
        y.push_str(&format!("  - name: s{i}\n    command: {command}\n"));
        if i > 1 {
            y.push_str(&format!("    depends: [s{}]\n", i - 1));
        }
    }
    y
}
