//! The event feed: run and step state changes, from the namespace's events stream
//! ([`dagrid_shared::redis::keys::Keys::events`]) to the subscribers of `GET /api/v1/events`.
//!
//! Events are written by the scripts that make the changes (SUBMIT, APPLY_TRANSITION,
//! RETRY_DUE), in the same atomic call; [`dagrid_shared::transition`] builds their events
//! sections, and this module reads them back.
//!
//! Each coordinator process runs one reader ([`run`]): `XREAD BLOCK` on a dedicated connection
//! (under load, at most one read per [`COALESCE`], each carrying many events), fanned out to the subscribers through a tokio broadcast channel. The reader reads only while
//! the process has subscribers: with none it sends nothing to Redis, and the first one to come
//! wakes it, reading from the stream's last entry id when that subscriber came (its anchor, read
//! by [`Feed::subscribe`] after joining the channel), so every event after a subscriber's
//! anchor reaches it. A subscriber ([`Subscription`]) resuming from an id first reads the stream from
//! there (`XRANGE`, in pages of [`REPLAY_PAGE`]), then takes the live feed, skipping what it has
//! already sent (entry ids only grow), so nothing is missed or sent twice at the seam.
//! When events after a subscriber's position are gone (trimmed from the capped stream, or the
//! reader lost Redis for a while and Redis may have lost data), the subscriber gets a `reset`
//! item: its client should read the states it follows again.
//!
//! Bounds, so that subscribers cannot starve the rest of the coordinator: each buffer is the
//! broadcast channel's [`CHANNEL_CAPACITY`] items; a subscriber that falls further behind
//! (a slow client) catches up from the stream, but one catch-up (and the replay of `since`)
//! reads at most [`MAX_REPLAY`] events: beyond, the subscriber is dropped from its position
//! with a `reset` at the stream's end and goes on live. At most [`REPLAY_CONCURRENCY`]
//! catch-up pages are read at once in the process, each followed by a yield, and
//! [`Feed::open_stream`] caps the streams open at once per caller. A client that stops
//! reading costs no reads (its stream is not polled) and its connection is closed by the
//! HTTP idle timeout ([`crate::HttpLimits::idle_timeout`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagrid_shared::model::Event;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::events::{After, Read};
use crate::store::Store;

/// Items the broadcast channel holds for a slow subscriber before it lags (then it catches up
/// from the stream).
pub(crate) const CHANNEL_CAPACITY: usize = 4096;
/// Entries read per XREAD of the feed's reader.
pub(crate) const PAGE: usize = 1000;
/// After a read that returned events, the reader waits until this long after that read began
/// before reading again, so that under load one XREAD (and one wake-up of each subscriber)
/// carries the events of this interval instead of one each: at most 50 reads a second, each
/// event delivered at most this much later. After a read that waited for events (a quiet
/// stream), the next one starts at once, so the first event after a pause is not delayed.
pub(crate) const COALESCE: Duration = Duration::from_millis(20);
/// Entries read per XRANGE page of a catch-up: small, so that other requests get Redis and
/// the runtime between two pages.
pub(crate) const REPLAY_PAGE: usize = 250;
/// Most events one catch-up reads from the stream (an entry holds one or two) (the replay of `since` / `Last-Event-ID`,
/// or after falling behind the live feed); beyond, the subscriber gets a `reset` at the
/// stream's end and goes on live.
pub(crate) const MAX_REPLAY: usize = 10_000;
/// Catch-up pages (XRANGE) read at once by all the subscribers of this process.
pub(crate) const REPLAY_CONCURRENCY: usize = 4;
/// Most event streams one caller (an API token; every caller together without tokens) may
/// hold open at once.
pub(crate) const MAX_STREAMS_PER_CALLER: usize = 32;

pub(crate) use crate::store::events::EventId;

/// What the feed hands to subscribers.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// One state change, with its stream entry id.
    Event(EventId, Arc<Event>),
    /// Events may have been lost before the position given (the reader lost Redis): read the
    /// states again.
    Reset(Option<EventId>),
}

/// The fan-out of one coordinator process: the reader's broadcast channel and what a
/// subscriber needs to catch up.
pub(crate) struct Feed {
    tx: broadcast::Sender<Item>,
    store: Arc<Store>,
    /// Whether the reader reads, changed under this lock by the reader (going idle when the
    /// channel has no receiver) and by [`Feed::subscribe`] (waking it).
    reader: Mutex<ReaderState>,
    /// Wakes an idle reader.
    wake: tokio::sync::Notify,
    /// Permits to read a catch-up page ([`REPLAY_CONCURRENCY`]).
    replay: Arc<Semaphore>,
    /// Streams open per caller.
    open: Mutex<HashMap<String, usize>>,
}

