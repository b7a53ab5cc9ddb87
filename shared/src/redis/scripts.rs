//! The Lua scripts of every multi-key transition, one file each under `lua/` (next to this file).
//!
//! Each script opens with a header naming its KEYS, ARGV and reply. Every key a script touches
//! is passed in KEYS and shares the namespace hash tag (see [`crate::redis::keys`]), so the scripts
//! run unchanged on Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// Functions shared by the admission scripts, prepended to each (`lua/admission.lua`, after
/// `lua/streams.lua`, which it uses).
macro_rules! with_admission {
    ($file:literal) => {
        concat!(
            include_str!("lua/streams.lua"),
            "\n",
            include_str!("lua/admission.lua"),
            "\n",
            include_str!($file)
        )
    };
}

/// Functions that append to the events stream, prepended to each script that reports state
/// changes there (`lua/events.lua`).
macro_rules! with_events {
    ($src:expr) => {
        concat!(include_str!("lua/events.lua"), "\n", $src)
    };
}

/// The field of a dedup key in the dedup holders hash, prepended to each script that releases
/// one or takes it again on a retry (`lua/holders.lua`; SUBMIT gets the field from its caller).
macro_rules! with_holders {
    ($src:expr) => {
        concat!(include_str!("lua/holders.lua"), "\n", $src)
    };
}

/// Creates a run: dedup, cron-slot claim, delay, admission; appends the new run's events,
/// packed by the caller ([`crate::model::Event::pack`]) (`lua/submit.lua`).
pub static SUBMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_admission!("lua/submit.lua")));

/// Moves a due delayed run to admission (`lua/promote.lua`).
pub static PROMOTE: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_admission!("lua/promote.lua")));

/// Admits waiting runs of one queue while capacity allows (`lua/admit.lua`).
pub static ADMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_admission!("lua/admit.lua")));

/// Compare-and-set of a run's state after step reports, appending its events
/// (`lua/apply_transition.lua`).
pub static APPLY_TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(with_holders!(with_events!(concat!(
        include_str!("lua/streams.lua"),
        "\n",
        include_str!("lua/apply_transition.lua")
    ))))
});

/// Releases a dedup key whose holder has finished or is gone: left by a release of an earlier
/// version, which did not know the field (`lua/release_holder.lua`).
pub static RELEASE_HOLDER: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_holders!(include_str!("lua/release_holder.lua"))));

/// A worker's final report on a step attempt (`lua/complete_step.lua`).
pub static COMPLETE_STEP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/complete_step.lua")));

/// A worker's publication of a running step's log tail (`lua/live_tail.lua`).
pub static LIVE_TAIL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/live_tail.lua")));

/// A worker's claim of the most urgent ready entries, highest priority level first
/// (`lua/claim.lua`).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));

/// Queues the next attempt of a retrying step whose backoff has passed, appending its event
/// (`lua/retry_due.lua`).
pub static RETRY_DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(with_events!(include_str!("lua/retry_due.lua"))));

/// Takes back a dead worker's ready entry and reports its attempt lost (`lua/reclaim.lua`).
pub static RECLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/reclaim.lua")));

/// Deletes a dead worker's consumer that holds no pending entry, checking both again in the
/// same step (`lua/delete_consumer.lua`).
pub static DELETE_CONSUMER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/delete_consumer.lua")));

/// Deletes one finished run past a retention bound, with its log tails, index entries and
/// dedup key (`lua/retention.lua`).
pub static RETENTION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/retention.lua")));

/// Records or clears the pending cron slot of an `overlapPolicy: latest` DAG
/// (`lua/pending_slot.lua`).
pub static PENDING_SLOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/pending_slot.lua")));

/// `drop_run_retry.lua`: removes a due `rr:<run id>` member that has nothing to retry, and the
/// run's `retryat` field, unless the member's due time lies ahead (a newer retry). KEYS: the
/// delayed ZSET, the run HASH; ARGV: member, now (ms), the retry-at field name. Returns 1 when
/// removed, 0 when kept.
pub static DROP_RUN_RETRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/drop_run_retry.lua")));

/// The fan hash of a call step's attempt: reset before its child runs are created, armed with
/// them after (`lua/fan.lua`).
pub static FAN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/fan.lua")));

