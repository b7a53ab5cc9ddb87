//! End to end: a real redis-server, a coordinator and two workers per test, talking over real
//! connections; assertions on the final state of runs and files.

use crate::common;

use common::{output, step, Cluster};
use serde_json::{json, Value};

const DIAMOND: &str = r#"
name: diamond
steps:
  - name: start
    command: echo begin
    output: START
  - name: left
    depends: [start]
    script: |
      sleep 1
      echo "left-${START}"
    output: LEFT
  - name: right
    depends: start
    script: |
      sleep 1
      echo "right-${START}"
    output: RIGHT
  - name: join
    depends: [left, right]
    command: echo ${LEFT}+${RIGHT}
    output: JOINED
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_branches_overlap_and_outputs_flow() {
    let c = Cluster::start(&[("diamond.yaml", DIAMOND)]).await;
    let id = c.submit("diamond", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    for s in ["start", "left", "right", "join"] {
        assert_eq!(step(&run, s)["status"], "succeeded", "{s}: {run}");
    }
    let (l, r) = (step(&run, "left"), step(&run, "right"));
    let (ls, le) = (
        l["started_ms"].as_u64().unwrap(),
        l["finished_ms"].as_u64().unwrap(),
    );
    let (rs, re) = (
        r["started_ms"].as_u64().unwrap(),
        r["finished_ms"].as_u64().unwrap(),
    );
    assert!(
        ls < re && rs < le,
        "branches must overlap: left {ls}..{le}, right {rs}..{re}"
    );
    assert_eq!(output(&run, "left"), "left-begin");
    assert_eq!(output(&run, "join"), "left-begin+right-begin");
    // Each step carries its `depends` (the web UI draws the run's graph from them).
    assert_eq!(step(&run, "start")["depends"], json!([]), "{run}");
    assert_eq!(
        step(&run, "join")["depends"],
        json!(["left", "right"]),
        "{run}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_skips_its_dependants_and_fails_the_run() {
    let dag = r#"
name: breaks
steps:
  - name: ok
    command: "true"
  - name: boom
    depends: [ok]
    script: |
      echo "about to fail" >&2
      exit 3
  - name: after
    depends: [boom]
    command: echo never
  - name: later
    depends: [after]
    command: echo never
  - name: independent
    command: echo fine
"#;
    let c = Cluster::start(&[("breaks.yaml", dag)]).await;
    let id = c.submit("breaks", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "ok")["status"], "succeeded");
    assert_eq!(step(&run, "boom")["status"], "failed");
    assert_eq!(step(&run, "boom")["exit_code"], 3);
    assert_eq!(step(&run, "after")["status"], "skipped");
    assert_eq!(step(&run, "later")["status"], "skipped");
    assert_eq!(
        step(&run, "after")["attempt"],
        0,
        "a skipped step never ran"
    );
    assert_eq!(step(&run, "independent")["status"], "succeeded");
    let log = c
        .http
        .get(c.url(&format!("/api/v1/runs/{id}/steps/boom/log")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("about to fail"), "log: {log}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_and_env_reach_the_process() {
    let dag = r#"
name: envcheck
params:
  - GREETING: hello
  - TARGET: nobody
env:
  - BASE: /srv
  - DATA: ${BASE}/data-${TARGET}
steps:
  - name: show
    env:
      - LOCAL: step-level
    script: echo "$GREETING|$TARGET|$DATA|$LOCAL|$DAG_NAME|$DAG_RUN_STEP_NAME|$1|$2|${DAG_RUN_ID}"
    output: SEEN
  - name: direct
    command: printf %s ${TARGET}
    output: DIRECT
"#;
    let c = Cluster::start(&[("envcheck.yaml", dag)]).await;
    let marker = c.log_dir.path().join("pwned");
    let hostile = format!(
        "x; touch {} $(touch {})",
        marker.display(),
        marker.display()
    );
    let id = c.submit("envcheck", json!({ "TARGET": hostile })).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let seen = output(&run, "show");
    let parts: Vec<&str> = seen.split('|').collect();
    assert_eq!(parts[0], "hello", "default param: {seen}");
    assert_eq!(parts[1], hostile, "given param, verbatim: {seen}");
    assert_eq!(
        parts[2],
        format!("/srv/data-{hostile}"),
        "DAG env sees params and earlier env: {seen}"
    );
    assert_eq!(parts[3], "step-level");
    assert_eq!(parts[4], "envcheck");
    assert_eq!(parts[5], "show");
    assert_eq!(parts[6], "hello", "$1 is the first param: {seen}");
    assert_eq!(parts[7], hostile, "$2 is the second param: {seen}");
    assert_eq!(parts[8], id);
    assert_eq!(
        output(&run, "direct"),
        hostile,
        "one argument, never split or run"
    );
    assert!(!marker.exists(), "a param value was run as shell code");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    let c = Cluster::start(&[("hello.yaml", "name: hello\nparams:\n  - NAME: world\nsteps:\n  - name: greet\n    command: echo hi ${NAME}\n")]).await;
    let post_dag = |body: &'static str| {
        c.http
            .post(c.url("/api/v1/dags"))
            .header("content-type", "application/yaml")
            .body(body)
            .send()
    };
    // A DAG that depends on a step that does not exist.
    let r = post_dag("name: bad\nsteps:\n  - name: a\n    command: echo\n    depends: [nope]\n")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_dag");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    // Not YAML at all.
    let r = post_dag("steps: [unclosed").await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // A good one registers.
    let r = post_dag("name: good\nsteps:\n  - name: a\n    command: echo ok\n")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let submit = |body: Value| c.http.post(c.url("/api/v1/runs")).json(&body).send();
    let r = submit(json!({ "dag": "nosuch" })).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = submit(json!({ "dag": "hello", "params": { "NAMEE": "x" } }))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("NAMEE"),
        "{v}"
    );
    let r = submit(json!({ "dagg": "hello" })).await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("dagg"),
        "{v}"
    );
    let r = c
        .http
        .post(c.url("/api/v1/runs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .http
        .post(c.url("/api/v1/runs/batch"))
        .json(&json!({ "runs": [{ "dag": "hello" }, { "dag": "hello", "params": { "X": "1" } }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("runs[1].params.X"),
        "{v}"
    );
    let r = c
        .http
        .get(c.url("/api/v1/runs?status=done"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing of the rejected batch was created: only runs that were accepted exist.
    let v: Value = c.get_json("/api/v1/runs").await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 0, "{v}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_200_files_succeeds_with_correct_results() {
    let manpage = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/manpage-stats.yaml"
    ))
    .unwrap();
    let c = Cluster::start(&[("manpage-stats.yaml", &manpage)]).await;
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for i in 0..200 {
        let lines = i % 7 + 1;
        let text: String = (0..lines)
            .map(|l| format!("line {l} of file {i} word\n"))
            .collect();
        let path = input.path().join(format!("page{i:03}.txt"));
        std::fs::write(&path, &text).unwrap();
        let st = std::process::Command::new("gzip")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        expected.push((format!("{}.gz", path.display()), lines, lines * 6));
    }
    // The directory walk takes regular files and symlinks to them, not subdirectories.
    std::fs::create_dir(input.path().join("sub")).unwrap();
    let link = input.path().join("zlink.gz");
    std::os::unix::fs::symlink(input.path().join("page000.txt.gz"), &link).unwrap();
    expected.push((link.display().to_string(), 1, 6));
    // Small requests, so that several are in flight at once (answered in file order).
    let result = tokio::process::Command::new(common::dagrid_bin())
        .args([
            "batch",
            "manpage-stats",
            "--server",
            &c.api,
            "--chunk",
            "7",
            "--files",
        ])
        .arg(input.path())
        .arg("--param")
        .arg(format!("OUT_DIR={}", out.path().display()))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "batch failed: {stdout} {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("201 runs, 201 succeeded, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("files/s"), "{stdout}");
    for (file, lines, words) in expected {
        let name = std::path::Path::new(&file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let tsv = std::fs::read_to_string(out.path().join(format!("{name}.tsv"))).unwrap();
        let cols: Vec<&str> = tsv.trim_end().split('\t').collect();
        let sha = std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap();
        let sha = String::from_utf8_lossy(&sha.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            cols,
            vec![
                file.as_str(),
                sha.as_str(),
                &lines.to_string(),
                &words.to_string()
            ]
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_and_filtered_newest_first() {
    let c = Cluster::start(&[
        (
            "ok.yaml",
            "name: ok\ndedup: none\nparams:\n  - WHO: nobody\nsteps:\n  - name: a\n    command: \"true\"\n",
        ),
        (
            "ko.yaml",
            "name: ko\nsteps:\n  - name: a\n    command: \"false\"\n",
        ),
    ])
    .await;
    let mut ok_ids = Vec::new();
    for i in 0..3 {
        ok_ids.push(c.submit("ok", json!({ "WHO": format!("user{i}") })).await);
    }
    let ko = c.submit("ko", json!({})).await;
    for id in ok_ids.iter().chain([&ko]) {
        c.wait(id).await;
    }
    let get = |q: &str| {
        let url = c.url(&format!("/api/v1/runs?{q}"));
        let http = c.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = get("").await;
    assert_eq!(ids(&all).len(), 4);
    assert_eq!(ids(&all)[0], ko, "newest first");
    assert_eq!(ids(&get("status=failed").await), vec![ko.clone()]);
    let mut expect_ok = ok_ids.clone();
    expect_ok.reverse();
    assert_eq!(ids(&get("dag=ok&status=succeeded").await), expect_ok);
    let page1 = get("dag=ok&limit=2").await;
    assert_eq!(ids(&page1), expect_ok[..2].to_vec());
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let page2 = get(&format!("dag=ok&limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page2), expect_ok[2..].to_vec());
    assert!(page2["next_cursor"].is_null());
    // Params, trigger and time: runs of one DAG told apart by their params.
    assert_eq!(
        ids(&get("params=WHO%3Duser1").await),
        vec![ok_ids[1].clone()]
    );
    assert_eq!(ids(&get("dag=ok&params=user").await), expect_ok);
    assert_eq!(ids(&get("params=nobody").await), Vec::<String>::new());
    assert_eq!(ids(&get("trigger=api").await).len(), 4);
    assert_eq!(ids(&get("trigger=batch").await), Vec::<String>::new());
    let created = all["runs"][0]["created_ms"].as_u64().unwrap();
    // A run's creation time is its id's: its hash holds none of its own.
    assert_eq!(dagrid_shared::run_id::created_ms(&ko), Some(created));
    let mut conn = c.redis.conn().await.unwrap();
    let stored: Option<String> = redis::cmd("HGET")
        .arg(c.redis.keys().run(&ko))
        .arg("created")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(stored, None);
    drop(conn);
    let since = get(&format!("since_ms={created}")).await;
    assert!(ids(&since).contains(&ko), "{since}");
    for r in since["runs"].as_array().unwrap() {
        assert!(r["created_ms"].as_u64().unwrap() >= created, "{since}");
    }
    assert_eq!(
        ids(&get(&format!("since_ms={}", created + 1)).await).len(),
        0
    );
    assert_eq!(ids(&get("since_ms=0").await).len(), 4);
    let too_late = get("since_ms=9223372036854775808").await;
    assert_eq!(too_late["error"]["code"], "bad_query", "{too_late}");
    let workers: Value = c.get_json("/api/v1/workers").await;
    assert_eq!(workers["workers"].as_array().unwrap().len(), 2, "{workers}");
    c.stop().await;
}