/// What the events reader does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    /// No subscriber: it waits to be woken, sending nothing to Redis.
    Idle,
    /// Woken by a subscriber: it is to read after this id (the earliest anchor of the
    /// subscribers that came while it was idle), or, when `None` (an anchor could not be read),
    /// from the stream's end, first sending every subscriber a reset.
    Start(Option<EventId>),
    /// Reading.
    Active,
}

/// One open stream of a caller, counted until dropped ([`Feed::open_stream`]).
pub(crate) struct StreamSlot {
    feed: Arc<Feed>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.feed.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

impl Feed {
    /// A feed over the events stream of `store`'s namespace; [`run`] fills it.
    pub(crate) fn new(store: Arc<Store>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Arc::new(Self {
            tx,
            store,
            replay: Arc::new(Semaphore::new(REPLAY_CONCURRENCY)),
            open: Mutex::new(HashMap::new()),
            reader: Mutex::new(ReaderState::Idle),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// A slot for one more stream of `caller`, held for the stream's life; `None` when the
    /// caller already holds [`MAX_STREAMS_PER_CALLER`].
    pub(crate) fn open_stream(self: &Arc<Self>, caller: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(caller.to_string()).or_insert(0);
        if *n >= MAX_STREAMS_PER_CALLER {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            feed: self.clone(),
            caller: caller.to_string(),
        })
    }

    /// A subscription to the live feed, starting after `since` when given (else with what
    /// comes next: the events after the stream's last entry when it subscribed), passing the
    /// events `filter` keeps, and ending when `shutdown` is cancelled.
    ///
    /// It joins the broadcast channel, then reads the stream's last id (`XREVRANGE + - COUNT
    /// 1`, its anchor) and wakes the reader from there if it was idle: events after the anchor
    /// come through the channel, and a `since` before it is caught up from the stream. When the
    /// anchor cannot be read (Redis is away), the reader starts from the stream's end and
    /// sends a reset.
    pub(crate) async fn subscribe(
        &self,
        since: Option<EventId>,
        filter: Filter,
        shutdown: CancellationToken,
    ) -> Subscription {
        let rx = self.tx.subscribe();
        let anchor = match self.store.events_tail().await {
            Ok(tail) => Some(tail.unwrap_or(EventId::at(0, 0))),
            Err(e) => {
                warn!(cause = %e, "reading the end of the events stream for a new subscriber failed; it gets a reset once the stream is readable");
                None
            }
        };
        self.wake_reader(anchor);
        let last = since.or(anchor);
        Subscription {
            rx,
            store: self.store.clone(),
            replay: self.replay.clone(),
            filter,
            last,
            backlog: VecDeque::new(),
            catch_up: since.is_some(),
            replayed: 0,
            shutdown,
        }
    }

    /// Wakes the reader when it is idle, to read after `anchor` (from the stream's end, with
    /// a reset, when `None`); when it was woken already and has not started, makes it start
    /// early enough for this anchor too.
    fn wake_reader(&self, anchor: Option<EventId>) {
        let mut state = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            ReaderState::Idle => {
                *state = ReaderState::Start(anchor);
                self.wake.notify_one();
            }
            ReaderState::Start(Some(from)) => {
                *state = ReaderState::Start(anchor.map(|a| a.min(from)));
            }
            ReaderState::Start(None) | ReaderState::Active => {}
        }
    }

    /// Called by the reader between reads: with no subscriber left it goes idle and waits to
    /// be woken (`None` at shutdown). Returns where to start when it was woken (`Some(Start)`),
    /// or `Some(Active)` when it just reads on.
    async fn idle_until_wanted(&self, shutdown: &CancellationToken) -> Option<ReaderState> {
        {
            let mut state = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            match *state {
                ReaderState::Active if self.tx.receiver_count() == 0 => {
                    *state = ReaderState::Idle;
                }
                ReaderState::Active => return Some(ReaderState::Active),
                ReaderState::Start(_) => {
                    let start = *state;
                    *state = ReaderState::Active;
                    return Some(start);
                }
                ReaderState::Idle => {}
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                _ = self.wake.notified() => {}
            }
            let mut state = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            if let ReaderState::Start(_) = *state {
                let start = *state;
                *state = ReaderState::Active;
                return Some(start);
            }
        }
    }
}

/// Which events a subscriber wants: the runs named (any when empty) of the DAG named (any when
/// `None`), of the kind named (both when `None`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Run ids; empty: every run.
    pub(crate) runs: HashSet<String>,
    /// DAG name; `None`: every DAG.
    pub(crate) dag: Option<String>,
    /// Only run events (`Some(Kind::Run)`) or only step events; `None`: both.
    pub(crate) kind: Option<Kind>,
}

/// The two kinds of events: a run's status change, or a step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A run event (no `step`).
    Run,
    /// A step event.
    Step,
}

