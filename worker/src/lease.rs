//! The leases of the ready entries this worker holds, and how it learns that it lost one.
//!
//! Every step this worker claims is a pending entry of its consumer in the workers' group on
//! the ready stream of the step's priority, from the claim until its final report
//! acknowledges it. A coordinator's reaper reclaims the entries of dead workers (idle longer
//! than the lease and owner's heartbeat older than the lease; or, with no connection of the
//! owner left, 1.5 heartbeat intervals), and stopping a run acknowledges
//! and deletes the run's entries; either way the entry leaves this worker's pending list.
//!
//! So on every heartbeat the worker sends, per ready stream where it holds entries,
//! `XCLAIM <ready stream> workers <worker id> 0 <id>… JUSTID` ([`Leases::held`] gives the ids),
//! which resets each entry's idle time without bumping its delivery count, and returns the ids
//! still pending for this worker. Every id sent but not returned is lost: its [`Lease`] is
//! marked lost ([`Leases::settle`]) and the step's task stops its process group. Only a reply
//! to the XCLAIM counts; a failed or timed-out call settles nothing (Redis being unreachable
//! must never kill steps).
//!
//! `XCLAIM … 0` takes an entry from whichever consumer holds it, so this relies on no one else
//! leaving this worker's entries pending under another consumer: the reaper moves an entry and
//! acknowledges it in one script, and stop acknowledges entries in place.
//!
//! A lease is held from the claim until the step's task ends, just after its final report is
//! queued: an entry whose report is still on its way is no longer refreshed, which is harmless
//! (the reaper also needs this worker's heartbeat to be stale).
//!
//! **Self-fencing.** A worker cut off from Redis cannot learn that its entries were taken back,
//! so it does not wait to: each lease counts from its last renewal (the send time of the last
//! heartbeat whose XCLAIMs all answered, or its claim if later), and once that is
//! [`fence_after`] old (the lease minus [`fence_margin`]) [`Lease::expired`] completes and the
//! step's process group is stopped (its stop signal, SIGKILL after at most half the margin),
//! with no report: the entry stays pending and the reaper takes it back once the lease is over,
//! so the next attempt never starts before this one is dead (up to clock drift between the
//! hosts and the worker's own scheduling).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How long before the lease ends a worker that could not renew its leases stops their steps:
/// a quarter of the lease, at most 2 s (2 s of the default 10 s lease).
pub(crate) fn fence_margin(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_secs(2))
}

/// How long after its last renewal a lease's step is stopped: the lease minus [`fence_margin`].
pub(crate) fn fence_after(lease: Duration) -> Duration {
    lease - fence_margin(lease)
}

/// The entries this worker holds: (ready stream, entry id) → the lost signal of its lease.
#[derive(Debug)]
pub(crate) struct Leases {
    held: Mutex<HashMap<(Arc<str>, String), Held>>,
    /// Numbers the leases, so a lease only ever removes its own registration.
    next: AtomicU64,
    /// When the last renewal that reached Redis was sent.
    renewed: watch::Sender<Instant>,
    /// The coordinators' lease (`--lease-timeout`); `None`: steps are never fenced.
    lease: Option<Duration>,
}

impl Default for Leases {
    /// Leases that never expire on their own (lost only when Redis says so).
    fn default() -> Self {
        Self::new(None)
    }
}

#[derive(Debug)]
struct Held {
    serial: u64,
    lost: CancellationToken,
}

/// One held entry; dropping it stops refreshing the entry.
#[derive(Debug)]
pub(crate) struct Lease {
    leases: Arc<Leases>,
    stream: Arc<str>,
    id: String,
    serial: u64,
    lost: CancellationToken,
    /// When it was claimed: it counts as renewed then.
    claimed: Instant,
}

impl Leases {
    /// Leases of `lease` (the coordinators' `--lease-timeout`), whose steps stop
    /// [`fence_after`] it after their last renewal; `None`: never.
    pub(crate) fn new(lease: Option<Duration>) -> Self {
        Self {
            held: Mutex::default(),
            next: AtomicU64::new(0),
            renewed: watch::Sender::new(Instant::now()),
            lease,
        }
    }

    /// Records a renewal of every held lease sent at `sent` that Redis answered.
    pub(crate) fn renewed(&self, sent: Instant) {
        self.renewed.send_if_modified(|last| {
            let later = sent > *last;
            if later {
                *last = sent;
            }
            later
        });
    }

    /// Registers entry `id` of ready stream `stream`, claimed just now.
    pub(crate) fn hold(self: &Arc<Self>, stream: &Arc<str>, id: &str) -> Lease {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let lost = CancellationToken::new();
        self.lock().insert(
            (stream.clone(), id.to_string()),
            Held {
                serial,
                lost: lost.clone(),
            },
        );
        Lease {
            leases: self.clone(),
            stream: stream.clone(),
            id: id.to_string(),
            serial,
            lost,
            claimed: Instant::now(),
        }
    }

    /// The ids held now, by ready stream (ids in no particular order).
    pub(crate) fn held(&self) -> BTreeMap<Arc<str>, Vec<String>> {
        let mut by_stream: BTreeMap<Arc<str>, Vec<String>> = BTreeMap::new();
        for (stream, id) in self.lock().keys() {
            by_stream
                .entry(stream.clone())
                .or_default()
                .push(id.clone());
        }
        by_stream
    }

