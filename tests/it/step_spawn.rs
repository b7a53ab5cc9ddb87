//! How the step supervisor starts a step's process (its own `posix_spawn`, with the
//! environment it inherits made once): the program searched in the `PATH` the step sets,
//! else in the worker's; a program that is missing or cannot be executed fails its step with
//! the error that names it; `dir` is the process's working directory; a step's variable
//! replaces the inherited one of the same name; and the process starts with no signal
//! blocked and SIGPIPE at its default action (Rust programs, the supervisor among them,
//! ignore it).

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::{output, step, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_start_with_the_path_dir_env_and_signals_they_ask_for() {
    let tools = tempfile::tempdir().expect("tempdir");
    let tool = tools.path().join("dagrid-test-tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran in \"$(pwd)\"\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plain = tools.path().join("plain");
    std::fs::write(&plain, "echo never\n").expect("write");
    let work = tempfile::tempdir().expect("tempdir");
    let (bin, dir) = (tools.path().display(), work.path().display());
    let dag = format!(
        r#"name: spawn
type: graph
dedup: none
steps:
  - name: own-path
    command: dagrid-test-tool
    env:
      - PATH: "{bin}:/usr/bin:/bin"
    output: OWN
  - name: worker-path
    command: dagrid-test-tool
  - name: missing
    command: dagrid-no-such-program
  - name: not-executable
    command: "{bin}/plain"
  - name: in-dir
    dir: "{dir}"
    command: pwd
    output: WHERE
  - name: env-over
    command: sh -c 'env | grep -c "^HOME="; printf "%s\n" "$HOME"'
    env:
      - HOME: /nowhere
    output: HOMES
  - name: signals
    command: grep -E "^Sig(Blk|Ign)" /proc/self/status
    output: SIGS
"#
    );
    let c = Cluster::start(&[("spawn.yaml", dag.as_str())]).await;
    let id = c.submit("spawn", serde_json::json!({})).await;
    let run = c.wait(&id).await;
    assert_eq!(run["status"], "failed", "{run}");

    assert_eq!(step(&run, "own-path")["status"], "succeeded", "{run}");
    assert!(
        output(&run, "own-path").starts_with("tool ran in /"),
        "{run}"
    );
    // Not in the worker's PATH: only the step's own finds it.
    assert_eq!(step(&run, "worker-path")["status"], "failed", "{run}");
    for (name, want) in [
        ("worker-path", "program \"dagrid-test-tool\" not found"),
        ("missing", "program \"dagrid-no-such-program\" not found"),
        ("not-executable", "cannot be executed (permission denied)"),
    ] {
        let s = step(&run, name);
        assert_eq!(s["status"], "failed", "{name}: {s}");
        let error = s["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(want),
            "{name}: {error:?} should say {want:?}"
        );
    }

    let canonical = work.path().canonicalize().expect("canonical");
    assert_eq!(
        output(&run, "in-dir"),
        canonical.display().to_string(),
        "{run}"
    );

    assert_eq!(output(&run, "env-over"), "1\n/nowhere", "{run}");
    let sigs = output(&run, "signals");
    let mask = |name: &str| {
        sigs.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {sigs:?}"))
    };
    assert_eq!(mask("SigBlk:"), 0, "{sigs}");
    // SIGPIPE is 13: bit 12.
    assert_eq!(mask("SigIgn:") & (1 << 12), 0, "SIGPIPE ignored: {sigs}");
    c.stop().await;
}