/// Every script, for loading them all at once (SCRIPT LOAD) before pipelining EVALSHA.
pub fn all() -> Vec<&'static Script> {
    vec![
        &*SUBMIT,
        &*PROMOTE,
        &*ADMIT,
        &*APPLY_TRANSITION,
        &*COMPLETE_STEP,
        &*LIVE_TAIL,
        &*CLAIM,
        &*RETRY_DUE,
        &*RECLAIM,
        &*DELETE_CONSUMER,
        &*RETENTION,
        &*PENDING_SLOT,
        &*DROP_RUN_RETRY,
        &*FAN,
        &*RELEASE_HOLDER,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::conn::Redis;

    /// `delete_consumer.lua` deletes a consumer only while it holds no pending entry and its
    /// worker sent no heartbeat since the cutoff, however the reaper's earlier look went.
    #[tokio::test]
    async fn delete_consumer_keeps_a_consumer_that_holds_an_entry_or_heartbeat() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "dc").unwrap();
        let mut c = redis.conn().await.unwrap();
        let (stream, workers, group) = ("{dc}:ready:5", "{dc}:workers", "workers");
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("t")
            .arg("x")
            .query_async(&mut *c)
            .await
            .unwrap();
        // The worker claimed the entry (after the reaper saw it hold nothing).
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("w1")
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async::<redis::Value>(&mut *c)
            .await
            .unwrap();
        let delete = |cutoff: u64| {
            let mut inv = DELETE_CONSUMER.prepare_invoke();
            inv.key(stream)
                .key(workers)
                .arg(group)
                .arg("w1")
                .arg(cutoff);
            inv
        };
        let kept: i64 = delete(u64::MAX).invoke_async(&mut *c).await.unwrap();
        assert_eq!(kept, 0, "a consumer holding an entry is kept");
        assert_eq!(consumers(&mut c, stream, group).await, 1);
        redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&id)
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        // A heartbeat at 5,000 ms keeps it with a cutoff at or before that.
        redis::cmd("ZADD")
            .arg(workers)
            .arg(5_000)
            .arg("w1")
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let kept: i64 = delete(5_000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(
            kept, 0,
            "a consumer whose worker heartbeat since the cutoff is kept"
        );
        let deleted: i64 = delete(5_001).invoke_async(&mut *c).await.unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(consumers(&mut c, stream, group).await, 0);
    }

    /// One SUBMIT call over a chunk of five runs, in order: a new run holding dedup key K, a
    /// run whose id is taken (`exists`, nothing written for it), a run with the same key K
    /// (deduplicated onto the first), a run without a key, and a run whose key L is held under
    /// its name from before dedup keys were digests (deduplicated onto that holder); the new
    /// runs are indexed, active and have their events (indexes and sets written once per call);
    /// under an Idempotency-Key a second call replays each item and a call with another body
    /// writes nothing.
    #[tokio::test]
    async fn submit_chunk_dedups_in_order_and_reports_a_taken_id() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "sb").unwrap();
        let mut c = redis.conn().await.unwrap();
        redis::cmd("HSET")
            .arg("{sb}:run:taken")
            .arg("status")
            .arg("succeeded")
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        // `width`: run ids padded to that many bytes (36: as runs of earlier versions have; 37:
        // longer than any run id), with dedup keys of their own; 0: as they are.
        let call = |digest: &str, idem: &str, width: usize| {
            let mut inv = SUBMIT.prepare_invoke();
            for k in [
                "runs",
                "runs:dag:d",
                "runs:status:queued",
                "ready:5",
                "delayed",
                "waiting:d",
                "active:d",
                "active:dag:d",
                "waiting-queues",
                "paused",
                "events",
            ] {
                inv.key(format!("{{sb}}:{k}"));
            }
            inv.key(format!("{{sb}}:{idem}"));
            inv.arg("d").arg(0).arg(0).arg(digest).arg(60_000).arg(1000);
            inv.arg(1).arg(1).arg("dag").arg("d");
            let runs = [
                ("r1", "d", "aaaaaaaaaaaaaaaaaaaaaaaa"),
                ("taken", "", "-"),
                ("r3", "d", "aaaaaaaaaaaaaaaaaaaaaaaa"),
                ("r4", "", "-"),
                ("r5", "d", "bbbbbbbbbbbbbbbbbbbbbbbb"),
            ];
            inv.arg(runs.len());
            for (i, (id, flags, dedup)) in runs.iter().enumerate() {
                let (id, dedup) = if width > 0 {
                    (
                        format!("{id:->width$}"),
                        match dedup.get(..20) {
                            Some(head) => format!("{head}{width:04x}"),
                            None => format!("{dedup}-{width}"),
                        },
                    )
                } else {
                    (id.to_string(), dedup.to_string())
                };
                inv.key(format!("{{sb}}:run:{id}"))
                    .key(format!("{{sb}}:dd:{dedup}"))
                    .key(format!("{{sb}}:dedup:d:{dedup}"))
                    .key("{sb}:fired:d:0");
                inv.arg(&id).arg(*flags).arg(i);
                if flags.contains('d') {
                    let key = format!("{{sb}}:dd:{dedup}");
                    inv.arg(crate::redis::keys::Keys::dedup_field(&key).unwrap());
                }
                inv.arg(0)
                    .arg(1)
                    .arg("a")
                    .arg(0)
                    .arg(format!("task-{id}"))
                    .arg(1)
                    .arg(crate::model::Event::pack(&id, "d", "", "queued", "", "").unwrap());
            }
            inv.key("{sb}:dd");
            inv
        };
        // L is held under its name from before dedup keys were digests, by a run queued by
        // an earlier version.
        redis::cmd("SET")
            .arg("{sb}:dedup:d:bbbbbbbbbbbbbbbbbbbbbbbb")
            .arg("old")
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let first: Vec<String> = call("body", "idem:k", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(first, ["a", "x", "dr1", "a", "dold"]);
        // The holder is a field of the holders hash, named by the 12 bytes the key's last 24
        // characters (its digest) spell in hex.
        let holder: Option<String> = redis::cmd("HGET")
            .arg("{sb}:dd")
            .arg(crate::redis::keys::Keys::dedup_field("{sb}:dd:aaaaaaaaaaaaaaaaaaaaaaaa").unwrap())
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(holder.as_deref(), Some("r1"));
        let key: Option<String> = redis::cmd("GET")
            .arg("{sb}:dd:aaaaaaaaaaaaaaaaaaaaaaaa")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(key, None, "an active holder has no key of its own");
        let named: Option<String> = redis::cmd("HGET")
            .arg("{sb}:run:r1")
            .arg("dedup")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(
            named.as_deref(),
            Some("aaaaaaaaaaaaaaaaaaaaaaaa"),
            "the run names the key it holds"
        );
        for index in ["{sb}:runs:dag:d", "{sb}:runs:status:queued"] {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(index)
                .arg(0)
                .arg(-1)
                .query_async(&mut *c)
                .await
                .unwrap();
            assert_eq!(members, ["r1", "r4"], "{index}");
        }
        let mut active: Vec<String> = redis::cmd("SMEMBERS")
            .arg("{sb}:active:d")
            .query_async(&mut *c)
            .await
            .unwrap();
        active.sort();
        assert_eq!(active, ["r1", "r4"]);
        let events: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("{sb}:events")
            .arg("-")
            .arg("+")
            .query_async(&mut *c)
            .await
            .unwrap();
        let events: Vec<(String, String)> = events
            .ids
            .iter()
            .flat_map(|e| {
                let fields = e.map.iter().filter_map(|(k, v)| match v {
                    redis::Value::BulkString(b) => Some((k.as_str(), b.as_slice())),
                    _ => None,
                });
                crate::model::Event::from_entry(fields)
            })
            .map(|e| (e.run, e.status))
            .collect();
        assert_eq!(
            events,
            [
                ("r1".into(), "queued".into()),
                ("r4".into(), "queued".into())
            ],
            "a run event per created run (these have no step events), as packed by the caller"
        );
        let status: Option<String> = redis::cmd("HGET")
            .arg("{sb}:run:taken")
            .arg("dag")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(status, None, "the taken run's hash is left alone");
        let ready: usize = redis::cmd("XLEN")
            .arg("{sb}:ready:5")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(ready, 2, "one ready entry per created run");
        let again: Vec<String> = call("body", "idem:k", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(again, ["rc:r1", "x", "rd:r1", "rc:r4", "rd:old"]);
        let other: Vec<String> = call("other body", "idem:k", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(other, ["conflict"]);
        let ready: usize = redis::cmd("XLEN")
            .arg("{sb}:ready:5")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(ready, 2, "replays and conflicts queue nothing");
        // Run ids that fit a 27-byte slot (these, and the 26 bytes of a real one) are recorded
        // in one block of slots, padded with spaces, and replayed from it.
        let mut fields: Vec<String> = redis::cmd("HKEYS")
            .arg("{sb}:idem:k")
            .query_async(&mut *c)
            .await
            .unwrap();
        fields.sort();
        assert_eq!(fields, ["#", "B0", "~"]);
        // Ids that do not (the 36 bytes of runs of earlier versions) are recorded a field per
        // item. Either way a second call replays every item.
        for (width, idem, recorded) in [
            (26, "{sb}:idem:26", &["#", "B0", "~"][..]),
            (27, "{sb}:idem:27", &["#", "0", "1", "2", "3", "4", "~"][..]),
            (36, "{sb}:idem:36", &["#", "0", "1", "2", "3", "4", "~"][..]),
        ] {
            let padded = |id: &str| format!("{id:->width$}");
            let first: Vec<String> = call("body", &idem[5..], width)
                .invoke_async(&mut *c)
                .await
                .unwrap();
            let dedup = format!("d{}", padded("r1"));
            assert_eq!(first, ["a", "a", dedup.as_str(), "a", "a"], "{width}");
            let again: Vec<String> = call("body", &idem[5..], width)
                .invoke_async(&mut *c)
                .await
                .unwrap();
            let want: Vec<String> = ["c:r1", "c:taken", "d:r1", "c:r4", "c:r5"]
                .iter()
                .map(|r| format!("r{}{}", &r[..2], padded(&r[2..])))
                .collect();
            assert_eq!(again, want, "{width}");
            let mut fields: Vec<String> = redis::cmd("HKEYS")
                .arg(idem)
                .query_async(&mut *c)
                .await
                .unwrap();
            fields.sort();
            assert_eq!(fields, recorded, "{width}");
        }
        // A record an earlier version wrote (a field per item) is read and added to in its form.
        redis::cmd("HSET")
            .arg("{sb}:idem:old")
            .arg("#")
            .arg("body")
            .arg("0")
            .arg("c:r1")
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let old: Vec<String> = call("body", "idem:old", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        // (r4 exists since the first call, so its id is taken now.)
        assert_eq!(old, ["rc:r1", "x", "dr1", "x", "dold"]);
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg("{sb}:idem:old")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(fields.get("2").map(String::as_str), Some("d:r1"));
        assert_eq!(fields.get("4").map(String::as_str), Some("d:old"));
        assert!(!fields.contains_key("~"), "{fields:?}");
        // So is one in the block form of the previous version: 200 slots of 37 bytes in `b<n>`.
        let slot = |s: &str| format!("{s:<37}");
        let block = slot("cr1") + &" ".repeat(37 * 199);
        redis::cmd("HSET")
            .arg("{sb}:idem:prev")
            .arg("#")
            .arg("body")
            .arg("~")
            .arg("1")
            .arg("b0")
            .arg(&block)
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let prev: Vec<String> = call("body", "idem:prev", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(prev, ["rc:r1", "x", "dr1", "x", "dold"]);
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg("{sb}:idem:prev")
            .query_async(&mut *c)
            .await
            .unwrap();
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["#", "b0", "~"]);
        assert_eq!(fields["~"], "1");
        let b0 = &fields["b0"];
        assert_eq!(b0.len(), 37 * 200);
        assert_eq!(
            &b0[..37 * 5],
            slot("cr1") + &slot(" ") + &slot("dr1") + &slot(" ") + &slot("dold")
        );
        let again: Vec<String> = call("body", "idem:prev", 0)
            .invoke_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(again, ["rc:r1", "x", "rd:r1", "x", "rd:old"]);
    }

    /// How many consumers `group` of `stream` has.
    async fn consumers(c: &mut crate::redis::conn::Conn, stream: &str, group: &str) -> usize {
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async::<Vec<redis::Value>>(&mut **c)
            .await
            .unwrap()
            .len()
    }

    /// `pending_slot.lua` keeps only the newest pending slot; clearing a slot clears the record
    /// while it holds that slot or an older one, never a newer one.
    /// `admit.lua` queues each held task on its own stream (`hq:<i>`, absent: the run's own,
    /// as runs held by earlier versions are), and leaves a run waiting, untouched, when a
    /// held task names a stream its caller did not pass.
    #[tokio::test]
    async fn admit_queues_held_tasks_on_their_streams_and_never_on_another() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "ad").unwrap();
        let mut c = redis.conn().await.unwrap();
        let (own, gpu) = ("{ad}:ready:5", "{ad}:ready:5:gpu=true");
        let hold = |run: &str, hq: bool| {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(format!("{{ad}}:run:{run}"))
                .arg("held")
                .arg(2)
                .arg("h:1")
                .arg("t-a")
                .arg("hs:1")
                .arg("a")
                .arg("h:2")
                .arg("t-b")
                .arg("hs:2")
                .arg("b");
            if hq {
                cmd.arg("hq:1").arg(1);
            }
            cmd
        };
        // `old`: held by an earlier version (no hq:); `new`: `a` on stream 1.
        for (run, hq) in [("old", false), ("new", true)] {
            hold(run, hq).query_async::<()>(&mut *c).await.unwrap();
            redis::cmd("ZADD")
                .arg("{ad}:waiting:q")
                .arg(0)
                .arg(run)
                .query_async::<()>(&mut *c)
                .await
                .unwrap();
        }
        let admit = |streams: &[&str]| {
            let mut inv = ADMIT.prepare_invoke();
            for k in ["waiting:q", "active:q", "waiting-queues", "paused"] {
                inv.key(format!("{{ad}}:{k}"));
            }
            inv.arg("q").arg(0);
            for run in ["old", "new"] {
                inv.key(format!("{{ad}}:run:{run}"))
                    .key("{ad}:active:dag:d");
                for s in streams {
                    inv.key(*s);
                }
                inv.arg(run).arg(0).arg(streams.len());
            }
            inv
        };
        let redis = &redis;
        let entries = |stream: &'static str| async move {
            let mut c = redis.conn().await.unwrap();
            let got: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg("-")
                .arg("+")
                .query_async(&mut *c)
                .await
                .unwrap();
            got.ids
                .iter()
                .map(|e| e.get::<String>("t").unwrap())
                .collect::<Vec<_>>()
        };
        // Only the run's own stream passed: `old` is admitted onto it, `new` waits, held.
        let (n, _): (i64, i64) = admit(&[own]).invoke_async(&mut *c).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(entries(own).await, ["t-a", "t-b"]);
        let (held, reason): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg("{ad}:run:new")
            .arg("held")
            .arg("reason")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(held.as_deref(), Some("2"));
        assert!(reason.unwrap_or_default().contains("not passed"));
        // Both streams passed: `new`'s `a` goes to stream 1, its `b` to its own.
        let (n, _): (i64, i64) = admit(&[own, gpu]).invoke_async(&mut *c).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(entries(own).await, ["t-a", "t-b", "t-b"]);
        assert_eq!(entries(gpu).await, ["t-a"]);
        let left: Vec<String> = redis::cmd("HKEYS")
            .arg("{ad}:run:new")
            .query_async(&mut *c)
            .await
            .unwrap();
        let mut left: Vec<&str> = left.iter().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["e:a", "e:b"], "the held fields are gone");
    }

    #[tokio::test]
    async fn pending_slot_keeps_the_newest_and_a_newer_slot_settles_older_ones() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "ps").unwrap();
        let mut c = redis.conn().await.unwrap();
        let key = "{ps}:schedule:pending";
        let call = |op: &'static str, slot: u64| {
            let mut inv = PENDING_SLOT.prepare_invoke();
            inv.key(key).arg("d").arg(op).arg(slot);
            inv
        };
        let changed: i64 = call("set", 2000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 1);
        let changed: i64 = call("set", 1000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 0, "an older slot never replaces a newer one");
        let changed: i64 = call("clear", 1000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 0, "clearing another slot keeps the newer one");
        let slot: Option<u64> = redis::cmd("HGET")
            .arg(key)
            .arg("d")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(slot, Some(2000));
        let changed: i64 = call("clear", 2000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 1);
        // A newer slot that fired (or was skipped) settles an older pending one, which must
        // never fire after it.
        let changed: i64 = call("set", 3000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 1);
        let changed: i64 = call("clear", 4000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(changed, 1, "a newer slot clears an older pending one");
        let left: u64 = redis::cmd("HLEN")
            .arg(key)
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    /// `drop_run_retry.lua` removes a due `rr:` member and the run's stale `retryat`, and
    /// keeps a member scheduled again meanwhile (due later), with its `retryat`.
    #[tokio::test]
    async fn drop_run_retry_keeps_a_retry_scheduled_again() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "dr").unwrap();
        let mut c = redis.conn().await.unwrap();
        let (delayed, run) = ("{dr}:delayed", "{dr}:run:r1");
        let drop = |now: u64| {
            let mut inv = DROP_RUN_RETRY.prepare_invoke();
            inv.key(delayed)
                .key(run)
                .arg("rr:r1")
                .arg(now)
                .arg("retryat");
            inv
        };
        let setup = |due: u64| {
            redis::pipe()
                .cmd("ZADD")
                .arg(delayed)
                .arg(due)
                .arg("rr:r1")
                .cmd("HSET")
                .arg(run)
                .arg("retryat")
                .arg(due)
                .clone()
        };
        setup(5_000).query_async::<()>(&mut *c).await.unwrap();
        let removed: i64 = drop(1_000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(removed, 0, "a retry due later is kept");
        let removed: i64 = drop(5_000).invoke_async(&mut *c).await.unwrap();
        assert_eq!(removed, 1);
        let (left, at): (u64, Option<u64>) = redis::pipe()
            .cmd("ZCARD")
            .arg(delayed)
            .cmd("HGET")
            .arg(run)
            .arg("retryat")
            .query_async(&mut *c)
            .await
            .unwrap();
        assert_eq!((left, at), (0, None));
    }
}

