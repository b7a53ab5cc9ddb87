//! `dagrid batch`: one run per file, submitted in chunks (one request each), followed with a
//! progress bar, closed with a summary that tells new runs from deduplicated ones (a file whose
//! run already existed, queued, running or done, is followed through that run). Exits non-zero
//! when any run failed. `--watch DIR` keeps submitting the files that appear in a directory
//! (see [`crate::watch`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};

use futures_util::StreamExt;

use crate::client::{is_final, parse_params, Api};
use crate::options::{run_item, QueueingArgs};
use crate::ServerArgs;

/// Submit requests of one `dagrid batch` in flight at once.
const SUBMIT_IN_FLIGHT: usize = 3;

/// Arguments of `dagrid batch`.
#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// DAG name.
    pub(crate) dag: String,
    /// The files: a glob (quote it: '/usr/share/man/man1/*.gz') or a directory (its regular
    /// files, not recursive). Repeatable.
    #[arg(long, required_unless_present = "watch", conflicts_with = "watch")]
    pub(crate) files: Vec<String>,
    /// Keep submitting a run for every file that appears in DIR (files already there too),
    /// until Ctrl-C or SIGTERM, which stops submitting and prints the summary. A file is
    /// submitted once its size and modification time have not changed for --settle; names
    /// starting with `.` are skipped, so writing `.name.tmp` then renaming it into DIR is safe.
    /// A file removed from DIR and created again is submitted again. Restarting is safe: with
    /// the default dedup (active) a file whose run is still queued or running gets that run,
    /// not a second one; add --dedup window:24h to also skip files done in the last 24h.
    #[arg(long, value_name = "DIR", conflicts_with = "limit")]
    pub(crate) watch: Option<PathBuf>,
    /// With --watch: how long a file must stay unchanged (size and modification time) before
    /// it is submitted, e.g. 2s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,
    /// Name of the param that receives each file's path.
    #[arg(long, default_value = "FILE")]
    pub(crate) param_name: String,
    /// A param given to every run, `NAME=value`; repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// Runs per submit request (with --watch: at most, per request). Up to 3 requests are in
    /// flight at once; their answers are taken in file order.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) chunk: u32,
    /// Take at most this many files (the first, in path order).
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Submit and exit without waiting for the runs (with --watch: do not follow them).
    #[arg(long)]
    pub(crate) no_wait: bool,
    #[command(flatten)]
    pub(crate) queueing: QueueingArgs,
}

/// One entry of the answer to `POST /api/v1/runs/batch`, in request order.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BatchItem {
    /// The run id: a new run's, or the existing run's when deduplicated.
    pub(crate) id: String,
    /// True when no run was created for this item.
    #[serde(default)]
    pub(crate) deduplicated: bool,
}

/// The answer to `POST /api/v1/runs/batch`.
#[derive(Debug, Deserialize)]
struct BatchAnswer {
    runs: Vec<BatchItem>,
}

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

/// What every run of a batch shares: the DAG, the common params, where each file's path goes,
/// and the queueing flags.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) dag: String,
    pub(crate) common: BTreeMap<String, String>,
    pub(crate) param_name: String,
    pub(crate) queueing: QueueingArgs,
}

impl Template {
    /// Checks the params of `args` and builds the template.
    ///
    /// # Errors
    /// A malformed `--param`, or one that clashes with `--param-name`.
    pub(crate) fn from_args(args: &BatchArgs) -> anyhow::Result<Self> {
        let common = parse_params(&args.params)?;
        if common.contains_key(&args.param_name) {
            bail!(
                "--param {} clashes with --param-name {}; each file's path goes in {0}",
                args.param_name,
                args.param_name
            );
        }
        Ok(Self {
            dag: args.dag.clone(),
            common,
            param_name: args.param_name.clone(),
            queueing: args.queueing.clone(),
        })
    }

    /// The run item of one file.
    pub(crate) fn item(&self, file: &Path) -> Value {
        let mut params = self.common.clone();
        params.insert(self.param_name.clone(), file.display().to_string());
        run_item(&self.dag, &params, &self.queueing, None)
    }

