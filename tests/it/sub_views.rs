//! The views of sub-DAG runs (issue 18): `GET /api/v1/runs/{id}` shows a child run's
//! `parent` and a parent's `children`, and `GET /api/v1/runs?parent=<id>` lists the child runs
//! in creation order, a page at a time. Each test has its own redis-server, coordinator and
//! workers.

use crate::common;

use common::Cluster;
use serde_json::{json, Value};

const ITEM: &str = "name: item\nparams:\n  - X: x\nsteps:\n  - name: show\n    command: echo $X\n";
const OTHER: &str = "name: other\nsteps:\n  - name: s\n    command: \"true\"\n";

/// Links `children` to step `step` of run `parent` as the orchestrator does when it creates
/// them: the child's `pr`/`ps`/`pd` fields and the parent's children index (score 0). With
/// `gone`, only the index: runs that retention has deleted since.
async fn link(c: &Cluster, parent: &str, step: &str, children: &[String], gone: bool) {
    let keys = c.redis.keys();
    let mut conn = c.redis.conn().await.expect("redis");
    let mut pipe = redis::pipe();
    for id in children {
        if !gone {
            pipe.cmd("HSET")
                .arg(keys.run(id))
                .arg("pr")
                .arg(parent)
                .arg("ps")
                .arg(step)
                .arg("pd")
                .arg(1)
                .ignore();
        }
        pipe.cmd("ZADD")
            .arg(keys.children(parent))
            .arg(0)
            .arg(id)
            .ignore();
    }
    pipe.query_async::<()>(&mut *conn).await.expect("link");
}