/// The Lua scripts use the same field names as the Rust code: every string literal in a
/// script is a name declared in Rust (a field of the run hash, an event, a log tail or a
/// stream entry, or a status), a reply or flag code that the script's header documents, or
/// Redis syntax. A field renamed on one side only fails here.
#[cfg(test)]
mod literals {
    use crate::model::RunStatus;
    use crate::redis::fields::{event_field, fan_field, log_tail_field, run_field, stream_field};

    const SOURCES: [(&str, &str); 19] = [
        ("admission.lua", include_str!("lua/admission.lua")),
        ("admit.lua", include_str!("lua/admit.lua")),
        (
            "apply_transition.lua",
            include_str!("lua/apply_transition.lua"),
        ),
        ("claim.lua", include_str!("lua/claim.lua")),
        ("complete_step.lua", include_str!("lua/complete_step.lua")),
        (
            "delete_consumer.lua",
            include_str!("lua/delete_consumer.lua"),
        ),
        ("drop_run_retry.lua", include_str!("lua/drop_run_retry.lua")),
        ("events.lua", include_str!("lua/events.lua")),
        ("fan.lua", include_str!("lua/fan.lua")),
        ("holders.lua", include_str!("lua/holders.lua")),
        ("live_tail.lua", include_str!("lua/live_tail.lua")),
        ("pending_slot.lua", include_str!("lua/pending_slot.lua")),
        ("promote.lua", include_str!("lua/promote.lua")),
        ("reclaim.lua", include_str!("lua/reclaim.lua")),
        ("release_holder.lua", include_str!("lua/release_holder.lua")),
        ("retention.lua", include_str!("lua/retention.lua")),
        ("retry_due.lua", include_str!("lua/retry_due.lua")),
        ("streams.lua", include_str!("lua/streams.lua")),
        ("submit.lua", include_str!("lua/submit.lua")),
    ];

