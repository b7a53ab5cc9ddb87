//! `dagrid batch --watch DIR`: submit a run for every file that appears in a directory, until
//! SIGINT or SIGTERM.
//!
//! Changes come from the OS's file notifications (the `notify` crate: inotify, FSEvents,
//! kqueue, ReadDirectoryChangesW); when those cannot be set up, or report that events were
//! lost, the directory is scanned instead (every second in the first case). The files already
//! there at start are submitted too.
//!
//! A file is submitted once it is quiet: two looks at it agree on its size and modification
//! time, and it has not changed for `--settle` (by its modification time, or, when that is in
//! the future, by when this process last saw it change). Names starting with `.` are skipped,
//! so a writer can use `.name.tmp` and rename it into the directory. A file that leaves the
//! directory is forgotten, so one created again under the same name is submitted again.
//!
//! Every tick (half a second) the files that became quiet since the last request go out in one
//! batch request (at most `--chunk` per request). A request that fails for a passing reason
//! (no connection, 5xx, 408, 429) is retried with backoff; a refusal (another 4xx) stops the
//! watch. Runs are followed with one status lookup a second unless `--no-wait`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use super::tally::Tally;
use super::template::{BatchArgs, Template};
use crate::client::{Api, HttpError};

/// How often quiet files are submitted and the progress line is redrawn.
const TICK: Duration = Duration::from_millis(500);
/// How often the directory is scanned when the OS's notifications are not available.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the statuses of the followed runs are looked up.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait before retrying a failed submit request; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failed submit request.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a look at a file saw: enough to tell whether it changed between two looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    size: u64,
    mtime: Option<SystemTime>,
}

impl Observed {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime: meta.modified().ok(),
        }
    }
}

/// A file seen and not yet submitted.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The last look at it.
    last: Observed,
    /// When `last` was first seen (its state has not changed since).
    since: SystemTime,
}

/// The watched directory's files, as this process knows them: the ones waiting to be quiet and
/// the ones submitted (and still in the directory).
#[derive(Debug)]
struct DirState {
    dir: PathBuf,
    settle: Duration,
    candidates: BTreeMap<PathBuf, Candidate>,
    submitted: HashSet<PathBuf>,
}

/// A look at `path`: `None` when it is gone or not a regular file (symlinks are followed, as
/// `--files` does).
fn stat_file(path: &Path) -> Option<Observed> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| Observed::of(&m))
}

/// True for names the watch skips: hidden ones (`.name.tmp` while being written).
fn skipped(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Every regular, not hidden file directly in `dir`, with a look at it.
fn scan(dir: &Path) -> std::io::Result<Vec<(PathBuf, Observed)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if skipped(&entry.file_name()) {
            continue;
        }
        let path = dir.join(entry.file_name());
        if let Some(o) = stat_file(&path) {
            out.push((path, o));
        }
    }
    Ok(out)
}

impl DirState {
    fn new(dir: PathBuf, settle: Duration) -> Self {
        Self {
            dir,
            settle,
            candidates: BTreeMap::new(),
            submitted: HashSet::new(),
        }
    }

    /// The path in the watched directory that an event names, as `--files DIR` would spell
    /// it (`DIR/name`); `None` for skipped names.
    fn event_path(&self, path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?;
        (!skipped(name)).then(|| self.dir.join(name))
    }

    /// Takes a look at `path` (from an event or a scan): `None` means it is gone, and is
    /// forgotten; a file not yet submitted becomes (or stays) a candidate.
    fn observe(&mut self, path: PathBuf, seen: Option<Observed>, now: SystemTime) {
        let Some(seen) = seen else {
            self.candidates.remove(&path);
            self.submitted.remove(&path);
            return;
        };
        if self.submitted.contains(&path) {
            return;
        }
        let c = self.candidates.entry(path).or_insert(Candidate {
            last: seen,
            since: now,
        });
        if c.last != seen {
            *c = Candidate {
                last: seen,
                since: now,
            };
        }
    }

    /// Takes a full scan: files no longer in the directory are forgotten, the others observed.
    fn rescan(&mut self, present: Vec<(PathBuf, Observed)>, now: SystemTime) {
        let names: HashSet<&PathBuf> = present.iter().map(|(p, _)| p).collect();
        self.submitted.retain(|p| names.contains(p));
        self.candidates.retain(|p, _| names.contains(p));
        for (path, seen) in present {
            self.observe(path, Some(seen), now);
        }
    }