    /// Submits one run per file in one request (sent again under its `Idempotency-Key` when
    /// the connection drops, see [`Api::post_idempotent`]); returns the answer per file, in
    /// order.
    ///
    /// # Errors
    /// The request failed (an [`crate::client::HttpError`] when the coordinator refused it), or
    /// the answer does not have one entry per file.
    pub(crate) async fn submit(
        &self,
        api: &Api,
        files: &[PathBuf],
    ) -> anyhow::Result<Vec<BatchItem>> {
        let runs: Vec<Value> = files.iter().map(|f| self.item(f)).collect();
        let answer: BatchAnswer = api
            .post_idempotent("/api/v1/runs/batch", &json!({ "runs": runs }))
            .await?;
        if answer.runs.len() != files.len() {
            bail!(
                "the coordinator answered {} runs for {} submitted; is it a matching version?",
                answer.runs.len(),
                files.len()
            );
        }
        Ok(answer.runs)
    }
}

/// The count of a batch, per file: how many runs were created or deduplicated, and how the
/// runs the files follow ended. Several files may follow one run (deduplicated into it).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    files: usize,
    created: usize,
    deduplicated: usize,
    succeeded: usize,
    failed: usize,
    /// Run id → how many files follow it, for runs not yet final.
    open: HashMap<String, usize>,
    /// Failed run ids, each once, in the order they failed.
    failures: Vec<String>,
}

impl Tally {
    /// Counts one submitted file.
    pub(crate) fn record(&mut self, item: &BatchItem) {
        self.files += 1;
        if item.deduplicated {
            self.deduplicated += 1;
        } else {
            self.created += 1;
        }
        *self.open.entry(item.id.clone()).or_default() += 1;
    }

    /// The runs not yet known to be final, sorted.
    pub(crate) fn open_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.open.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Files whose run is not yet final.
    pub(crate) fn open_files(&self) -> usize {
        self.open.values().sum()
    }

    /// Files whose run is final.
    pub(crate) fn done(&self) -> usize {
        self.succeeded + self.failed
    }

    /// True when any followed run failed.
    pub(crate) fn any_failed(&self) -> bool {
        self.failed > 0
    }

    /// Takes the statuses of `ids` (the answer of [`Api::statuses`], in the same order).
    ///
    /// # Errors
    /// A run the coordinator does not know.
    pub(crate) fn update(
        &mut self,
        ids: &[String],
        statuses: Vec<Option<String>>,
    ) -> anyhow::Result<()> {
        for (id, st) in ids.iter().zip(statuses) {
            match st.as_deref() {
                Some(s) if is_final(s) => {
                    let n = self.open.remove(id).unwrap_or(0);
                    if s == "succeeded" {
                        self.succeeded += n;
                    } else {
                        self.failed += n;
                        if !self.failures.contains(id) {
                            self.failures.push(id.clone());
                        }
                    }
                }
                Some(_) => {}
                None => bail!("run {id} is unknown to the coordinator (was Redis flushed?)"),
            }
        }
        Ok(())
    }

    /// The progress bar's message.
    pub(crate) fn progress(&self) -> String {
        format!("{} ok, {} failed", self.succeeded, self.failed)
    }

    /// The progress line of `--watch`; `following` when run statuses are looked up.
    pub(crate) fn watch_progress(&self, following: bool) -> String {
        let mut line = format!(
            "{} submitted ({} deduplicated)",
            self.files, self.deduplicated
        );
        if following {
            line.push_str(&format!(
                ", {} ok, {} failed, {} queued or running",
                self.succeeded,
                self.failed,
                self.open_files()
            ));
        }
        line
    }

    /// The line printed after submitting without following (`--no-wait`).
    pub(crate) fn submitted_line(&self, dag: &str, wall: Duration) -> String {
        let secs = wall.as_secs_f64();
        if self.deduplicated == 0 {
            format!("submitted {} runs of {dag} in {secs:.1}s", self.files)
        } else {
            format!(
                "submitted {} files of {dag} in {secs:.1}s: {} new runs, {} deduplicated (already queued, running or done)",
                self.files, self.created, self.deduplicated
            )
        }
    }