    /// Field names and statuses the Rust code declares.
    fn declared() -> Vec<&'static str> {
        let mut names = vec![
            run_field::DAG,
            run_field::SPEC,
            run_field::STATUS,
            run_field::PARAMS,
            run_field::CREATED,
            run_field::STARTED,
            run_field::FINISHED,
            run_field::VERSION,
            run_field::STEP_PREFIX,
            run_field::PRIORITY,
            run_field::QUEUE,
            run_field::DAG_LIMIT,
            run_field::REASON,
            run_field::DUE,
            run_field::DEDUP,
            run_field::DEDUP_WINDOW,
            run_field::TRIGGER,
            run_field::SLOT,
            run_field::HELD,
            run_field::HELD_PREFIX,
            run_field::HELD_STEP_PREFIX,
            run_field::HELD_STREAM_PREFIX,
            run_field::ENTRY_PREFIX,
            run_field::RETRY_TASK_PREFIX,
            run_field::RETRY_STATE_PREFIX,
            run_field::AUTO_RETRIES,
            run_field::RUN_RETRY_AT,
            run_field::RESOLVED,
            event_field::RUN,
            event_field::DAG,
            event_field::STEP,
            event_field::STATUS,
            event_field::ATTEMPT,
            event_field::AT,
            event_field::RUN_STATUS,
            event_field::PACKED,
            log_tail_field::TAIL,
            log_tail_field::SIZE,
            log_tail_field::ATTEMPT,
            stream_field::TASK,
            stream_field::REPORT,
            stream_field::ADMIT,
            stream_field::CHILDREN_DONE,
            fan_field::TOKEN,
            fan_field::EXPECTED,
            fan_field::DONE,
            fan_field::CHILD_PREFIX,
            fan_field::RESULT_PREFIX,
        ];
        names.extend(RunStatus::ALL.iter().map(|s| s.as_str()));
        names
    }

    /// Literals that are not field names: reply and flag codes (each script's header lists
    /// them: submit.lua's outcome letters and flags, admission's outcomes, `gone`,
    /// `reopen`, `conflict`, `set`/`clear` of pending_slot.lua, `none` of live_tail.lua),
    /// the Idempotency-Key record's fields (`#`, `~`, `B<n>`, `b<n>`, submit.lua's header), Lua
    /// and Redis type names, and stream ID syntax.
    const PROTOCOL: [&str; 29] = [
        "admitted", "waiting", "later", "conflict", "reopen", "gone", "set", "clear", "none", "a",
        "c", "d", "f", "k", "l", "p", "r", "x", "#", "~", "B", "b", "table", "hash", "*", "+", "-",
        ">", ":",
    ];

    /// The string literals of a Lua source, comments left out.
    fn literals(src: &str) -> Vec<String> {
        let b = src.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i..].starts_with(b"--") {
                i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            } else if b[i] == b'\'' || b[i] == b'"' {
                let quote = b[i];
                let mut j = i + 1;
                while b[j] != quote {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                out.push(src[i + 1..j].to_string());
                i = j + 1;
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn every_literal_of_the_scripts_is_declared_in_rust() {
        let declared = declared();
        let mut unknown = Vec::new();
        for (file, src) in SOURCES {
            for lit in literals(src) {
                let syntax = lit.trim().is_empty()
                    || lit.contains(' ')
                    || lit.parse::<i64>().is_ok()
                    || lit.bytes().all(|c| c.is_ascii_uppercase());
                if !syntax && !declared.contains(&lit.as_str()) && !PROTOCOL.contains(&lit.as_str())
                {
                    unknown.push(format!("{file}: '{lit}'"));
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "literals not declared in Rust: {unknown:?}"
        );
    }

    #[test]
    fn every_script_file_is_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/redis/lua");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the lua directory is readable")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".lua"))
            .collect();
        files.sort();
        let listed: Vec<&str> = SOURCES.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, listed, "add the new script to SOURCES");
    }

    #[test]
    fn the_lexer_skips_comments_and_reads_both_quotes() {
        let src = "-- 'no'\nlocal a = 'ver' .. \"x\\\"y\" -- 'nope'\nreturn 'e:'";
        assert_eq!(literals(src), ["ver", "x\\\"y", "e:"]);
    }
}
