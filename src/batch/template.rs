//! What every run of a `dagrid batch` shares: its arguments ([`BatchArgs`]), the run item of
//! each file ([`Template`]) and the submit of a chunk of files in one request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{parse_params, Api};
use crate::options::{run_item, QueueingArgs, ServerArgs};

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
}
