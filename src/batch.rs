//! `dagrid batch`: one run per file, submitted in chunks, followed with a progress bar, closed
//! with a summary. Exits non-zero when any run failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{is_final, parse_params, Api, POLL_INTERVAL};
use crate::ServerArgs;

/// Arguments of `dagrid batch`.
#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// DAG name.
    dag: String,
    /// The files: a glob (quote it: '/usr/share/man/man1/*.gz') or a directory (its regular
    /// files, not recursive). Repeatable.
    #[arg(long, required = true)]
    files: Vec<String>,
    /// Name of the param that receives each file's path.
    #[arg(long, default_value = "FILE")]
    param_name: String,
    /// A param given to every run, `NAME=value`; repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Runs per submit request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    chunk: u32,
    /// Take at most this many files (the first, in path order).
    #[arg(long)]
    limit: Option<usize>,
    /// Submit and exit without waiting for the runs.
    #[arg(long)]
    no_wait: bool,
}

/// Expands globs and directories into a sorted, de-duplicated list of files.
fn expand(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        let path = PathBuf::from(p);
        if path.is_dir() {
            let entries =
                std::fs::read_dir(&path).with_context(|| format!("cannot read directory {p}"))?;
            out.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file()),
            );
            continue;
        }
        let paths = glob::glob(p).with_context(|| format!("--files {p:?} is not a valid glob"))?;
        out.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Runs `dagrid batch`.
pub(crate) async fn run(args: BatchArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.server.server)?;
    let common = parse_params(&args.params)?;
    if common.contains_key(&args.param_name) {
        bail!(
            "--param {} clashes with --param-name {}; each file's path goes in {0}",
            args.param_name,
            args.param_name
        );
    }
    let mut files = expand(&args.files)?;
    if let Some(n) = args.limit {
        files.truncate(n);
    }
    if files.is_empty() {
        bail!("--files matched no files: {}", args.files.join(" "));
    }
    let started = Instant::now();
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("submitted");
    let mut ids: Vec<String> = Vec::with_capacity(files.len());
    for chunk in files.chunks(args.chunk as usize) {
        let runs: Vec<Value> = chunk
            .iter()
            .map(|f| {
                let mut params = common.clone();
                params.insert(args.param_name.clone(), f.display().to_string());
                json!({ "dag": args.dag, "params": params })
            })
            .collect();
        let v: Value = api
            .post("/api/v1/runs/batch", &json!({ "runs": runs }))
            .await?;
        for r in v["runs"].as_array().into_iter().flatten() {
            ids.push(r["id"].as_str().unwrap_or_default().to_string());
        }
        bar.inc(chunk.len() as u64);
    }
    if args.no_wait {
        bar.finish_and_clear();
        println!(
            "submitted {} runs of {} in {:.1}s",
            ids.len(),
            args.dag,
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }

    bar.reset();
    bar.set_prefix("finished");
    let mut open: Vec<String> = ids.clone();
    let (mut succeeded, mut failed) = (0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    while !open.is_empty() {
        let statuses = api.statuses(&open).await?;
        let mut still = Vec::with_capacity(open.len());
        for (id, st) in open.into_iter().zip(statuses) {
            match st.as_deref() {
                Some("succeeded") => succeeded += 1,
                Some(s) if is_final(s) => {
                    failed += 1;
                    failures.push(id);
                }
                Some(_) => still.push(id),
                None => bail!("run {id} is unknown to the coordinator (was Redis flushed?)"),
            }
        }
        open = still;
        bar.set_position((succeeded + failed) as u64);
        bar.set_message(format!("{succeeded} ok, {failed} failed"));
        if !open.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}: {} runs, {succeeded} succeeded, {failed} failed, wall time {wall:.2}s, {:.1} files/s",
        args.dag,
        ids.len(),
        ids.len() as f64 / wall.max(f64::EPSILON)
    );
    for id in failures.iter().take(10) {
        println!("failed: {id}  (dagrid status {id})");
    }
    if failures.len() > 10 {
        println!(
            "… and {} more: dagrid runs --dag {} --status failed",
            failures.len() - 10,
            args.dag
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
