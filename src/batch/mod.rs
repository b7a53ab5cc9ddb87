//! `dagrid batch`: one run per file, submitted in chunks (one request each), followed with a
//! progress bar, closed with a summary that tells new runs from deduplicated ones (a file whose
//! run already existed, queued, running or done, is followed through that run). Exits non-zero
//! when any run failed. `--watch DIR` keeps submitting the files that appear in a directory
//! (see [`watch`]).

mod tally;
mod template;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

pub(crate) use template::BatchArgs;

use crate::client::Api;
use tally::Tally;
use template::Template;

/// Submit requests of one `dagrid batch` in flight at once.
const SUBMIT_IN_FLIGHT: usize = 3;

/// Expands globs and directories into a sorted, de-duplicated list of files.
fn expand(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        let path = PathBuf::from(p);
        if path.is_dir() {
            let entries =
                std::fs::read_dir(&path).with_context(|| format!("cannot read directory {p}"))?;
            // The entry's type comes with the listing (no stat per file); only a symlink is
            // followed to see what it points to.
            out.extend(entries.filter_map(|e| {
                let e = e.ok()?;
                let kind = e.file_type().ok()?;
                let path = e.path();
                (kind.is_file() || (kind.is_symlink() && path.is_file())).then_some(path)
            }));
            continue;
        }
        let paths = glob::glob(p).with_context(|| format!("--files {p:?} is not a valid glob"))?;
        out.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The runs `dagrid batch` follows, with its progress bar.
struct Following<'a> {
    tally: &'a mut Tally,
    bar: &'a ProgressBar,
}

impl crate::events::Follow for Following<'_> {
    fn is_open(&self, id: &str) -> bool {
        self.tally.follows(id)
    }

    fn open_ids(&self) -> Vec<String> {
        self.tally.open_ids()
    }

    fn all_final(&self) -> bool {
        self.tally.all_final()
    }

    fn update(&mut self, ids: &[String], statuses: Vec<Option<String>>) -> anyhow::Result<()> {
        self.tally.update(ids, statuses)
    }

    fn redraw(&mut self) {
        self.bar.set_position(self.tally.done() as u64);
        self.bar.set_message(self.tally.progress());
    }
}

/// Runs `dagrid batch`.
pub(crate) async fn run(args: BatchArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.server.server)?;
    let template = Template::from_args(&args)?;
    if let Some(dir) = &args.watch {
        return watch::run(&args, dir, &api, &template).await;
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
    let mut tally = Tally::default();
    // Opened before the first submit, so that no change of the runs is missed.
    let feed = match args.no_wait {
        false => crate::events::Feed::open(&api, &[("dag", &args.dag), ("kind", "run")]).await,
        true => None,
    };
    // Up to SUBMIT_IN_FLIGHT requests at once, answered in order: the coordinator parses and
    // checks one request while Redis writes another's runs.
    // After a failed request no new one starts, but the answers of those already in flight
    // are still taken, so every run created is counted in the line printed before the error.
    let stop = std::cell::Cell::new(false);
    let mut answers = futures_util::stream::iter(files.chunks(args.chunk as usize))
        .map(|chunk| {
            let (stop, template, api) = (&stop, &template, &api);
            async move {
                if stop.get() {
                    return Ok(None);
                }
                template.submit(api, chunk).await.map(Some)
            }
        })
        .buffered(SUBMIT_IN_FLIGHT);
    let mut failure = None;
    while let Some(answer) = answers.next().await {
        match answer {
            Ok(Some(items)) => {
                for item in &items {
                    tally.record(item);
                }
                bar.inc(items.len() as u64);
            }
            Ok(None) => {}
            Err(e) => {
                stop.set(true);
                failure.get_or_insert(e);
            }
        }
    }
    drop(answers);
    if let Some(e) = failure {
        bar.finish_and_clear();
        println!("{}", tally.submitted_line(&args.dag, started.elapsed()));
        return Err(e);
    }
    if args.no_wait {
        bar.finish_and_clear();
        println!("{}", tally.submitted_line(&args.dag, started.elapsed()));
        return Ok(ExitCode::SUCCESS);
    }

    bar.reset();
    bar.set_prefix("finished");
    let mut following = Following {
        tally: &mut tally,
        bar: &bar,
    };
    crate::events::follow(&api, feed, &mut following).await?;
    bar.finish_and_clear();
    println!("{}", tally.summary(&args.dag, started.elapsed()));
    for line in tally.failure_lines(&args.dag) {
        println!("{line}");
    }
    Ok(if tally.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