    /// Looks at every candidate again with `stat`; returns the quiet ones, in path order, and
    /// counts them as submitted.
    fn take_ready(
        &mut self,
        stat: impl Fn(&Path) -> Option<Observed>,
        now: SystemTime,
    ) -> Vec<PathBuf> {
        let settle = self.settle;
        let quiet_since = |t: SystemTime| now.duration_since(t).is_ok_and(|d| d >= settle);
        let mut ready = Vec::new();
        let mut gone = Vec::new();
        for (path, c) in &mut self.candidates {
            match stat(path) {
                None => gone.push(path.clone()),
                Some(seen) if seen != c.last => {
                    *c = Candidate {
                        last: seen,
                        since: now,
                    }
                }
                Some(seen) => {
                    if quiet_since(c.since) || seen.mtime.is_some_and(quiet_since) {
                        ready.push(path.clone());
                    }
                }
            }
        }
        for path in gone {
            self.candidates.remove(&path);
        }
        for path in &ready {
            self.candidates.remove(path);
            self.submitted.insert(path.clone());
        }
        ready
    }
}

/// What the notification thread hands to the watch loop: the paths named by events since the
/// last look (a set, so a burst of events on one file is one entry), and whether events were
/// lost and the directory must be scanned.
#[derive(Debug, Default)]
struct Inbox {
    changes: Mutex<Changes>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Changes {
    paths: HashSet<PathBuf>,
    rescan: bool,
}

impl Inbox {
    fn push(&self, event: notify::Result<notify::Event>) {
        {
            let mut c = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
            match event {
                Ok(e) => {
                    c.rescan |= e.need_rescan();
                    c.paths.extend(e.paths);
                }
                Err(_) => c.rescan = true,
            }
        }
        self.wake.notify_one();
    }

    fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Starts the OS's notifications on `dir` (not recursive), feeding `inbox`.
fn start_watcher(dir: &Path, inbox: Arc<Inbox>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event| inbox.push(event))?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// True when a submit error will not go away by sending the same request again.
fn is_permanent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HttpError>()
        .is_some_and(HttpError::is_permanent)
}

/// Runs `dagrid batch --watch DIR` until a signal (or a refusal by the coordinator).
pub(crate) async fn run(
    args: &BatchArgs,
    dir: &Path,
    api: &Api,
    template: &Template,
) -> anyhow::Result<ExitCode> {
    let meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "--watch {}: cannot read it; pass an existing directory",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        anyhow::bail!(
            "--watch {} is not a directory; pass the directory files arrive in",
            dir.display()
        );
    }
    let _: Value = api
        .get(&format!("/api/v1/dags/{}", template.dag))
        .await
        .with_context(|| format!("DAG {}", template.dag))?;

    let signals = TaskTracker::new();
    let shutdown = crate::services::shutdown_on_signal(&signals);
    let inbox = Arc::new(Inbox::default());
    // Notifications first, then the first scan: a file created in between is in one of them.
    let watcher = start_watcher(dir, inbox.clone());
    let polling = match &watcher {
        Ok(_) => false,
        Err(e) => {
            eprintln!(
                "note: no file notifications for {} ({e}); scanning it every second instead",
                dir.display()
            );
            true
        }
    };
    let mut state = DirState::new(dir.to_path_buf(), args.settle);
    let found = scan(dir).with_context(|| format!("--watch {}: cannot list it", dir.display()))?;
    state.rescan(found, SystemTime::now());

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut unsent: Vec<PathBuf> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut last_scan = Instant::now();
    let mut last_follow = Instant::now();
    let mut fatal: Option<anyhow::Error> = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let chunk = args.chunk as usize;

    'watch: loop {
        let tick = tokio::select! {
            biased;
            () = shutdown.cancelled() => break 'watch,
            () = inbox.wake.notified() => false,
            _ = ticker.tick() => true,
        };
        let changes = inbox.take();
        let now = SystemTime::now();
        if changes.rescan || (polling && last_scan.elapsed() >= RESCAN_INTERVAL) {
            match scan(dir) {
                Ok(found) => state.rescan(found, now),
                Err(e) => {
                    fatal = Some(anyhow!("--watch {}: cannot list it: {e}", dir.display()));
                    break 'watch;
                }
            }
            last_scan = Instant::now();
        }
        for p in changes.paths {
            if let Some(path) = state.event_path(&p) {
                let seen = stat_file(&path);
                state.observe(path, seen, now);
            }
        }
        if !tick {
            continue;
        }
        if !dir.is_dir() {
            fatal = Some(anyhow!("--watch {}: the directory is gone", dir.display()));
            break 'watch;
        }
        unsent.extend(state.take_ready(stat_file, now));