    /// Applies the reply of one stream's XCLAIM: every id of `sent` not in `kept` is lost, and
    /// its lease (if still held) is marked so. Returns the lost ids.
    pub(crate) fn settle(
        &self,
        stream: &Arc<str>,
        sent: &[String],
        kept: &[String],
    ) -> Vec<String> {
        let lost = lost_ids(sent, kept);
        let held = self.lock();
        for id in &lost {
            if let Some(h) = held.get(&(stream.clone(), id.clone())) {
                h.lost.cancel();
            }
        }
        lost
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Arc<str>, String), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Lease {
    /// Completes once the entry is known lost.
    pub(crate) fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// True once the entry is known lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// How long the lease may go without a renewal before its step is stopped
    /// ([`fence_after`]), and the longest cleanup grace the step then gets (half the
    /// [`fence_margin`]); `None` without a fence.
    pub(crate) fn fence(&self) -> Option<(Duration, Duration)> {
        self.leases
            .lease
            .map(|lease| (fence_after(lease), fence_margin(lease) / 2))
    }

    /// Completes once the lease has gone [`fence_after`] without a renewal reaching Redis
    /// (never, for leases made without a fence): the step must stop before the reaper can
    /// hand it to another worker.
    pub(crate) async fn expired(&self) {
        let Some((after, _)) = self.fence() else {
            return std::future::pending().await;
        };
        let mut renewed = self.leases.renewed.subscribe();
        loop {
            let last = (*renewed.borrow_and_update()).max(self.claimed);
            tokio::select! {
                () = tokio::time::sleep_until(last + after) => return,
                changed = renewed.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.leases.lock();
        let key = (self.stream.clone(), std::mem::take(&mut self.id));
        if held.get(&key).is_some_and(|h| h.serial == self.serial) {
            held.remove(&key);
        }
    }
}

/// The ids of `sent` that are not in `kept` (the XCLAIM reply), in `sent`'s order.
fn lost_ids(sent: &[String], kept: &[String]) -> Vec<String> {
    let kept: HashSet<&str> = kept.iter().map(String::as_str).collect();
    sent.iter()
        .filter(|id| !kept.contains(id.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_sent_but_not_returned_are_lost() {
        assert_eq!(
            lost_ids(&ids(&["1-0", "2-0", "3-0"]), &ids(&["3-0", "1-0"])),
            ids(&["2-0"])
        );
        assert!(lost_ids(&ids(&["1-0"]), &ids(&["1-0"])).is_empty());
        assert_eq!(lost_ids(&ids(&["1-0"]), &[]), ids(&["1-0"]));
    }

    #[test]
    fn settling_marks_only_the_lost_leases_of_that_stream() {
        let leases = Arc::new(Leases::default());
        let a = leases.hold(&stream("r5"), "1-0");
        let b = leases.hold(&stream("r5"), "2-0");
        let c = leases.hold(&stream("r8"), "2-0");
        let mut held = leases.held();
        held.values_mut().for_each(|v| v.sort());
        assert_eq!(
            held,
            BTreeMap::from([
                (stream("r5"), ids(&["1-0", "2-0"])),
                (stream("r8"), ids(&["2-0"]))
            ])
        );
        let lost = leases.settle(&stream("r5"), &ids(&["1-0", "2-0"]), &ids(&["1-0"]));
        assert_eq!(lost, ids(&["2-0"]));
        assert!(!a.is_lost());
        assert!(b.is_lost());
        assert!(!c.is_lost(), "same id on another stream");
    }

    #[test]
    fn a_dropped_lease_is_no_longer_held_or_settled() {
        let leases = Arc::new(Leases::default());
        let a = leases.hold(&stream("r5"), "1-0");
        drop(a);
        assert!(leases.held().is_empty());
        // A lost id that is no longer held is reported but marks nothing.
        assert_eq!(
            leases.settle(&stream("r5"), &ids(&["1-0"]), &[]),
            ids(&["1-0"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_after_the_fence_without_a_renewal() {
        let leases = Arc::new(Leases::new(Some(Duration::from_secs(10))));
        let a = leases.hold(&stream("r5"), "1-0");
        let start = Instant::now();
        // Renewals push the end back.
        tokio::time::sleep(Duration::from_secs(5)).await;
        leases.renewed(Instant::now());
        a.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(13));
        // An older renewal changes nothing; a lease claimed later counts from its claim.
        leases.renewed(start);
        let b = leases.hold(&stream("r5"), "2-0");
        let claimed = Instant::now();
        b.expired().await;
        assert_eq!(claimed.elapsed(), Duration::from_secs(8));
        assert_eq!(fence_after(Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(
            fence_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_without_a_fence_never_expires() {
        let leases = Arc::new(Leases::default());
        let a = leases.hold(&stream("r5"), "1-0");
        let waited = tokio::time::timeout(Duration::from_secs(3600), a.expired()).await;
        assert!(waited.is_err());
    }

    #[test]
    fn only_its_own_registration_is_removed() {
        let leases = Arc::new(Leases::default());
        let first = leases.hold(&stream("r5"), "1-0");
        let second = leases.hold(&stream("r5"), "1-0");
        drop(first);
        assert_eq!(leases.held()[&stream("r5")], ids(&["1-0"]));
        leases.settle(&stream("r5"), &ids(&["1-0"]), &[]);
        assert!(second.is_lost());
    }
}