impl Filter {
    fn keeps(&self, e: &Event) -> bool {
        (self.runs.is_empty() || self.runs.contains(&e.run))
            && self.dag.as_ref().is_none_or(|d| *d == e.dag)
            && self
                .kind
                .is_none_or(|k| (k == Kind::Step) == e.step.is_some())
    }
}

/// One subscriber's position in the feed; see the module doc.
pub(crate) struct Subscription {
    rx: broadcast::Receiver<Item>,
    store: Arc<Store>,
    replay: Arc<Semaphore>,
    filter: Filter,
    /// The last entry id passed on (or skipped by the filter); later items at or before it are
    /// dropped.
    last: Option<EventId>,
    /// Entries read from the stream by a catch-up, not yet passed on.
    backlog: VecDeque<(EventId, Event)>,
    /// Read the stream after `last` before taking live items.
    catch_up: bool,
    /// Events read from the stream by the current catch-up ([`MAX_REPLAY`]).
    replayed: usize,
    shutdown: CancellationToken,
}

impl Subscription {
    /// The next item for this subscriber; `None` at shutdown (or when the feed is gone).
    pub(crate) async fn next(&mut self) -> Option<Item> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            if let Some((id, e)) = self.backlog.pop_front() {
                if let Some(item) = self.pass(id, Arc::new(e)) {
                    return Some(item);
                }
                continue;
            }
            if self.catch_up && self.replayed >= MAX_REPLAY {
                return Some(self.skip_to_end().await);
            }
            if self.catch_up {
                if let Some(reset) = self.read_stream().await {
                    return Some(reset);
                }
                continue;
            }
            let got = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                got = self.rx.recv() => got,
            };
            match got {
                Ok(Item::Event(id, e)) => {
                    if let Some(item) = self.pass(id, e) {
                        return Some(item);
                    }
                }
                Ok(Item::Reset(at)) => {
                    self.last = self.last.max(at);
                    return Some(Item::Reset(self.last));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => match self.last {
                    Some(_) => {
                        self.catch_up = true;
                        self.replayed = 0;
                    }
                    None => return Some(self.skip_lagged()),
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A subscriber behind the live feed with no position to catch up from: a reset at the
    /// newest id the channel holds, from where it goes on.
    fn skip_lagged(&mut self) -> Item {
        let mut newest = self.last;
        loop {
            match self.rx.try_recv() {
                Ok(Item::Event(id, _)) => newest = newest.max(Some(id)),
                Ok(Item::Reset(at)) => newest = newest.max(at),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        self.last = newest;
        Item::Reset(newest)
    }

    /// The replay bound is reached with more to read: a reset at the stream's end, from where
    /// the subscriber goes on live.
    async fn skip_to_end(&mut self) -> Item {
        info!(
            max_replay = MAX_REPLAY,
            "an event subscriber is too far behind; it gets a reset at the end of the stream"
        );
        self.catch_up = false;
        self.backlog.clear();
        match self.store.events_tail().await {
            Ok(tail) => self.last = self.last.max(tail),
            Err(e) => {
                warn!(cause = %e, "reading the end of the events stream failed; the subscriber gets a reset")
            }
        }
        Item::Reset(self.last)
    }

    /// Moves the position to `id` and returns the event when it is new and the filter keeps it.
    fn pass(&mut self, id: EventId, e: Arc<Event>) -> Option<Item> {
        if self.last.is_some_and(|last| id <= last) {
            return None;
        }
        self.last = Some(id);
        self.filter.keeps(&e).then_some(Item::Event(id, e))
    }

    /// One catch-up step: checks that nothing after `last` was trimmed, then reads a page of
    /// entries after it into the backlog. Returns a reset when events were lost or Redis
    /// failed (the subscriber then goes on with the live feed).
    async fn read_stream(&mut self) -> Option<Item> {
        let Some(from) = self.last else {
            self.catch_up = false;
            return None;
        };
        let read = {
            let _permit = self.replay.acquire().await;
            self.store.events_after(from, REPLAY_PAGE).await
        };
        // Let the requests and subscribers waiting for the runtime go first.
        tokio::task::yield_now().await;
        match read {
            Ok(After::Entries(entries)) => {
                self.replayed += entries.len();
                self.catch_up = entries.len() >= REPLAY_PAGE;
                self.backlog.extend(entries);
                None
            }
            Ok(After::Lost(now)) => {
                self.catch_up = false;
                self.last = self.last.max(now);
                Some(Item::Reset(self.last))
            }
            Err(e) => {
                warn!(cause = %e, "reading the events stream for a subscriber failed; it gets a reset");
                self.catch_up = false;
                Some(Item::Reset(self.last))
            }
        }
    }
}

/// Reads the events stream with `XREAD BLOCK` on a dedicated connection and broadcasts every
/// event to the subscribers, until `shutdown` is cancelled; only while there are subscribers
/// (see the module doc): idle, it sends nothing to Redis. On a Redis error it backs off (100 ms
/// doubling to 5 s), reconnects, reads on from where it was, and first sends the subscribers a
/// reset (events may have been lost while Redis was away).
pub(crate) async fn run(feed: Arc<Feed>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut reader = feed.store.events_reader();
    let mut last: Option<String> = None;
    let mut gap = false;
    // When the last read that returned events began (see COALESCE).
    let mut busy_since: Option<tokio::time::Instant> = None;
    while !shutdown.is_cancelled() {
        if let Some(began) = busy_since.take() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(began + COALESCE) => {}
            }
        }
        match feed.idle_until_wanted(&shutdown).await {
            None => break,
            Some(ReaderState::Start(Some(from))) => {
                last = Some(from.to_string());
                gap = false;
            }
            Some(ReaderState::Start(None)) => {
                last = None;
                gap = true;
            }
            Some(_) => {}
        }
        let read = reader.read(last.as_deref(), PAGE);
        let began = tokio::time::Instant::now();
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = read => r,
        };
        match result {
            Ok(Read { from, entries }) => {
                backoff = Duration::from_millis(100);
                if gap {
                    gap = false;
                    info!("events stream readable again; subscribers get a reset");
                    let _ = feed.tx.send(Item::Reset(EventId::parse(&from)));
                }
                // A full page means more are waiting: read on at once (a reader paused
                // behind a backlog could fall off the capped stream).
                if !entries.is_empty() && entries.len() < PAGE {
                    busy_since = Some(began);
                }
                let mut next = from;
                for (id, events) in entries {
                    next = id;
                    for (id, e) in events {
                        // No receiver is no error: nobody is subscribed right now.
                        let _ = feed.tx.send(Item::Event(id, Arc::new(e)));
                    }
                }
                last = Some(next);
            }
            Err(e) => {
                reader.reset();
                gap = true;
                warn!(cause = %e, retry_in = ?backoff, "reading the events stream failed");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrid_shared::redis::conn::Redis;

    #[test]
    fn event_ids_parse_and_order_like_redis() {
        let a = EventId::parse("1700000000000-2").unwrap();
        let b = EventId::parse("1700000000000-10").unwrap();
        assert!(a < b);
        assert_eq!(EventId::parse("5"), Some(EventId::at(5, 0)));
        assert_eq!(a.to_string(), "1700000000000-2");
        // The first of an entry's two events comes before the entry's last (its plain id).
        let first = EventId::parse("1700000000000-2.0").unwrap();
        assert_eq!(first, EventId(1_700_000_000_000, 2, 0));
        assert!(first < a && a.entry() == first.entry());
        assert_eq!(first.to_string(), "1700000000000-2.0");
        for bad in [
            "", "x", "1-", "-1", "1-2-3", "1.5", "1-2.1", "1-2.", "1-2.0.0",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    fn event(run: &str) -> Arc<Event> {
        Arc::new(Event {
            run: run.into(),
            dag: "d".into(),
            step: None,
            status: "queued".into(),
            attempt: None,
            at_ms: 1,
        })
    }

    fn store(redis: Redis) -> Arc<Store> {
        Arc::new(Store::new(redis, Default::default(), None))
    }

    fn feed() -> Arc<Feed> {
        let redis = Redis::open("redis://127.0.0.1:1", "events-test").expect("the URL parses");
        Feed::new(store(redis))
    }

    #[tokio::test]
    async fn a_live_subscriber_too_far_behind_gets_a_reset_at_the_newest_id() {
        let feed = feed();
        let mut sub = feed
            .subscribe(None, Filter::default(), CancellationToken::new())
            .await;
        let n = CHANNEL_CAPACITY as u64 + 10;
        for i in 1..=n {
            let _ = feed.tx.send(Item::Event(EventId::at(i, 0), event("r")));
        }
        match sub.next().await {
            Some(Item::Reset(at)) => assert_eq!(at, Some(EventId::at(n, 0))),
            other => panic!("expected a reset, got {other:?}"),
        }
        let _ = feed.tx.send(Item::Event(EventId::at(n + 1, 0), event("r")));
        assert!(
            matches!(sub.next().await, Some(Item::Event(id, _)) if id == EventId::at(n + 1, 0)),
            "then it goes on live"
        );
    }

    #[test]
    fn streams_are_capped_per_caller() {
        let feed = feed();
        let slots: Vec<StreamSlot> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| feed.open_stream("ci").expect("a slot"))
            .collect();
        assert!(feed.open_stream("ci").is_none());
        assert!(
            feed.open_stream("dashboard").is_some(),
            "other callers have their own"
        );
        drop(slots);
        assert!(
            feed.open_stream("ci").is_some(),
            "closed streams free their slots"
        );
    }

    #[test]
    fn filters_keep_the_named_runs_of_the_named_dag() {
        let e = |run: &str, dag: &str| Event {
            run: run.into(),
            dag: dag.into(),
            step: None,
            status: "queued".into(),
            attempt: None,
            at_ms: 1,
        };
        let all = Filter::default();
        assert!(all.keeps(&e("r1", "d")));
        let f = Filter {
            runs: ["r1".to_string()].into(),
            dag: Some("d".into()),
            kind: None,
        };
        assert!(f.keeps(&e("r1", "d")));
        assert!(!f.keeps(&e("r2", "d")));
        assert!(!f.keeps(&e("r1", "other")));
        let step = Event {
            step: Some("s".into()),
            ..e("r1", "d")
        };
        let runs_only = Filter {
            kind: Some(Kind::Run),
            ..Filter::default()
        };
        assert!(runs_only.keeps(&e("r1", "d")));
        assert!(!runs_only.keeps(&step));
        let steps_only = Filter {
            kind: Some(Kind::Step),
            ..Filter::default()
        };
        assert!(!steps_only.keeps(&e("r1", "d")));
        assert!(steps_only.keeps(&step));
    }

    async fn next_run(sub: &mut Subscription) -> String {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(Item::Event(_, e))) => e.run.clone(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// With no subscriber the reader sends nothing to Redis; a subscriber gets every event
    /// added after `subscribe` returned, even before the reader woke; one resuming from an id
    /// gets what came after it.
    #[tokio::test]
    async fn the_reader_reads_only_for_subscribers_and_they_miss_nothing() {
        let server = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = store(Redis::open(&server.url(), "ev").unwrap());
        let feed = Feed::new(redis.clone());
        let stop = CancellationToken::new();
        let reader = tokio::spawn(run(feed.clone(), stop.clone()));
        redis.add_test_event("before").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(redis.xread_calls().await, 0, "no subscriber, no read");

        let mut sub = feed
            .subscribe(None, Filter::default(), stop.child_token())
            .await;
        let first = redis.add_test_event("r1").await;
        redis.add_test_event("r2").await;
        assert_eq!(next_run(&mut sub).await, "r1");
        assert_eq!(next_run(&mut sub).await, "r2");
        drop(sub);
        // The read in flight returns with this event; then the reader idles.
        redis.add_test_event("r3").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = redis.xread_calls().await;
        redis.add_test_event("r4").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            redis.xread_calls().await,
            idle,
            "idle again once unsubscribed"
        );

        let mut resumed = feed
            .subscribe(Some(first), Filter::default(), stop.child_token())
            .await;
        for want in ["r2", "r3", "r4"] {
            assert_eq!(next_run(&mut resumed).await, want);
        }
        redis.add_test_event("r5").await;
        assert_eq!(next_run(&mut resumed).await, "r5");
        stop.cancel();
        reader.await.unwrap();
    }
}
