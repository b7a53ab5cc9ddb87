//! A batch submit cut by `kill -9` of the coordinator mid-request, retried with the same
//! `Idempotency-Key` once a coordinator is back: every item gets exactly one run, however many
//! the cut request had created (issue 12, point 6). Real processes, as in `tests/it/chaos.rs`.

use crate::common;

use std::time::Duration;

use common::cluster::{Cluster, Settings};
use serde_json::{json, Value};

const PLAIN: &str =
    "name: plain\nparams: N=0\ndedup: none\nsteps:\n  - name: a\n    command: 'true'\n";

/// How many runs exist (summed over the runs-by-status indexes).
async fn run_count(c: &Cluster) -> usize {
    let redis = dagrid_shared::Redis::open(&c.redis.url(), &c.ns).expect("redis url");
    let mut conn = redis.conn().await.expect("redis");
    let mut pipe = redis::pipe();
    for st in dagrid_shared::model::RunStatus::ALL {
        pipe.cmd("ZCARD")
            .arg(redis.keys().runs_by_status(st.as_str()));
    }
    let counts: Vec<usize> = pipe.query_async(&mut *conn).await.expect("ZCARD");
    counts.into_iter().sum()
}

/// POSTs the batch under `key`: the status and body, or `None` when the connection dropped.
async fn post(
    http: reqwest::Client,
    url: String,
    key: String,
    body: Value,
) -> Option<(u16, Value)> {
    let r = http
        .post(url)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_cut_by_kill_9_is_completed_by_a_retry_with_the_same_key() {
    let settings = Settings {
        workers: 0,
        ..Default::default()
    };
    let mut c = Cluster::start(&[("plain.yaml", PLAIN.to_string())], settings).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let url = format!("{}/api/v1/runs/batch", c.api);
    let mut expected = 0;
    for (round, kill_after_ms) in [(0, 300u64), (1, 900)] {
        let n = 5_000;
        let runs: Vec<Value> = (0..n)
            .map(|i| json!({"dag": "plain", "params": {"N": format!("{round}-{i}")}}))
            .collect();
        let body = json!({ "runs": runs });
        let key = format!("cut-{round}");
        let before = run_count(&c).await;
        let cut = tokio::spawn(post(http.clone(), url.clone(), key.clone(), body.clone()));
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        c.kill_coordinator();
        let first = cut.await.expect("task");
        let created_by_cut = run_count(&c).await - before;
        eprintln!(
            "kill -9 after {kill_after_ms} ms: the cut request created {created_by_cut} of {n} \
             runs (answer: {:?})",
            first.as_ref().map(|(s, _)| *s)
        );
        c.start_coordinator().await;
        let (status, answer) = post(http.clone(), url.clone(), key, body)
            .await
            .expect("the retry is answered");
        assert_eq!(status, 201, "{answer}");
        let ids: std::collections::BTreeSet<&str> = answer["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(ids.len(), n, "one distinct run per item");
        expected += n;
        assert_eq!(run_count(&c).await, expected, "no item got two runs");
    }
}
