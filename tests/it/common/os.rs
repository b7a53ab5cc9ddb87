//! What the tests ask the OS about processes and files: signals, process groups, children,
//! `/proc`, the tail of a log.

use std::path::Path;
use std::process::{Command, Stdio};

/// Milliseconds since the Unix epoch (the clock the workers stamp `started_ms` with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends `sig` (a name: `TERM`, `KILL`, `STOP`, `CONT`, `0`) to a process, or to a process
/// group when `target` is negative, with `kill(1)`; true when it was delivered.
pub fn send_signal(target: i64, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, "--", &target.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True while some process of the group `pgid` exists (zombies included).
pub fn group_exists(pgid: u32) -> bool {
    send_signal(-(pgid as i64), "0")
}

/// The processes of group `pgid` that still run (zombies, which only wait to be reaped, left
/// out), from `/proc/*/stat`.
pub fn group_running(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
        if fields.len() == 3
            && !matches!(fields[0], "Z" | "X")
            && fields[2].parse::<u32>().ok() == Some(pgid)
        {
            out.push(pid);
        }
    }
    out
}

/// The step processes of worker `pid` (the children of its step supervisor, or its own
/// children when it has none) and its step supervisor.
pub fn step_processes_of(pid: u32) -> (Vec<u32>, Option<u32>) {
    let children = children_of(pid);
    let supervisor = children.iter().copied().find(|c| {
        std::fs::read(format!("/proc/{c}/cmdline"))
            .is_ok_and(|l| l.split(|&b| b == 0).any(|a| a == b"__step-supervisor"))
    });
    match supervisor {
        Some(s) => (children_of(s), Some(s)),
        None => (children, None),
    }
}

/// True while the process `pid` exists and is not a zombie.
pub fn pid_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The pids whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The last `n` lines of a file.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines of a file; none when it does not exist.
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The pid in a worker id `<host>-<pid>-<hex>`.
pub fn worker_pid(worker_id: &str) -> Option<u32> {
    let mut parts = worker_id.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}
