//! Cron schedules end to end, with two coordinator replicas: each slot fires once, overlap
//! policies, catch-up after downtime, and next fire times in the DAG listing. Schedules use the
//! 6-field form with seconds so the tests finish in seconds.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Cluster, Options};
use serde_json::Value;

fn two_coordinators() -> Options {
    Options {
        coordinators: 2,
        ..Options::default()
    }
}

/// The runs of a DAG, oldest first.
async fn runs_of(c: &Cluster, dag: &str) -> Vec<Value> {
    let mut runs = c
        .get_json(&format!("/api/v1/runs?dag={dag}&limit=1000"))
        .await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    runs.reverse();
    runs
}

fn now_ms() -> u64 {
    dagrid_shared::model::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_fire_each_slot_once() {
    let c = Cluster::start_with(
        &[(
            "tick.yaml",
            "name: tick\nschedule: '*/2 * * * * *'\noverlapPolicy: all\nsteps:\n  - name: a\n    command: \"true\"\n",
        )],
        two_coordinators(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let runs = runs_of(&c, "tick").await;
    let slots: Vec<u64> = runs
        .iter()
        .map(|r| {
            r["schedule_slot_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("no slot: {r}"))
        })
        .collect();
    let distinct: BTreeSet<u64> = slots.iter().copied().collect();
    eprintln!(
        "two coordinators, schedule */2 s over 7.5 s: {} runs for {} distinct slots: {:?}",
        runs.len(),
        distinct.len(),
        slots
    );
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"));
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    assert!(slots.len() >= 3, "too few slots fired: {slots:?}");
    let sorted: Vec<u64> = distinct.into_iter().collect();
    for w in sorted.windows(2) {
        assert_eq!(w[1] - w[0], 2_000, "a slot was missed: {sorted:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_skip_fires_nothing_while_the_previous_run_is_active() {
    let c = Cluster::start_with(
        &[(
            "long.yaml",
            "name: long\nschedule: '* * * * * *'\nsteps:\n  - name: a\n    command: sleep 2.5\n",
        )],
        two_coordinators(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let runs = runs_of(&c, "long").await;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for r in &runs {
        let run = c.wait(r["id"].as_str().unwrap()).await;
        spans.push((
            run["created_ms"].as_u64().unwrap(),
            run["finished_ms"].as_u64().unwrap(),
        ));
    }
    eprintln!(
        "overlapPolicy skip, every 1 s, 2.5 s step, 6.5 s: {} runs {spans:?}",
        runs.len()
    );
    assert!((1..=3).contains(&runs.len()), "{spans:?}");
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "scheduled runs overlapped: {spans:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_slots_fire_only_within_the_catchup_window() {
    let c = Cluster::start(&[]).await;
    // Both DAGs last fired 20 s ago, as if every coordinator had been down since.
    let ago = now_ms() - 20_000;
    let mut conn = c.redis.conn().await.expect("conn");
    redis::cmd("HSET")
        .arg(c.redis.keys().schedule_state())
        .arg("caught")
        .arg(ago)
        .arg("missed")
        .arg(ago)
        .query_async::<()>(&mut *conn)
        .await
        .expect("HSET");
    drop(conn);
    let registered = now_ms();
    for yaml in [
        "name: caught\nschedule: '*/5 * * * * *'\ncatchupWindow: 1m\noverlapPolicy: all\nsteps:\n  - name: a\n    command: \"true\"\n",
        "name: missed\nschedule: '*/5 * * * * *'\noverlapPolicy: all\nsteps:\n  - name: a\n    command: \"true\"\n",
    ] {
        let resp = c
            .http
            .post(c.url("/api/v1/dags"))
            .body(yaml)
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let slots = |runs: Vec<Value>| -> Vec<u64> {
        runs.iter()
            .filter_map(|r| r["schedule_slot_ms"].as_u64())
            .collect()
    };
    let caught = slots(runs_of(&c, "caught").await);
    let missed = slots(runs_of(&c, "missed").await);
    eprintln!("after 20 s down: with catchupWindow fired {caught:?}; without fired {missed:?}");
    let old = |s: &&u64| **s + 5_000 < registered;
    assert!(caught.iter().filter(old).count() >= 3, "{caught:?}");
    assert_eq!(missed.iter().filter(old).count(), 0, "{missed:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dag_listing_shows_next_fire_times() {
    let c = Cluster::start(&[(
        "daily.yaml",
        "name: daily\nschedule: 'CRON_TZ=Asia/Tokyo 0 9 * * *'\nsteps:\n  - name: a\n    command: \"true\"\n",
    )])
    .await;
    let dags = c.get_json("/api/v1/dags").await;
    let daily = dags["dags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "daily")
        .cloned()
        .unwrap_or_else(|| panic!("{dags}"));
    let next: Vec<u64> = daily["next_fire_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(next.len(), 3, "{daily}");
    // 09:00 in Tokyo is 00:00 UTC, every day.
    for t in &next {
        assert_eq!(t % 86_400_000, 0, "{daily}");
    }
    assert!(
        next[0] > now_ms() && next[1] - next[0] == 86_400_000,
        "{daily}"
    );
    c.stop().await;
}
