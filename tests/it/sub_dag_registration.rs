//! Issue 18, registration of sub-DAGs: a multi-document file registers its DAG and each local
//! DAG (`<DAG>.<local>`) as DAGs of their own, from `--dags` and through `POST /api/v1/dags`
//! (whose reply lists them), and a file whose DAG is on a cycle of static calls is refused
//! with 422 naming the cycle, registering nothing. A call to a DAG not registered yet is fine.

use crate::common;

use common::Cluster;
use serde_json::Value;

/// A file of `--dags`: its DAG calls a local DAG, which calls one of another file.
const MAIN: &str = "name: main\nsteps:\n  - name: a\n    call: child\n---\nname: child\nsteps:\n  - name: b\n    call: leaf\n";

/// Calls `later`, registered after it (file order): registration order does not matter.
const EARLY: &str = "name: early\nsteps:\n  - name: a\n    call: later\n";
const LATER: &str = "name: later\nsteps:\n  - name: a\n    command: echo later\n";

/// `POST /api/v1/dags` with `yaml`: (status, JSON body).
async fn post(c: &Cluster, yaml: &str) -> (u16, Value) {
    let r = c
        .http
        .post(c.url("/api/v1/dags"))
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .expect("POST /api/v1/dags");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn status_of_dag(c: &Cluster, name: &str) -> u16 {
    let r = c
        .http
        .get(c.url(&format!("/api/v1/dags/{name}")))
        .send()
        .await
        .expect("GET /api/v1/dags/{name}");
    r.status().as_u16()
}

/// The 422 detail of a refused registration: (field, message).
fn detail(body: &Value) -> (String, String) {
    let text = body.to_string();
    let d = &body["error"]["details"][0];
    let field = d["field"].as_str().unwrap_or_else(|| panic!("{text}"));
    (
        field.to_owned(),
        d["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locals_are_registered_as_dags_and_call_cycles_are_refused() {
    let c = Cluster::start(&[
        ("early.yaml", EARLY),
        ("later.yaml", LATER),
        ("main.yaml", MAIN),
    ])
    .await;
    // --dags: the file's DAG and its local DAG, and `early` before `later`.
    for name in ["main", "main.child", "early", "later"] {
        assert_eq!(status_of_dag(&c, name).await, 200, "{name}");
    }
    assert_eq!(status_of_dag(&c, "child").await, 404);

    // The API's reply lists the locals registered with the DAG.
    let (status, body) = post(
        &c,
        "name: fan\nsteps:\n  - {name: a, call: one, parallel: [x, y]}\n---\nname: one\nsteps:\n  - {name: b, command: echo}\n---\nname: two\nsteps:\n  - {name: c, command: echo}\n",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["locals"], serde_json::json!(["fan.one", "fan.two"]));
    assert_eq!(status_of_dag(&c, "fan.two").await, 200);
    assert_eq!(body["steps"][0]["call"], "fan.one", "{body}");
    // A DAG without locals has no `locals` field.
    let (status, body) = post(&c, LATER).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("locals").is_none(), "{body}");

    // `leaf` calls `main`: leaf → main → main.child → leaf.
    let (status, body) = post(
        &c,
        "name: leaf\nsteps:\n  - {name: x, command: echo}\n  - {name: y, call: main}\n",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_dag", "{body}");
    let (field, message) = detail(&body);
    assert_eq!(field, "steps[1].call");
    assert!(
        message.contains("calls form a cycle: leaf → main → main.child → leaf"),
        "{message}"
    );
    assert_eq!(status_of_dag(&c, "leaf").await, 404, "nothing registered");

    // A DAG calling itself.
    let (status, body) = post(&c, "name: selfish\nsteps:\n  - {name: x, call: selfish}\n").await;
    assert_eq!(status, 422, "{body}");
    assert!(detail(&body).1.contains("selfish → selfish"), "{body}");

    // A cycle inside one file, found at the local's call; nothing of the file registered.
    let (status, body) = post(
        &c,
        "name: ring\nsteps:\n  - {name: x, command: echo}\n---\nname: inner\nsteps:\n  - {name: y, call: inner2}\n---\nname: inner2\nsteps:\n  - {name: z, call: ring.inner}\n",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (field, message) = detail(&body);
    assert_eq!(field, "documents[1].steps[0].call");
    assert!(
        message.contains("ring.inner → ring.inner2 → ring.inner"),
        "{message}"
    );
    assert_eq!(status_of_dag(&c, "ring").await, 404);

    // A call through a variable is not followed; re-registering a caller is fine.
    let (status, body) = post(
        &c,
        "name: dynamic\nsteps:\n  - {name: x, call: '${WHICH}'}\n",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(&c, MAIN).await;
    assert_eq!(status, 201, "{body}");
}

/// A file's DAG calling its local DAG once and over a list runs end to end: the parse, the
/// registration and the run-time path together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_dag_called_from_its_file_runs() {
    const FILE: &str = "name: parent\ntype: graph\nsteps:\n  - name: one\n    call: child\n    params: \"WHO=solo\"\n    output: ONE\n  - name: fan\n    call: child\n    parallel: {items: [a, b, c], max_concurrent: 2}\n    params: \"WHO=${ITEM}\"\n    output: FAN\n---\nname: child\nparams: \"WHO=nobody\"\nsteps:\n  - name: hi\n    command: echo hi ${WHO}\n    output: GREETING\n";
    let c = Cluster::start(&[("parent.yaml", FILE)]).await;
    let id = c.submit("parent", serde_json::json!({})).await;
    let run = c.wait_final(&id, std::time::Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = |i: usize| -> Value {
        let text = run["steps"][i]["output"][1].as_str().unwrap_or_default();
        serde_json::from_str(text).unwrap_or_else(|_| panic!("step {i} output: {run}"))
    };
    let one = output(0);
    assert_eq!(one["name"], "parent.child", "{one}");
    assert_eq!(one["outputs"]["GREETING"], "hi solo", "{one}");
    let fan = output(1);
    assert_eq!(fan["summary"]["succeeded"], 3, "{fan}");
    assert_eq!(fan["outputs"][2]["GREETING"], "hi c", "{fan}");
}