    /// The summary line: `dag: N runs, S succeeded, F failed, …` when every file got a new
    /// run, `dag: N files: C new runs, D deduplicated (…); S succeeded, F failed, …` otherwise;
    /// files whose run is still open are counted as such.
    pub(crate) fn summary(&self, dag: &str, wall: Duration) -> String {
        let secs = wall.as_secs_f64();
        let head = if self.deduplicated == 0 {
            format!("{} runs,", self.files)
        } else {
            format!(
                "{} files: {} new runs, {} deduplicated (already queued, running or done);",
                self.files, self.created, self.deduplicated
            )
        };
        let open = match self.open_files() {
            0 => String::new(),
            n => format!(", {n} still queued or running"),
        };
        format!(
            "{dag}: {head} {} succeeded, {} failed{open}, wall time {secs:.2}s, {:.1} files/s",
            self.succeeded,
            self.failed,
            self.files as f64 / secs.max(f64::EPSILON)
        )
    }

    /// Up to 10 lines naming failed runs, and where to find the rest.
    pub(crate) fn failure_lines(&self, dag: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .failures
            .iter()
            .take(10)
            .map(|id| format!("failed: {id}  (dagrid status {id})"))
            .collect();
        if self.failures.len() > 10 {
            lines.push(format!(
                "… and {} more: dagrid runs --dag {dag} --status failed",
                self.failures.len() - 10
            ));
        }
        lines
    }
}

/// The runs `dagrid batch` follows, with its progress bar.
struct Following<'a> {
    tally: &'a mut Tally,
    bar: &'a ProgressBar,
}

