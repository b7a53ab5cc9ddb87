//! Queues end to end: dedup races across two coordinators, dedup windows, delays, concurrency
//! limits on every path, priorities in admission, pause and resume, and big batches. Each test
//! has its own redis-server, coordinators and workers.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Cluster, Options};
use serde_json::{json, Value};

fn two_coordinators() -> Options {
    Options {
        coordinators: 2,
        ..Options::default()
    }
}

fn ms(run: &Value, field: &str) -> u64 {
    run[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_identical_submits_to_two_coordinators_create_one_run() {
    let c = Cluster::start_with(
        &[(
            "slow.yaml",
            "name: slow\nparams:\n  - FILE: x\nsteps:\n  - name: a\n    command: sleep 1\n",
        )],
        two_coordinators(),
    )
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (http, api) = (c.http.clone(), c.apis[i % 2].clone());
        calls.spawn(async move {
            let resp = http
                .post(format!("{api}/api/v1/runs"))
                .json(&json!({"dag": "slow", "params": {"FILE": "/data/a.txt"}}))
                .send()
                .await
                .expect("submit");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("json");
            (status, body)
        });
    }
    let mut ids = BTreeSet::new();
    let (mut created, mut deduplicated) = (0, 0);
    while let Some(r) = calls.join_next().await {
        let (status, body) = r.expect("task");
        ids.insert(body["id"].as_str().expect("id").to_string());
        match (status, body["deduplicated"].as_bool()) {
            (201, Some(false)) => created += 1,
            (200, Some(true)) => deduplicated += 1,
            other => panic!("unexpected reply {other:?}: {body}"),
        }
    }
    eprintln!(
        "100 concurrent identical submits to 2 coordinators: {created} created, \
         {deduplicated} deduplicated, {} distinct run id(s)",
        ids.len()
    );
    assert_eq!((created, deduplicated, ids.len()), (1, 99, 1));
    let id = ids.into_iter().next().unwrap_or_default();
    let listed = c.get_json("/api/v1/runs?dag=slow").await;
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1), "{listed}");
    // Once the run has finished, the same params run again (policy `active`).
    c.wait(&id).await;
    let again = c.submit("slow", json!({"FILE": "/data/a.txt"})).await;
    assert_ne!(again, id);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup_window_skips_work_done_and_reruns_failures() {
    let c = Cluster::start(&[(
        "files.yaml",
        "name: files\ndedup: {window: 1h}\nparams:\n  - FILE: x\n  - MODE: plain\nsteps:\n  - name: a\n    command: test ${FILE} != bad\n",
    )])
    .await;
    let batch = |files: &[&str]| json!({"runs": files.iter().map(|f| json!({"dag": "files", "params": {"FILE": f}})).collect::<Vec<_>>()});
    let (status, first) = c
        .post_to(0, "/api/v1/runs/batch", batch(&["a", "bad"]))
        .await;
    assert_eq!(status, 201, "{first}");
    let first_ids: Vec<String> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in &first_ids {
        c.wait(id).await;
    }
    // The rerun batch skips "a" (succeeded within the window) but reruns "bad" (failed).
    let (status, second) = c
        .post_to(0, "/api/v1/runs/batch", batch(&["a", "bad", "c"]))
        .await;
    assert_eq!(status, 201, "{second}");
    let runs = second["runs"].as_array().unwrap();
    assert_eq!(runs[0]["deduplicated"], true, "{second}");
    assert_eq!(runs[0]["id"], first_ids[0].as_str());
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[1]["deduplicated"], false, "{second}");
    assert_eq!(runs[2]["deduplicated"], false, "{second}");
    assert_eq!(
        (second["created"].as_u64(), second["deduplicated"].as_u64()),
        (Some(2), Some(1))
    );
    // Param order and defaults do not matter: the same bound params are the same key.
    let (status, body) = c
        .post_to(
            0,
            "/api/v1/runs",
            json!({"dag": "files", "params": {"MODE": "plain", "FILE": "a"}}),
        )
        .await;
    assert_eq!(
        (status, body["deduplicated"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    // A per-request override and an explicit dedup key.
    let (status, _) = c
        .post_to(
            0,
            "/api/v1/runs",
            json!({"dag": "files", "params": {"FILE": "a"}, "dedup": "none"}),
        )
        .await;
    assert_eq!(status, 201);
    let keyed = |file: &str| json!({"dag": "files", "params": {"FILE": file}, "dedup_key": "nightly-2026-11-21"});
    let (s1, b1) = c.post_to(0, "/api/v1/runs", keyed("k1")).await;
    let (s2, b2) = c.post_to(0, "/api/v1/runs", keyed("k2")).await;
    assert_eq!((s1, s2), (201, 200), "{b1} {b2}");
    assert_eq!(b1["id"], b2["id"]);
    // Bad policies are refused with the field named.
    let (status, body) = c
        .post_to(
            0,
            "/api/v1/runs",
            json!({"dag": "files", "dedup": "sometimes"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("dedup"),
        "{body}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_active_runs_queues_runs_with_a_reason_and_admits_by_priority() {
    let c = Cluster::start_with(
        &[(
            "one.yaml",
            "name: one\nmaxActiveRuns: 1\ndedup: none\nsteps:\n  - name: a\n    command: sleep 0.4\n",
        )],
        two_coordinators(),
    )
    .await;
    let submit = |i: usize, priority: &'static str| {
        let c = &c;
        async move {
            let (status, body) = c
                .post_to(
                    i,
                    "/api/v1/runs",
                    json!({"dag": "one", "priority": priority}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let first = submit(0, "normal").await;
    c.wait_for(&first, "started", |r| r["status"] == "running")
        .await;
    let low = submit(1, "low").await;
    let normal = submit(0, "normal").await;
    let high = submit(1, "high").await;
    let waiting = c.run(&low).await;
    assert_eq!(waiting["status"], "queued");
    let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("maxConcurrency of 1"), "{waiting}");
    let order = [&first, &high, &normal, &low];
    let mut starts = Vec::new();
    for id in order {
        let run = c.wait(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        starts.push((ms(&run, "started_ms"), ms(&run, "finished_ms")));
    }
    eprintln!("maxActiveRuns 1, start order by priority: first, high, normal, low = {starts:?}");
    for w in starts.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "runs overlapped or ran out of order: {starts:?}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_queue_limits_the_dags_sharing_it_on_every_path() {
    let dag = |name: &str| {
        format!("name: {name}\nqueue: shared\ndedup: none\nsteps:\n  - name: a\n    command: sleep 0.2\n")
    };
    let (x, y) = (dag("x"), dag("y"));
    let c = Cluster::start_with(
        &[("x.yaml", x.as_str()), ("y.yaml", y.as_str())],
        Options {
            coordinators: 2,
            queues: vec![("shared", 2)],
            ..Options::default()
        },
    )
    .await;
    // The batch path on one coordinator, the single-run path on the other.
    let items: Vec<Value> = (0..4)
        .map(|i| json!({"dag": if i % 2 == 0 { "x" } else { "y" }}))
        .collect();
    let (status, body) = c
        .post_to(0, "/api/v1/runs/batch", json!({"runs": items}))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut ids: Vec<String> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for dag in ["x", "y"] {
        let (status, body) = c.post_to(1, "/api/v1/runs", json!({"dag": dag})).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let view = c.get_json("/api/v1/queues").await;
    let shared = view["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "shared")
        .cloned()
        .unwrap_or_else(|| panic!("no queue shared in {view}"));
    assert_eq!(shared["max_concurrency"], 2, "{view}");
    assert!(shared["active"].as_u64().unwrap() <= 2, "{view}");
    let mut spans = Vec::new();
    for id in &ids {
        let run = c.wait(id).await;
        assert_eq!(run["status"], "succeeded");
        spans.push((ms(&run, "started_ms"), ms(&run, "finished_ms")));
    }
    // At no instant were more than 2 runs of the queue running.
    for &(start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, f)| *s <= start && start < *f)
            .count();
        assert!(overlapping <= 2, "more than 2 runs at once: {spans:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_looks_past_many_runs_held_back_by_their_dags_limit() {
    // Queue `shared` admits 2 runs; DAG `slow` admits 1 at a time. Twenty `slow` runs wait at
    // the head (more than one admission window of a 2-run queue), then one `quick` run: the
    // first admission pass looks past them and starts it beside the first `slow` run.
    let slow = "name: slow\nqueue: shared\nmaxActiveRuns: 1\ndedup: none\nsteps:\n  - name: a\n    command: sleep 0.3\n";
    let quick =
        "name: quick\nqueue: shared\ndedup: none\nsteps:\n  - name: a\n    command: \"true\"\n";
    let c = Cluster::start_with(
        &[("slow.yaml", slow), ("quick.yaml", quick)],
        Options {
            queues: vec![("shared", 2)],
            ..Options::default()
        },
    )
    .await;
    let items: Vec<Value> = (0..20).map(|_| json!({"dag": "slow"})).collect();
    let (status, body) = c.post("/api/v1/runs/batch", json!({"runs": items})).await;
    assert_eq!(status, 201, "{body}");
    let third_slow = body["runs"][2]["id"].as_str().unwrap().to_string();
    let quick_id = c.submit("quick", json!({})).await;
    let quick_run = c.wait(&quick_id).await;
    assert_eq!(quick_run["status"], "succeeded", "{quick_run}");
    let slow_run = c.wait(&third_slow).await;
    assert!(
        ms(&quick_run, "finished_ms") < ms(&slow_run, "started_ms"),
        "quick waited behind slow runs: {quick_run} {slow_run}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_active_steps_bounds_a_runs_parallel_steps() {
    let steps: String = (0..4)
        .map(|i| format!("  - name: s{i}\n    command: sleep 0.3\n"))
        .collect();
    let yaml = format!("name: wide\ntype: graph\nmaxActiveSteps: 2\nsteps:\n{steps}");
    let c = Cluster::start_with(
        &[("wide.yaml", yaml.as_str())],
        Options {
            workers: 2,
            concurrency: 4,
            ..Options::default()
        },
    )
    .await;
    let id = c.submit("wide", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let spans: Vec<(u64, u64)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (ms(s, "started_ms"), ms(s, "finished_ms")))
        .collect();
    for &(start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|(s, f)| *s <= start && start < *f)
            .count();
        assert!(at_once <= 2, "more than 2 steps at once: {spans:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_runs_wait_in_redis_and_start_when_due_even_if_their_coordinator_stops() {
    let c = Cluster::start_with(
        &[(
            "later.yaml",
            "name: later\ndedup: none\nsteps:\n  - name: a\n    command: \"true\"\n",
        )],
        two_coordinators(),
    )
    .await;
    let (status, body) = c
        .post_to(0, "/api/v1/runs", json!({"dag": "later", "delay": "2s"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let due = ms(&body, "due_ms");
    // The coordinator that took the submit goes away; the delayed run lives in Redis.
    c.stop_coordinator(0);
    let queued = c.get_json_from(1, &format!("/api/v1/runs/{id}")).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert!(
        queued["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("delayed until"),
        "{queued}"
    );
    let run = c.wait_on(1, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let started = ms(&run, "started_ms");
    eprintln!(
        "delayed run due at {due}, started {} ms after",
        started as i64 - due as i64
    );
    assert!(started >= due, "started before it was due: {run}");
    assert!(
        started < due + 1_500,
        "started more than 1.5 s after due: {run}"
    );
    // `at` in the past runs at once; `at` and `delay` together are refused.
    let (status, body) = c
        .post_to(
            1,
            "/api/v1/runs",
            json!({"dag": "later", "at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["reason"].is_null(), "{body}");
    let (status, body) = c
        .post_to(
            1,
            "/api/v1/runs",
            json!({"dag": "later", "delay": "1s", "at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = c
        .post_to(1, "/api/v1/runs", json!({"dag": "later", "delay": "soon"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("delay"),
        "{body}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_queue_admits_nothing_until_resumed() {
    let c = Cluster::start(&[(
        "p.yaml",
        "name: p\ndedup: none\nsteps:\n  - name: a\n    command: \"true\"\n",
    )])
    .await;
    let (status, body) = c.post_to(0, "/api/v1/queues/p/pause", json!({})).await;
    assert_eq!(
        (status, body["paused"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let id = c.submit("p", json!({})).await;
    let second = c.submit("p", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = c.run(&id).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(run["reason"], "queue p is paused", "{run}");
    let view = c.get_json("/api/v1/queues").await;
    let p = view["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "p")
        .cloned()
        .unwrap_or_else(|| panic!("no queue p in {view}"));
    assert_eq!(
        (p["paused"].as_bool(), p["waiting"].as_u64()),
        (Some(true), Some(2)),
        "{view}"
    );
    assert_eq!(p["waiting_by_priority"]["5"], 2, "{view}");
    assert!(p["oldest_wait_ms"].as_u64().is_some(), "{view}");
    assert_eq!(view["levels"].as_array().map(Vec::len), Some(10), "{view}");
    let (status, body) = c.post_to(0, "/api/v1/queues/p/resume", json!({})).await;
    assert_eq!(
        (status, body["paused"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    for id in [&id, &second] {
        assert_eq!(c.wait(id).await["status"], "succeeded");
    }
    let (status, _) = c.post_to(0, "/api/v1/queues/a%20b/pause", json!({})).await;
    assert_eq!(status, 422);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_request_accepts_ten_thousand_runs() {
    let c = Cluster::start_with(
        &[(
            "many.yaml",
            "name: many\nparams:\n  - N: 0\nsteps:\n  - name: a\n    command: \"true\"\n",
        )],
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let items: Vec<Value> = (0..10_000)
        .map(|i| json!({"dag": "many", "params": {"N": i.to_string()}}))
        .collect();
    let started = std::time::Instant::now();
    let (status, body) = c
        .post_to(0, "/api/v1/runs/batch", json!({"runs": items}))
        .await;
    let took = started.elapsed();
    assert_eq!(status, 201);
    assert_eq!(body["created"], 10_000);
    let ids: BTreeSet<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 10_000);
    eprintln!(
        "10,000 runs in one batch request: {:.2} s ({:.0} runs/s, debug build)",
        took.as_secs_f64(),
        10_000.0 / took.as_secs_f64()
    );
    let view = c.get_json("/api/v1/queues").await;
    let normal = view["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["priority"] == 5)
        .cloned()
        .unwrap_or_default();
    assert_eq!(normal["ready"], 10_000, "{view}");
    c.stop().await;
}

/// A batch of 2,600 items over several SUBMIT chunks (200 runs each, split where the DAG
/// changes) and four pipelines (200, 1,000, 1,000 and 400 runs, sent two at a time):
/// repeated params are deduplicated onto the first item that had them, in request order,
/// within a chunk, across chunks and across pipelines, and onto a run submitted before; the same request
/// sent again under its Idempotency-Key replays every item with the same ids and creates
/// nothing; the key with another body creates nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_over_several_chunks_dedups_in_order_and_replays_under_its_key() {
    let c = Cluster::start_with(
        &[
            (
                "d.yaml",
                "name: d\nparams:\n  - N: 0\nsteps:\n  - name: a\n    command: \"true\"\n",
            ),
            (
                "e.yaml",
                "name: e\nparams:\n  - N: 0\nsteps:\n  - name: a\n    command: \"true\"\n",
            ),
        ],
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let (status, before) = c
        .post_to(0, "/api/v1/runs", json!({"dag": "d", "params": {"N": "7"}}))
        .await;
    assert_eq!(status, 201, "{before}");
    let holder = before["id"].as_str().unwrap().to_string();
    // Items 0..2600: DAG e for items 300..310 (splits a chunk), N = i % 900 otherwise.
    let items: Vec<Value> = (0..2600)
        .map(|i| {
            let dag = if (300..310).contains(&i) { "e" } else { "d" };
            json!({"dag": dag, "params": {"N": (i % 900).to_string()}})
        })
        .collect();
    let post = |body: Value| {
        let (http, api) = (c.http.clone(), c.apis[0].clone());
        async move {
            let r = http
                .post(format!("{api}/api/v1/runs/batch"))
                .header("idempotency-key", "chunks-1")
                .json(&body)
                .send()
                .await
                .expect("batch");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = post(json!({ "runs": items })).await;
    assert_eq!(status, 201, "{body}");
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2600);
    let mut first_of: std::collections::BTreeMap<(String, u32), String> = Default::default();
    first_of.insert(("d".into(), 7), holder.clone());
    let mut created = 0;
    for (i, r) in runs.iter().enumerate() {
        let dag = if (300..310).contains(&i) { "e" } else { "d" };
        let key = (dag.to_string(), (i % 900) as u32);
        let id = r["id"].as_str().unwrap().to_string();
        match first_of.get(&key) {
            Some(first) => {
                assert_eq!(
                    &id, first,
                    "item {i} goes to the first run with its params: {r}"
                );
                assert_eq!(r["deduplicated"], true, "item {i}: {r}");
            }
            None => {
                assert_eq!(r["deduplicated"], false, "item {i}: {r}");
                first_of.insert(key, id);
                created += 1;
            }
        }
    }
    // d: 900 distinct N minus the one held before (N=7); e: 10 distinct N, but items
    // 300..310 have N 300..310, so their d-twins are created elsewhere and both exist.
    assert_eq!(created, 899 + 10);
    assert_eq!(body["created"], created, "{}", body["created"]);
    let (status, again) = post(json!({ "runs": items })).await;
    assert_eq!(status, 201, "{again}");
    let ids = |b: &Value| -> Vec<String> {
        b["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&again), ids(&body), "the retry replays every item");
    let (status, other) = post(json!({ "runs": items[..650] })).await;
    assert_eq!(status, 422, "{other}");
    let list = c.get_json("/api/v1/runs?limit=1000").await;
    let listed = list["runs"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, created + 1, "nothing else was created");
    c.stop().await;
}

/// An active run holds its dedup key as a field of the holders hash (12 bytes); a run queued
/// by the previous version holds the field of the 24 hex digits, and one of still earlier
/// versions a key of its own (`{ns}:dd:<digest>`, no TTL): new submits find them there too,
/// and the run releases them when it ends. A field a release of an earlier version left
/// behind (its run finished, or is gone) is released by the coordinators' sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_dedup_holders_of_every_form_deduplicate_and_are_released() {
    fn sweep_often(c: &mut dagrid_coordinator::Config) {
        c.retention_interval = Duration::from_millis(200);
    }
    let c = Cluster::start_with(
        &[(
            "hold.yaml",
            "name: hold\nsteps:\n  - name: a\n    command: sleep 2\n",
        )],
        Options {
            configure: Some(sweep_often),
            ..Options::default()
        },
    )
    .await;
    let k = c.redis.keys();
    let key = k.dedup("hold", "k:same");
    let field = dagrid_shared::redis::keys::Keys::dedup_field(&key).expect("hex");
    assert_eq!(field.len(), 12);
    let digest = key[key.len() - 24..].to_string();
    async fn submit(c: &Cluster) -> (u16, Value) {
        let body = json!({"dag": "hold", "dedup_key": "same"});
        c.post_to(0, "/api/v1/runs", body).await
    }
    // The holders field of the key, and the key of its own.
    async fn read(c: &Cluster, key: &str, field: &[u8]) -> (Option<String>, Option<String>) {
        let mut conn = c.redis.conn().await.expect("redis");
        redis::pipe()
            .hget(c.redis.keys().dedup_holders(), field)
            .get(key)
            .query_async(&mut *conn)
            .await
            .expect("reads")
    }
    let digest_field = digest.as_bytes();

    let (status, first) = submit(&c).await;
    assert_eq!(status, 201, "{first}");
    let first = first["id"].as_str().expect("id").to_string();
    assert_eq!(read(&c, &key, &field).await, (Some(first.clone()), None));
    // As the previous version would have left it (the field of the hex digits), then as still
    // earlier ones (the key of its own, named by its digest, then by the DAG and the key):
    // found by a submit, released when the run ends.
    let legacy = k.dedup_legacy("hold", "k:same");
    for form in ["hex field", "digest key", "legacy key"] {
        let (status, run) = if form == "hex field" {
            (201, first.clone())
        } else {
            let (status, run) = submit(&c).await;
            (status, run["id"].as_str().expect("id").to_string())
        };
        assert_eq!(status, 201, "{form}: {run}");
        let mut conn = c.redis.conn().await.expect("redis");
        let mut moved = redis::pipe();
        moved.atomic().hdel(k.dedup_holders(), &field);
        match form {
            "hex field" => moved.hset(k.dedup_holders(), digest_field, &run),
            "digest key" => moved.set(&key, &run),
            _ => moved.set(&legacy, &run).hset(k.run(&run), "dedup", &legacy),
        };
        moved.query_async::<()>(&mut *conn).await.expect("moved");
        drop(conn);
        let (status, again) = submit(&c).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["id"], run.as_str(), "{again}");
        assert_eq!(again["deduplicated"], true, "{again}");
        assert_eq!(c.wait(&run).await["status"], "succeeded");
        assert_eq!(
            read(&c, &key, &field).await,
            (None, None),
            "released when the run ended"
        );
        assert_eq!(read(&c, &key, digest_field).await.0, None);
        assert_eq!(read(&c, &legacy, digest_field).await.1, None, "{form}");
    }

    let (status, second) = submit(&c).await;
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().expect("id").to_string();
    assert_ne!(second, first);
    assert_eq!(read(&c, &key, &field).await, (Some(second.clone()), None));
    assert_eq!(c.wait(&second).await["status"], "succeeded");
    assert_eq!(read(&c, &key, &field).await, (None, None));
    // A retry makes the run active again: it takes its key again, and releases it at its end.
    let (status, body) = c
        .post_to(
            0,
            &format!("/api/v1/runs/{second}/retry"),
            json!({"step": "a"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(read(&c, &key, &field).await, (Some(second.clone()), None));
    assert_eq!(c.wait(&second).await["status"], "succeeded");
    assert_eq!(read(&c, &key, &field).await, (None, None));

    // Fields left behind by a release of an earlier version: of a finished run, and of a run
    // that is gone; the sweep releases both, and leaves an active run's.
    let (status, third) = submit(&c).await;
    assert_eq!(status, 201, "{third}");
    let third = third["id"].as_str().expect("id").to_string();
    let (left, gone) = (b"left-by-an-old-release".as_slice(), b"gone-run".as_slice());
    {
        let mut conn = c.redis.conn().await.expect("redis");
        redis::pipe()
            .hset(k.dedup_holders(), left, &first)
            .hset(k.dedup_holders(), gone, "no-such-run")
            .query_async::<()>(&mut *conn)
            .await
            .expect("left");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (read(&c, &key, left).await.0, read(&c, &key, gone).await.0);
        if (a.is_none() && b.is_none()) || std::time::Instant::now() > deadline {
            assert_eq!((a, b), (None, None), "swept");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read(&c, &key, &field).await.0, Some(third.clone()));
    assert_eq!(c.wait(&third).await["status"], "succeeded");
    c.stop().await;
}
