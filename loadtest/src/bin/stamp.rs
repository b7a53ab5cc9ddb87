//! `stamp [FILE]`: as its first action reads CLOCK_REALTIME and writes it, in ns since the
//! epoch, to FILE (or stdout): the "process started" end of `dispatch-latency`'s samples.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let text = format!("{now}\n");
    let written = match std::env::args_os().nth(1) {
        Some(path) => std::fs::write(path, text),
        None => std::io::stdout().write_all(text.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("stamp: {e}");
        std::process::exit(1);
    }
}
