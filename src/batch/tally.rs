//! The count of a `dagrid batch` ([`Tally`]) and the lines it prints.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;

use crate::client::is_final;

use super::template::BatchItem;

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
    /// True while run `id` is followed and not final.
    pub(crate) fn follows(&self, id: &str) -> bool {
        self.open.contains_key(id)
    }

    /// True when every followed run is final.
    pub(crate) fn all_final(&self) -> bool {
        self.open.is_empty()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, deduplicated: bool) -> BatchItem {
        BatchItem {
            id: id.into(),
            deduplicated,
        }
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