fn ids(list: &Value) -> Vec<String> {
    list["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("runs in {list}"))
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// A parent's view names its children (total and ids in creation order), a child's names its
/// parent, `?parent=` pages through the children oldest first with the other filters applied,
/// and an unknown parent lists nothing (as an unknown `dag` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_views_link_parents_and_children() {
    let c = Cluster::start(&[("item.yaml", ITEM), ("other.yaml", OTHER)]).await;
    let parent = c.submit("other", json!({})).await;
    // Ended before the stranger below, a run of the same DAG and params, is submitted: while
    // it is queued or running, that submit would be deduplicated onto it.
    c.wait(&parent).await;
    let mut children = Vec::new();
    for x in ["a", "b", "c"] {
        children.push(c.submit("item", json!({ "X": x })).await);
    }
    let stranger = c.submit("other", json!({})).await;
    children.push(stranger.clone());
    for id in children.iter().chain([&parent]) {
        c.wait(id).await;
    }
    // Run ids are UUIDv7, so creation order is id order (the index's order).
    let mut sorted = children.clone();
    sorted.sort();
    assert_eq!(sorted, children, "ids in creation order");
    link(&c, &parent, "fan", &children, false).await;

    let p = c.run(&parent).await;
    assert_eq!(p["parent"], Value::Null, "{p}");
    assert_eq!(p["children"], json!({ "total": 4, "ids": children }), "{p}");
    let child = c.run(&children[1]).await;
    assert_eq!(
        child["parent"],
        json!({ "run": parent, "step": "fan", "depth": 1 }),
        "{child}"
    );
    assert!(
        child.get("children").is_none(),
        "no children: left out: {child}"
    );

    // All of them, oldest first, with their parent link.
    let all = c.get_json(&format!("/api/v1/runs?parent={parent}")).await;
    assert_eq!(ids(&all), children, "{all}");
    assert_eq!(all["next_cursor"], Value::Null, "{all}");
    assert_eq!(all["runs"][0]["parent"]["run"], json!(parent), "{all}");
    assert!(all["runs"][0].get("steps").is_none(), "no steps in a list");

    // Pages of 3 then 1, the cursor continuing after the last one shown.
    let first = c
        .get_json(&format!("/api/v1/runs?parent={parent}&limit=3"))
        .await;
    assert_eq!(ids(&first), children[..3], "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    assert_eq!(cursor, children[2]);
    let second = c
        .get_json(&format!(
            "/api/v1/runs?parent={parent}&limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&second), children[3..], "{second}");
    assert_eq!(second["next_cursor"], Value::Null, "{second}");

    // The other filters apply to the children.
    let by_dag = c
        .get_json(&format!("/api/v1/runs?parent={parent}&dag=other"))
        .await;
    assert_eq!(ids(&by_dag), std::slice::from_ref(&stranger), "{by_dag}");
    let by_params = c
        .get_json(&format!(
            "/api/v1/runs?parent={parent}&params=X%3Db&limit=1"
        ))
        .await;
    assert_eq!(ids(&by_params), children[1..2], "{by_params}");
    let failed = c
        .get_json(&format!("/api/v1/runs?parent={parent}&status=failed"))
        .await;
    assert_eq!(ids(&failed), Vec::<String>::new(), "{failed}");

    // A run without children, and an id that is no run's: an empty list, as for `dag`.
    for nobody in [stranger.as_str(), "no-such-run"] {
        let none = c.get_json(&format!("/api/v1/runs?parent={nobody}")).await;
        assert_eq!(none, json!({ "runs": [], "next_cursor": null }), "{nobody}");
    }
    assert_eq!(c.get_status("/api/v1/runs?parent=no-such-run").await, 200);
    // The CLI: `dagrid status` of each side, `dagrid runs --parent`.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::dagrid_bin())
            .args(args)
            .args(["--server", &c.api])
            .output()
            .expect("run dagrid");
        assert!(out.status.success(), "dagrid {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = cli(&["status", &children[0]]);
    assert!(
        text.contains(&format!("\nparent   {parent} (step fan)\n")),
        "{text}"
    );
    let text = cli(&["status", &parent]);
    assert!(text.contains("\nchildren 4 "), "{text}");
    let text = cli(&["runs", "--parent", &parent, "--limit", "3"]);
    let listed: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(listed, children[..3], "{text}");

    // Without `parent`, the children are listed with every run, newest first.
    let everything = c.get_json("/api/v1/runs?dag=item").await;
    let mut newest_first = children[..3].to_vec();
    newest_first.reverse();
    assert_eq!(ids(&everything), newest_first, "{everything}");
}

/// A run with more than 100 children shows the first 100 ids and the total; `?parent=` skips
/// ids whose run is gone (deleted by retention) and keeps walking.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_fan_shows_the_first_hundred_and_the_total() {
    let c = Cluster::start(&[("item.yaml", ITEM), ("other.yaml", OTHER)]).await;
    let parent = c.submit("other", json!({})).await;
    c.wait(&parent).await;
    let gone: Vec<String> = (0..150).map(|i| format!("0-gone-{i:04}")).collect();
    link(&c, &parent, "fan", &gone, true).await;
    let last = c.submit("item", json!({ "X": "last" })).await;
    c.wait(&last).await;
    link(&c, &parent, "fan", std::slice::from_ref(&last), false).await;

    let p = c.run(&parent).await;
    assert_eq!(p["children"]["total"], 151, "{p}");
    let shown: Vec<&str> = p["children"]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    assert_eq!(shown.len(), 100);
    assert_eq!(
        shown,
        gone[..100].iter().map(String::as_str).collect::<Vec<_>>()
    );

    let list = c
        .get_json(&format!("/api/v1/runs?parent={parent}&limit=10"))
        .await;
    assert_eq!(ids(&list), [last], "{list}");
    assert_eq!(list["next_cursor"], Value::Null, "{list}");
}

/// A parallel call step over three items, end to end on real workers: the parent's view
/// counts the children (run and step), each child names its parent, `?parent=` lists them
/// with trigger `call`, and `dagrid status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_call_links_its_child_runs_both_ways() {
    const FAN: &str = "name: fan\nsteps:\n  - name: fan\n    call: child\n    parallel: {items: [a, b, c], max_concurrent: 2}\n    params: \"WHO=${ITEM}\"\n    output: OUT\n  - name: after\n    depends: [fan]\n    command: echo done\n";
    const CHILD: &str =
        "name: child\nparams: \"WHO=nobody\"\nsteps:\n  - name: hi\n    command: echo hi ${WHO}\n";
    let c = Cluster::start(&[("child.yaml", CHILD), ("fan.yaml", FAN)]).await;
    let id = c.submit("fan", json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["parent"], Value::Null, "{run}");
    assert_eq!(run["children"]["total"], 3, "{run}");
    assert_eq!(common::step(&run, "fan")["children"], 3, "{run}");
    assert!(
        common::step(&run, "after").get("children").is_none(),
        "0 is left out: {run}"
    );

    let list = c.get_json(&format!("/api/v1/runs?parent={id}")).await;
    assert_eq!(
        ids(&list),
        run["children"]["ids"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>())
            .unwrap_or_default(),
        "{list}"
    );
    let mut items = Vec::new();
    for child in list["runs"].as_array().expect("runs") {
        assert_eq!(child["trigger"], "call", "{child}");
        assert_eq!(child["dag"], "child", "{child}");
        assert_eq!(child["status"], "succeeded", "{child}");
        assert_eq!(
            child["parent"],
            json!({ "run": id, "step": "fan", "depth": 1 }),
            "{child}"
        );
        let full = c.run(child["id"].as_str().expect("id")).await;
        assert_eq!(full["parent"], child["parent"], "{full}");
        items.push(
            full["params"][0]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    items.sort();
    assert_eq!(items, ["a", "b", "c"]);
    let calls = c.get_json("/api/v1/runs?trigger=call").await;
    assert_eq!(ids(&calls).len(), 3, "{calls}");

    let out = std::process::Command::new(common::dagrid_bin())
        .args(["status", &id, "--server", &c.api])
        .output()
        .expect("run dagrid status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nchildren 3 "), "{text}");
    let fan = text
        .lines()
        .find(|l| l.starts_with("fan "))
        .unwrap_or_else(|| panic!("no fan step in {text}"));
    assert!(fan.contains("  3 child runs; OUT="), "{fan}");
}

/// A call inside a child run: the grandchild names the child run as its parent, at depth 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grandchild_names_its_parent_at_depth_two() {
    const TOP: &str = "name: top\nsteps:\n  - name: m\n    call: mid\n";
    const MID: &str = "name: mid\nsteps:\n  - name: l\n    call: leaf\n";
    const LEAF: &str = "name: leaf\nsteps:\n  - name: s\n    command: echo leaf\n";
    let c = Cluster::start(&[("top.yaml", TOP), ("mid.yaml", MID), ("leaf.yaml", LEAF)]).await;
    let top = c.submit("top", json!({})).await;
    let run = c.wait(&top).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let mid = run["children"]["ids"][0]
        .as_str()
        .expect("a child")
        .to_string();
    let mid_run = c.run(&mid).await;
    assert_eq!(
        mid_run["parent"],
        json!({ "run": top, "step": "m", "depth": 1 }),
        "{mid_run}"
    );
    assert_eq!(mid_run["children"]["total"], 1, "{mid_run}");
    let leaf = c.get_json(&format!("/api/v1/runs?parent={mid}")).await;
    assert_eq!(
        ids(&leaf),
        [mid_run["children"]["ids"][0].as_str().unwrap_or_default()],
        "{leaf}"
    );
    assert_eq!(
        leaf["runs"][0]["parent"],
        json!({ "run": mid, "step": "l", "depth": 2 }),
        "{leaf}"
    );
    // The top run lists its own child only.
    let top_kids = c.get_json(&format!("/api/v1/runs?parent={top}")).await;
    assert_eq!(ids(&top_kids), [mid], "{top_kids}");
}