impl crate::events::Follow for Following<'_> {
    fn is_open(&self, id: &str) -> bool {
        self.tally.open.contains_key(id)
    }

    fn open_ids(&self) -> Vec<String> {
        self.tally.open_ids()
    }

    fn all_final(&self) -> bool {
        self.tally.open.is_empty()
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
        return crate::watch::run(&args, dir, &api, &template).await;
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
        false => crate::events::Feed::open(&api, &[("dag", &args.dag)]).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BatchArgs,
    }

    fn parse(args: &[&str]) -> Result<BatchArgs, String> {
        let mut argv = vec!["batch"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    fn item(id: &str, deduplicated: bool) -> BatchItem {
        BatchItem {
            id: id.into(),
            deduplicated,
        }
    }

    #[test]
    fn files_or_watch_but_not_both() {
        let a = parse(&[
            "d",
            "--files",
            "*.gz",
            "--priority",
            "low",
            "--dedup",
            "window:1h",
        ])
        .unwrap();
        assert_eq!(a.queueing.priority.map(|p| p.get()), Some(2));
        assert_eq!(a.queueing.dedup.as_deref(), Some("window:1h"));
        let w = parse(&["d", "--watch", "/in", "--settle", "500ms"]).unwrap();
        assert_eq!(w.watch.as_deref(), Some(Path::new("/in")));
        assert_eq!(w.settle, Duration::from_millis(500));
        assert!(parse(&["d"]).is_err(), "neither --files nor --watch");
        assert!(parse(&["d", "--files", "x", "--watch", "/in"]).is_err());
        assert!(parse(&["d", "--watch", "/in", "--limit", "3"]).is_err());
        let e = parse(&["d", "--files", "x", "--priority", "11"]).unwrap_err();
        assert!(
            e.contains("--priority") && e.contains("high, normal, low"),
            "{e}"
        );
        let e = parse(&["d", "--files", "x", "--dedup", "forever"]).unwrap_err();
        assert!(
            e.contains("--dedup") && e.contains("window:<duration>"),
            "{e}"
        );
    }

    #[test]
    fn items_carry_the_file_and_the_queueing_flags() {
        let args = parse(&[
            "d",
            "--files",
            "x",
            "-p",
            "OUT=/o",
            "--param-name",
            "IN",
            "--priority",
            "9",
            "--dedup",
            "none",
        ])
        .unwrap();
        let t = Template::from_args(&args).unwrap();
        assert_eq!(
            t.item(Path::new("/in/a.gz")),
            json!({"dag": "d", "params": {"IN": "/in/a.gz", "OUT": "/o"}, "priority": 9, "dedup": "none"})
        );
        let clash = parse(&["d", "--files", "x", "-p", "FILE=y"]).unwrap();
        let e = Template::from_args(&clash).unwrap_err().to_string();
        assert!(e.contains("clashes with --param-name"), "{e}");
    }

    #[test]
    fn batch_answers_default_deduplicated_to_false() {
        let a: BatchAnswer = serde_json::from_value(json!({
            "runs": [
                {"id": "r1", "dag": "d", "status": "queued", "deduplicated": false},
                {"id": "r0", "dag": "d", "status": "succeeded", "deduplicated": true},
                {"id": "r2", "dag": "d", "status": "queued"},
            ],
            "created": 2, "deduplicated": 1
        }))
        .unwrap();
        let flags: Vec<bool> = a.runs.iter().map(|r| r.deduplicated).collect();
        assert_eq!(flags, [false, true, false]);
    }

    #[test]
    fn without_dedup_the_summary_keeps_its_old_shape() {
        let mut t = Tally::default();
        for i in 0..200 {
            t.record(&item(&format!("r{i}"), false));
        }
        let ids = t.open_ids();
        let statuses = ids.iter().map(|_| Some("succeeded".to_string())).collect();
        t.update(&ids, statuses).unwrap();
        assert_eq!(
            t.summary("manpage-stats", Duration::from_secs(2)),
            "manpage-stats: 200 runs, 200 succeeded, 0 failed, wall time 2.00s, 100.0 files/s"
        );
        assert_eq!(
            t.submitted_line("manpage-stats", Duration::from_secs(2)),
            "submitted 200 runs of manpage-stats in 2.0s"
        );
        assert!(!t.any_failed());
    }

    #[test]
    fn deduplicated_files_follow_their_existing_run() {
        let mut t = Tally::default();
        t.record(&item("new1", false));
        t.record(&item("new2", false));
        t.record(&item("old", true)); // already done
        t.record(&item("new1", true)); // same params twice in one batch
        assert_eq!(t.open_ids(), ["new1", "new2", "old"]);
        assert_eq!(t.open_files(), 4);
        t.update(
            &t.open_ids(),
            vec![
                Some("failed".into()),
                Some("running".into()),
                Some("succeeded".into()),
            ],
        )
        .unwrap();
        assert_eq!(t.done(), 3);
        assert_eq!(
            t.watch_progress(true),
            "4 submitted (2 deduplicated), 1 ok, 2 failed, 1 queued or running"
        );
        assert_eq!(t.watch_progress(false), "4 submitted (2 deduplicated)");
        assert_eq!(
            t.summary("d", Duration::from_secs(1)),
            "d: 4 files: 2 new runs, 2 deduplicated (already queued, running or done); 1 succeeded, 2 failed, 1 still queued or running, wall time 1.00s, 4.0 files/s"
        );
        assert_eq!(
            t.submitted_line("d", Duration::from_secs(1)),
            "submitted 4 files of d in 1.0s: 2 new runs, 2 deduplicated (already queued, running or done)"
        );
        assert_eq!(t.failure_lines("d"), ["failed: new1  (dagrid status new1)"]);
        assert!(t.any_failed());
        let e = t.update(&["gone".to_string()], vec![None]).unwrap_err();
        assert!(e.to_string().contains("unknown to the coordinator"));
    }

    #[test]
    fn more_than_ten_failures_point_to_runs() {
        let mut t = Tally::default();
        let ids: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
        for id in &ids {
            t.record(&item(id, false));
        }
        t.update(&ids, ids.iter().map(|_| Some("failed".into())).collect())
            .unwrap();
        let lines = t.failure_lines("d");
        assert_eq!(lines.len(), 11);
        assert_eq!(
            lines[10],
            "… and 2 more: dagrid runs --dag d --status failed"
        );
    }
}