        if retry_at.is_none_or(|t| Instant::now() >= t) {
            while !unsent.is_empty() && !shutdown.is_cancelled() {
                let n = unsent.len().min(chunk);
                match template.submit(api, &unsent[..n]).await {
                    Ok(items) => {
                        items.iter().for_each(|i| tally.record(i));
                        unsent.drain(..n);
                        retry_at = None;
                        backoff = FIRST_BACKOFF;
                    }
                    Err(e) if is_permanent(&e) => {
                        fatal = Some(e.context(format!("submitting {n} files")));
                        break 'watch;
                    }
                    Err(e) => {
                        bar.suspend(|| {
                            eprintln!(
                                "warning: submitting {n} files failed: {e:#}; retrying in {}",
                                humantime::format_duration(backoff)
                            )
                        });
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                }
            }
        }

        if !args.no_wait && tally.open_files() > 0 && last_follow.elapsed() >= FOLLOW_INTERVAL {
            last_follow = Instant::now();
            let ids = tally.open_ids();
            match api.statuses(&ids).await {
                Ok(statuses) => {
                    if let Err(e) = tally.update(&ids, statuses) {
                        fatal = Some(e);
                        break 'watch;
                    }
                }
                Err(e) => bar.suspend(|| eprintln!("warning: cannot look up run statuses: {e:#}")),
            }
        }
        bar.set_message(format!(
            "watching {}: {}; {} settling",
            dir.display(),
            tally.watch_progress(!args.no_wait),
            state.candidates.len() + unsent.len()
        ));
        bar.tick();
    }
    drop(watcher);
    bar.finish_and_clear();
    if shutdown.is_cancelled() {
        eprintln!(
            "stopped watching {} (a second Ctrl-C or SIGTERM exits at once)",
            dir.display()
        );
    }

    if !args.no_wait && tally.open_files() > 0 {
        let ids = tally.open_ids();
        match api.statuses(&ids).await {
            Ok(statuses) => {
                if let Err(e) = tally.update(&ids, statuses) {
                    eprintln!("warning: {e:#}");
                }
            }
            Err(e) => eprintln!("warning: cannot look up run statuses: {e:#}"),
        }
    }
    if args.no_wait {
        println!("{}", tally.submitted_line(&template.dag, started.elapsed()));
    } else {
        println!("{}", tally.summary(&template.dag, started.elapsed()));
        for line in tally.failure_lines(&template.dag) {
            println!("{line}");
        }
    }
    let left = state.candidates.len() + unsent.len();
    if left > 0 {
        eprintln!(
            "{left} files in {} were not submitted (still changing, or not accepted yet); watching again submits them",
            dir.display()
        );
    }
    if let Some(e) = fatal {
        return Err(e);
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
    use std::collections::HashMap;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn seen(size: u64, mtime_secs: u64) -> Observed {
        Observed {
            size,
            mtime: Some(at(mtime_secs)),
        }
    }

    fn fs(files: &[(&str, Observed)]) -> impl Fn(&Path) -> Option<Observed> {
        let map: HashMap<PathBuf, Observed> = files
            .iter()
            .map(|(n, o)| (Path::new("/in").join(n), *o))
            .collect();
        move |p: &Path| map.get(p).copied()
    }

    fn state() -> DirState {
        DirState::new(PathBuf::from("/in"), Duration::from_secs(2))
    }

    #[test]
    fn an_old_file_is_submitted_at_the_first_tick_and_only_once() {
        let mut s = state();
        let a = PathBuf::from("/in/a");
        s.rescan(vec![(a.clone(), seen(10, 0))], at(100));
        let ready = s.take_ready(fs(&[("a", seen(10, 0))]), at(100));
        assert_eq!(ready, std::slice::from_ref(&a));
        // Seen again (an event, a rescan): already submitted.
        s.observe(a.clone(), Some(seen(10, 0)), at(101));
        s.rescan(vec![(a, seen(10, 0))], at(101));
        assert!(s.take_ready(fs(&[("a", seen(10, 0))]), at(102)).is_empty());
    }

    #[test]
    fn a_file_being_written_waits_until_it_is_quiet() {
        let mut s = state();
        let a = PathBuf::from("/in/a");
        s.observe(a.clone(), Some(seen(1, 100)), at(100));
        // Still growing.
        assert!(s.take_ready(fs(&[("a", seen(5, 101))]), at(101)).is_empty());
        // Unchanged, but modified only a second ago.
        assert!(s.take_ready(fs(&[("a", seen(5, 101))]), at(102)).is_empty());
        // Unchanged for --settle (2s).
        assert_eq!(s.take_ready(fs(&[("a", seen(5, 101))]), at(103)), [a]);
    }

    #[test]
    fn a_future_mtime_falls_back_to_when_it_was_seen() {
        let mut s = state();
        let a = PathBuf::from("/in/a");
        s.observe(a.clone(), Some(seen(1, 9_999)), at(100));
        assert!(s
            .take_ready(fs(&[("a", seen(1, 9_999))]), at(101))
            .is_empty());
        assert_eq!(s.take_ready(fs(&[("a", seen(1, 9_999))]), at(102)), [a]);
    }

    #[test]
    fn a_removed_file_is_forgotten_and_submitted_again_when_it_returns() {
        let mut s = state();
        let a = PathBuf::from("/in/a");
        s.observe(a.clone(), Some(seen(1, 0)), at(100));
        assert_eq!(
            s.take_ready(fs(&[("a", seen(1, 0))]), at(100)),
            std::slice::from_ref(&a)
        );
        // Removed: an event names it and it is gone.
        s.observe(a.clone(), None, at(101));
        s.observe(a.clone(), Some(seen(2, 0)), at(102));
        assert_eq!(
            s.take_ready(fs(&[("a", seen(2, 0))]), at(102)),
            std::slice::from_ref(&a)
        );
        // Removed while nobody told us: a rescan without it forgets it too.
        s.rescan(vec![], at(103));
        s.rescan(vec![(a.clone(), seen(3, 0))], at(104));
        assert_eq!(s.take_ready(fs(&[("a", seen(3, 0))]), at(104)), [a]);
    }

    #[test]
    fn a_candidate_that_vanishes_is_dropped() {
        let mut s = state();
        s.observe(PathBuf::from("/in/a"), Some(seen(1, 100)), at(100));
        assert!(s.take_ready(fs(&[]), at(200)).is_empty());
        assert!(s.candidates.is_empty());
    }

    #[test]
    fn ready_files_come_in_path_order() {
        let mut s = state();
        for n in ["c", "a", "b"] {
            s.observe(Path::new("/in").join(n), Some(seen(1, 0)), at(100));
        }
        let ready = s.take_ready(
            fs(&[("a", seen(1, 0)), ("b", seen(1, 0)), ("c", seen(1, 0))]),
            at(100),
        );
        assert_eq!(ready, ["/in/a", "/in/b", "/in/c"].map(PathBuf::from));
    }

    #[test]
    fn event_paths_are_spelled_from_the_watched_dir_and_hidden_ones_skipped() {
        let s = DirState::new(PathBuf::from("in"), Duration::ZERO);
        assert_eq!(
            s.event_path(Path::new("/abs/in/x.gz")),
            Some(PathBuf::from("in/x.gz"))
        );
        assert_eq!(s.event_path(Path::new("/abs/in/.x.gz.tmp")), None);
    }

    #[test]
    fn scans_list_regular_visible_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        std::fs::write(dir.path().join(".hidden"), "1").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let found = scan(dir.path()).unwrap();
        let names: Vec<PathBuf> = found.into_iter().map(|(p, _)| p).collect();
        assert_eq!(names, [dir.path().join("a")]);
    }

