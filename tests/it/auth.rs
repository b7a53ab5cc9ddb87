//! Access control: API tokens (none, wrong, missing, read-only, admin, the public probes and
//! `/metrics`), the CLI's `--token` / `DAGRID_TOKEN`, the loopback rule without tokens, and
//! Redis credentials (a `requirepass` password, an ACL user, a wrong password) and TLS
//! (`rediss://` with a private CA, and `rediss://` to a server without TLS), each against a
//! real redis-server and, for the CLI and Redis URLs, the real `dagrid` binary.

use crate::common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::{cluster, dagrid_bin, Cluster, Options};
use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";
const HELLO: &str = "steps:\n  - name: greet\n    command: echo hello\n";

fn with_tokens(config: &mut dagrid_coordinator::Config) {
    config.auth.tokens = vec![
        dagrid_coordinator::ApiToken::new("ops", dagrid_coordinator::Role::Admin, ADMIN),
        dagrid_coordinator::ApiToken::new("dash", dagrid_coordinator::Role::Read, READ),
    ];
}

fn with_private_metrics_and_public_health(config: &mut dagrid_coordinator::Config) {
    with_tokens(config);
    config.auth.public_metrics = false;
    config.auth.public_health = true;
}

/// Sends `method path` with an optional bearer token; the status, `WWW-Authenticate` and body.
async fn call(
    c: &Cluster,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut req = c.http.request(method.parse().expect("method"), c.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    (status, challenge, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tokens_guard_every_route_but_the_probes() {
    let c = Cluster::start_with(
        &[("hello.yaml", HELLO)],
        Options {
            configure: Some(with_tokens),
            ..Default::default()
        },
    )
    .await;

    // Missing and wrong tokens: 401 with the challenge and how to pass one.
    let (status, challenge, body) = call(&c, "GET", "/api/v1/runs", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.expect("WWW-Authenticate").starts_with("Bearer"));
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("--token") && message.contains("DAGRID_TOKEN"),
        "{message}"
    );
    let (status, challenge, body) =
        call(&c, "GET", "/api/v1/runs", Some("not-a-known-token"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.is_some());
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = call(&c, "GET", "/api/v1/no-such-route", None, None).await;
    assert_eq!(status, 401, "unknown paths need a token too");

    // The probes are public.
    for path in ["/health/live", "/health/ready"] {
        let (status, _, body) = call(&c, "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // /metrics is public by default; /health (the detailed view) is not.
    let (status, _, _) = call(&c, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "/metrics is public");
    let (status, _, _) = call(&c, "GET", "/health", None, None).await;
    assert_eq!(status, 401, "/health needs a token");

    // A read token reads (also through the read-only POST) but may not write.
    let (status, _, body) = call(&c, "GET", "/api/v1/runs", Some(READ), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &c,
        "POST",
        "/api/v1/runs/lookup",
        Some(READ),
        Some(json!({"ids": ["x"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let submit = json!({"dag": "hello"});
    let (status, _, body) =
        call(&c, "POST", "/api/v1/runs", Some(READ), Some(submit.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("role admin"),
        "{body}"
    );

    // An admin token writes; the run goes through.
    let (status, _, body) = call(&c, "POST", "/api/v1/runs", Some(ADMIN), Some(submit)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, run) =
            call(&c, "GET", &format!("/api/v1/runs/{id}"), Some(READ), None).await;
        assert_eq!(status, 200, "{run}");
        if run["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "run never succeeded: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
}

/// The web UI's files are served without a token (they hold no data); `GET /api/v1/session`
/// tells the UI the role of the token it was given, and needs a token like every API route.
#[tokio::test]
async fn the_ui_files_are_public_and_the_session_names_the_role() {
    let c = Cluster::start_with(
        &[],
        Options {
            workers: 0,
            configure: Some(with_tokens),
            ..Default::default()
        },
    )
    .await;
    for path in [
        "/",
        "/ui/app.js",
        "/ui/vendor/dagre.esm.js",
        "/ui/style.css",
    ] {
        let resp = c.http.get(c.url(path)).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let resp = c
        .http
        .get(c.url("/ui/secrets.txt"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);

    let (status, _, body) = call(&c, "GET", "/api/v1/session", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = call(&c, "GET", "/api/v1/session", Some(READ), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"role": "read", "name": "dash", "auth": true}));
    let (_, _, body) = call(&c, "GET", "/api/v1/session", Some(ADMIN), None).await;
    assert_eq!(body, json!({"role": "admin", "name": "ops", "auth": true}));
}

#[tokio::test]
async fn metrics_can_need_a_token_and_health_can_be_public() {
    let c = Cluster::start_with(
        &[],
        Options {
            workers: 0,
            configure: Some(with_private_metrics_and_public_health),
            ..Default::default()
        },
    )
    .await;
    let (status, _, _) = call(&c, "GET", "/metrics", None, None).await;
    assert_eq!(status, 401, "public_metrics: false");
    let (status, _, _) = call(&c, "GET", "/metrics", Some(READ), None).await;
    assert_eq!(status, 200, "a read token scrapes");
    let (status, _, _) = call(&c, "GET", "/health", None, None).await;
    assert_eq!(status, 200, "public_health: true");
    c.stop().await;
}

#[tokio::test]
async fn without_tokens_the_api_is_open_and_on_loopback_only() {
    let c = Cluster::start_with(
        &[],
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let (status, _, body) = call(&c, "GET", "/api/v1/runs", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &c,
        "POST",
        "/api/v1/runs",
        None,
        Some(json!({"dag": "nope"})),
    )
    .await;
    assert_ne!(status, 401, "{body}");
    let (_, _, body) = call(&c, "GET", "/api/v1/session", None, None).await;
    assert_eq!(body, json!({"role": "admin", "name": null, "auth": false}));

    // In process: a listener on every address is refused without the flag…
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let e = dagrid_coordinator::serve(
        listener,
        c.redis.clone(),
        dagrid_coordinator::Config::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("an open API on 0.0.0.0 is refused");
    let e = e.to_string();
    assert!(
        e.contains("--insecure-no-auth") && e.contains("--token-file") && e.contains("0.0.0.0"),
        "{e}"
    );

    // …and taken with it.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = dagrid_coordinator::Config::default();
    config.auth.insecure_no_auth = true;
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(dagrid_coordinator::serve(
        listener,
        c.redis.clone(),
        config,
        stop.clone(),
    ));
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(c.http.get(&url).send().await, Ok(r) if r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "the open coordinator never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    served.await.expect("join").expect("serves");

    // The binary says the same and exits non-zero before touching Redis.
    let out = run_cli(
        &[
            "coordinator",
            "--listen",
            "0.0.0.0:0",
            "--redis-url",
            &c.redis_server.url(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    c.stop().await;
}

#[test]
fn weak_token_settings_are_refused_at_startup_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("read short\n", "has 5 characters; use at least 16"),
        (
            "writer 0123456789abcdef0\n",
            "role \"writer\" is not a role",
        ),
        (
            "admin 0123456789abcdef0 a\nread 0123456789abcdef0 b\n",
            "the same value as token \"a\"",
        ),
        (
            "admin 0123456789abcdef0 a\nread 0123456789abcdef1 a\n",
            "name \"a\" is given to two tokens",
        ),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("tokens");
        std::fs::write(&file, text).expect("write");
        let out = run_cli(
            &[
                "coordinator",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--token-file") && stderr.contains(expected),
            "{text:?}: {stderr}"
        );
        assert!(
            !stderr.contains("0123456789abcdef"),
            "no token in errors: {stderr}"
        );
    }
    let config = dir.path().join("dagrid.yaml");
    std::fs::write(
        &config,
        "auth:\n  tokens:\n    - {name: ci, role: admin, token_env: DAGRID_TEST_UNSET_TOKEN}\n    - {name: x, role: read, token: ''}\n",
    )
    .expect("write");
    let out = run_cli(
        &[
            "coordinator",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "auth.tokens[0].token_env: the environment variable DAGRID_TEST_UNSET_TOKEN is not set"
        ) && stderr.contains("auth.tokens[1].token: the token is empty"),
        "{stderr}"
    );
}

/// Runs `dagrid <args>` to its end with `env` and without any inherited `DAGRID_*` token.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(dagrid_bin())
        .args(args)
        .env_remove("DAGRID_TOKEN")
        .env_remove("DAGRID_ADMIN_TOKEN")
        .env_remove("DAGRID_READ_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run dagrid")
}

/// `dagrid coordinator --print-config` prints the settings it would run with, defaults filled
/// in, and exits without Redis; the Redis password and the token values never show.
#[test]
fn print_config_shows_the_effective_settings_without_secrets() {
    let token = "pr1nt-c0nfig-t0ken-0123456789";
    let out = run_cli(
        &[
            "coordinator",
            "--print-config",
            "--redis-url",
            "redis://app:hunter2-secret@127.0.0.1:1/3",
            "--queue",
            "batch=2",
            "--lease-timeout",
            "15s",
        ],
        &[("DAGRID_ADMIN_TOKEN", token)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: serde_yaml::Value = serde_yaml::from_str(&stdout).expect("YAML");
    assert_eq!(
        v["redis"]["url"].as_str(),
        Some("redis://app:***@127.0.0.1:1/3")
    );
    assert_eq!(v["coordinator"]["queues"]["batch"].as_u64(), Some(2));
    assert_eq!(v["coordinator"]["lease_timeout"].as_str(), Some("15s"));
    assert_eq!(v["coordinator"]["timezone"].as_str(), Some("UTC"));
    let t = &v["coordinator"]["auth"]["tokens"][0];
    assert_eq!(t["role"].as_str(), Some("admin"), "{stdout}");
    assert_eq!(t["token"].as_str(), Some("***"), "{stdout}");
    for secret in ["hunter2-secret", token] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked: {stdout}{stderr}"
        );
    }
    // A bad setting fails as it would at startup.
    let out = run_cli(
        &["coordinator", "--print-config", "--lease-timeout", "0s"],
        &[],
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_cli_sends_its_token_from_the_flag_or_the_environment() {
    let c = cluster::Cluster::start(
        &[("hello.yaml", HELLO.to_string())],
        cluster::Settings {
            workers: 1,
            api_token: Some(ADMIN.to_string()),
            ..Default::default()
        },
    )
    .await;
    let api = c.api.clone();
    let out = run_cli(
        &[
            "submit", "hello", "--wait", "--server", &api, "--token", ADMIN,
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let out = run_cli(&["runs", "--server", &api], &[("DAGRID_TOKEN", ADMIN)]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));

    let out = run_cli(&["runs", "--server", &api], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("no token was sent: pass --token"),
        "{stderr}"
    );
    let out = run_cli(
        &["submit", "hello", "--server", &api],
        &[("DAGRID_TOKEN", "wrong-token-0123456789")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("was refused"),
        "{stderr}"
    );
    drop(c);
}

/// Starts `dagrid start-all` on `redis_url` with `env`, its DAGs in `dir`; returns the process
/// and the API's URL once it is ready.
async fn start_all(dir: &Path, redis_url: &str, env: &[(&str, &str)]) -> (Proc, String) {
    let dags = dir.join("dags");
    std::fs::create_dir_all(&dags).expect("mkdir");
    std::fs::write(dags.join("hello.yaml"), HELLO).expect("write DAG");
    let ready = dir.join("ready");
    let args: Vec<String> = [
        "start-all",
        "--redis-url",
        redis_url,
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--dags",
        dags.to_str().unwrap(),
        "--log-dir",
        dir.join("logs").to_str().unwrap(),
        "--ready-file",
        ready.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn_with_env("start-all", &args, env, dir.join("start-all.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(api) = std::fs::read_to_string(&ready) {
            if !api.is_empty() {
                return (p, api);
            }
        }
        if let Some(status) = p.exit_status() {
            panic!("start-all exited ({status}):\n{}", p.tail(30));
        }
        assert!(
            Instant::now() < deadline,
            "start-all never got ready:\n{}",
            p.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `hello` through the API at `api` with the CLI and checks it succeeds.
fn run_hello(api: &str) {
    let out = run_cli(&["submit", "hello", "--wait", "--server", api], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `dagrid start-all` on `redis_url` and expects it to fail; returns its output.
async fn start_all_fails(dir: &Path, redis_url: &str, env: &[(&str, &str)]) -> String {
    let args: Vec<String> = [
        "start-all",
        "--redis-url",
        redis_url,
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn_with_env("start-all", &args, env, dir.join("failing.log"));
    let status = p
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("start-all exits");
    assert!(!status.success());
    std::fs::read_to_string(dir.join("failing.log")).expect("log")
}

#[tokio::test]
async fn redis_passwords_and_acl_users_work_and_a_wrong_one_fails_redacted() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        password: Some("default-secret-pw".into()),
        extra_args: [
            "--user",
            "dagrid",
            "on",
            ">acl-secret-pw",
            "~{dagrid}*",
            "&*",
            "+@all",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    })
    .await
    .expect("redis-server with a password starts");
    let port = server.port();
    let dir = tempfile::tempdir().expect("tempdir");

    // The default user's password.
    let (p, api) = start_all(&dir.path().join("a"), &server.url(), &[]).await;
    run_hello(&api);
    let log = std::fs::read_to_string(&p.log).expect("log");
    assert!(!log.contains("default-secret-pw"), "{log}");
    assert!(log.contains("redis://:***@127.0.0.1"), "{log}");
    drop(p);

    // An ACL user.
    let acl = format!("redis://dagrid:acl-secret-pw@127.0.0.1:{port}");
    let (p, api) = start_all(&dir.path().join("b"), &acl, &[]).await;
    run_hello(&api);
    let log = std::fs::read_to_string(&p.log).expect("log");
    assert!(!log.contains("acl-secret-pw"), "{log}");
    drop(p);

    // A wrong password: a clear error, without the password.
    let wrong = format!("redis://dagrid:wrong-secret-pw@127.0.0.1:{port}");
    let log = start_all_fails(dir.path(), &wrong, &[]).await;
    assert!(!log.contains("wrong-secret-pw"), "{log}");
    assert!(
        log.contains("redis://dagrid:***@127.0.0.1") && log.to_lowercase().contains("auth"),
        "{log}"
    );

    // A worker with the wrong password stops at once with the error, instead of retrying.
    let redis = dagrid_shared::Redis::open(&wrong, "dagrid").expect("the URL parses");
    let worker = dagrid_worker::run(
        redis,
        dagrid_worker::Config {
            log_dir: dir.path().join("worker-logs"),
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    );
    let err = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker gives up instead of retrying")
        .expect_err("a wrong password is an error");
    assert!(matches!(err, dagrid_worker::Error::Redis(_)), "{err}");
    assert!(!err.to_string().contains("wrong-secret-pw"), "{err}");
}

/// Makes a CA and a server certificate for 127.0.0.1 with `openssl`; false when openssl is
/// missing.
fn make_certs(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| {
                assert!(o.status.success(), "openssl {args:?}: {o:?}");
            })
            .is_ok()
    };
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dagrid test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ])
}

#[tokio::test]
async fn rediss_runs_a_dag_over_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    if !make_certs(certs.path()) {
        eprintln!("openssl is not installed: the TLS test is skipped");
        return;
    }
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let path = |f: &str| certs.path().join(f).display().to_string();
    let server = EmbeddedRedis::start(EmbeddedOptions {
        extra_args: vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        ..Default::default()
    })
    .await
    .expect("redis-server with TLS starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = path("ca.pem");
    let trust = [("SSL_CERT_FILE", ca.as_str())];

    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (p, api) = start_all(&dir.path().join("tls"), &url, &trust).await;
    run_hello(&api);
    drop(p);

    // Without the CA the server is not trusted.
    let log = start_all_fails(dir.path(), &url, &[("SSL_CERT_FILE", "/dev/null")]).await;
    assert!(
        log.contains("no TLS connection") && log.contains("SSL_CERT_FILE"),
        "{log}"
    );

    // rediss:// to the plain port: a clear failure, not a hang.
    let plain = format!("rediss://127.0.0.1:{}", server.port());
    let log = start_all_fails(dir.path(), &plain, &trust).await;
    assert!(
        log.contains("no TLS connection") && log.contains("--tls-port"),
        "{log}"
    );
}
