//! `dagrid logs <run-id> <step> [-f]`: prints a step's log, and with `--follow` keeps printing
//! what the step writes until it finishes.
//!
//! The log comes from `GET /api/v1/runs/{id}/steps/{step}/log`: the worker's full log file
//! when the coordinator can read it, else the tail kept in Redis (the last 16 KiB of the
//! combined output); stderr says which. The bytes go to stdout unchanged. Where bytes are
//! missing (the log starts before the tail, or bytes fell out of the tail between two reads
//! while following), stdout gets a line `[… N bytes skipped …]` in their place; when a new
//! attempt of the step starts while following, a line `[… attempt N …]` before its log.
//!
//! Following asks for the bytes after the last ones printed about once a second
//! ([`FOLLOW_INTERVAL`]) while the step is pending, queued, running or retrying, and stops once
//! the step is final (succeeded, failed, skipped, aborted), after printing the rest; stderr then
//! names the final status. A running step's tail reaches Redis at most once a second, so a
//! follower without access to the file sees output in steps of about a second.
//!
//! Exit codes: 0 once the log is printed (with `--follow`: once the step finished, whatever
//! its status); 1 when the run, the step or its log is unknown (the API's message is printed),
//! when the coordinator cannot be reached, or when stdout cannot be written (a closed pipe
//! ends the command with 0).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Api, HttpError, LogChunk};

/// How often `--follow` asks for new output (1 s).
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// True for the statuses a step does not leave.
fn step_is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "skipped" | "aborted")
}

/// What the follower has printed so far.
#[derive(Debug, Default)]
struct Printed {
    /// The next byte of the log to print.
    offset: u64,
    /// The attempt whose log is being printed.
    attempt: Option<u32>,
    /// Whether stderr already said where the log comes from.
    told_source: bool,
}

/// What to print for one answer: the lines and bytes for stdout, and whether the answer must
/// be asked again from byte 0 because a new attempt started.
fn render(printed: &mut Printed, chunk: &LogChunk) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    if let (Some(was), Some(now)) = (printed.attempt, chunk.attempt) {
        if now != was {
            printed.attempt = Some(now);
            printed.offset = 0;
            out.extend_from_slice(format!("[… attempt {now} …]\n").as_bytes());
            return (out, true);
        }
    }
    printed.attempt = printed.attempt.or(chunk.attempt);
    if chunk.start > printed.offset {
        let skipped = chunk.start - printed.offset;
        out.extend_from_slice(format!("[… {skipped} bytes skipped …]\n").as_bytes());
    }
    out.extend_from_slice(&chunk.body);
    printed.offset = printed.offset.max(chunk.start + chunk.body.len() as u64);
    (out, false)
}

/// `dagrid logs`: see the module doc.
pub(crate) async fn run(
    server: &str,
    run_id: &str,
    step: &str,
    follow: bool,
    attempt: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let mut printed = Printed::default();
    loop {
        let chunk = match api
            .log_of_attempt(run_id, step, printed.offset, attempt)
            .await
        {
            Ok(chunk) => chunk,
            Err(e) if follow && not_started(&api, run_id, step, &e).await => {
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !printed.told_source {
            printed.told_source = true;
            if chunk.source == "tail" {
                eprintln!(
                    "(the tail kept in Redis: the last 16 KiB of the step's output, all of it when it printed less; a longer log is on the worker's machine)"
                );
            }
        }
        let (out, again) = render(&mut printed, &chunk);
        if !write_stdout(&out)? {
            return Ok(ExitCode::SUCCESS);
        }
        if again {
            continue;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if step_is_final(&chunk.status) {
            eprintln!("(step \"{step}\" {})", chunk.status);
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// Writes to stdout and flushes; `Ok(false)` when stdout is a closed pipe.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot write the log to stdout: {e}")),
    }
}

/// True when `e` is a 404 for a step that exists and has not started yet (no log so far), so a
/// follower waits for it.
async fn not_started(api: &Api, run_id: &str, step: &str, e: &anyhow::Error) -> bool {
    let not_found = e
        .downcast_ref::<HttpError>()
        .is_some_and(|h| h.status == reqwest::StatusCode::NOT_FOUND);
    if !not_found {
        return false;
    }
    let Ok(run) = api.get::<Value>(&format!("/api/v1/runs/{run_id}")).await else {
        return false;
    };
    run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step)
        .and_then(|s| s["status"].as_str())
        .is_some_and(|status| !step_is_final(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: u64, body: &str, attempt: u32) -> LogChunk {
        LogChunk {
            source: "tail".into(),
            status: "running".into(),
            attempt: Some(attempt),
            start,
            size: start + body.len() as u64,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn followed_chunks_print_each_byte_once_and_mark_gaps_and_new_attempts() {
        let mut p = Printed::default();
        assert_eq!(
            render(&mut p, &chunk(0, "abc", 1)),
            (b"abc".to_vec(), false)
        );
        assert_eq!(p.offset, 3);
        assert_eq!(render(&mut p, &chunk(3, "", 1)), (Vec::new(), false));
        assert_eq!(render(&mut p, &chunk(3, "de", 1)), (b"de".to_vec(), false));
        // Bytes 5..10 fell out of the tail between two reads.
        assert_eq!(
            render(&mut p, &chunk(10, "xy", 1)),
            (
                b"[\xe2\x80\xa6 5 bytes skipped \xe2\x80\xa6]\nxy".to_vec(),
                false
            )
        );
        assert_eq!(p.offset, 12);
        // A new attempt: say so, and ask again from byte 0.
        let (out, again) = render(&mut p, &chunk(12, "", 2));
        assert_eq!(String::from_utf8(out).unwrap(), "[… attempt 2 …]\n");
        assert!(again);
        assert_eq!((p.offset, p.attempt), (0, Some(2)));
        assert_eq!(
            render(&mut p, &chunk(0, "new", 2)),
            (b"new".to_vec(), false)
        );
    }

    #[test]
    fn only_succeeded_failed_skipped_and_aborted_steps_are_final() {
        for s in ["succeeded", "failed", "skipped", "aborted"] {
            assert!(step_is_final(s), "{s}");
        }
        for s in ["pending", "queued", "running", "retrying"] {
            assert!(!step_is_final(s), "{s}");
        }
    }
}