    #[tokio::test]
    async fn notifications_name_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Arc::new(Inbox::default());
        let Ok(_watcher) = start_watcher(dir.path(), inbox.clone()) else {
            // No notifications on this machine (e.g. inotify limits): the watch scans instead.
            return;
        };
        let tmp = dir.path().join(".new.tmp");
        std::fs::write(&tmp, "data").unwrap();
        std::fs::rename(&tmp, dir.path().join("new")).unwrap();
        let state = DirState::new(dir.path().to_path_buf(), Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut named = HashSet::new();
        while !named.contains(&dir.path().join("new")) {
            assert!(Instant::now() < deadline, "no event for the new file");
            let _ = tokio::time::timeout(Duration::from_millis(100), inbox.wake.notified()).await;
            named.extend(
                inbox
                    .take()
                    .paths
                    .iter()
                    .filter_map(|p| state.event_path(p)),
            );
        }
    }

    #[test]
    fn only_refusals_stop_the_watch() {
        let refused: anyhow::Error = HttpError {
            status: reqwest::StatusCode::NOT_FOUND,
            message: "no DAG".into(),
        }
        .into();
        assert!(is_permanent(&refused));
        let busy: anyhow::Error = HttpError {
            status: reqwest::StatusCode::TOO_MANY_REQUESTS,
            message: "busy".into(),
        }
        .into();
        assert!(!is_permanent(&busy));
        let down: anyhow::Error = HttpError {
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
            message: "redis".into(),
        }
        .into();
        assert!(!is_permanent(&down));
        assert!(!is_permanent(&anyhow!("cannot reach the coordinator")));
        assert!(is_permanent(&refused.context("submitting 3 files")));
    }
}
