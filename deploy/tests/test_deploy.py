"""The systemd units (systemd-analyze verify), the Dockerfile (hadolint), the install script
(shellcheck) and the settings they use, checked against the real `dagrid` CLI. Run by
scripts/deploy-check.sh."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
DAGRID = os.environ.get("DAGRID_BIN", str(ROOT / "target" / "debug" / "dagrid"))
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or "hadolint"
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or "shellcheck"
UNIT_VERB = {
    "dagrid.service": "start-all",
    "dagrid-coordinator.service": "coordinator",
    "dagrid-worker@.service": "worker",
}


def unit(name):
    """A unit file as {section: [(key, value)]}, comments dropped, keys in order."""
    sections, current = {}, None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(u, section, key):
    return [v for k, v in u[section] if k == key]


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|min|m)?", text)
    assert m, text
    n = int(m[1])
    return {"ms": n / 1000, None: n, "s": n, "m": 60 * n, "min": 60 * n}[m[2]]


def env_file():
    """The settings of deploy/systemd/dagrid.env, commented-out examples included."""
    settings = {}
    for line in (UNITS / "dagrid.env").read_text().splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            settings[m[1]] = m[2]
    return settings


def test_units_pass_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at the binary just built.
    for name in UNIT_VERB:
        text = (UNITS / name).read_text().replace("/usr/local/bin/dagrid", DAGRID)
        (tmp_path / name).write_text(text)
    targets = [str(tmp_path / n) for n in ("dagrid.service", "dagrid-coordinator.service", "dagrid-worker@1.service")]
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *targets],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # Unknown keys and bad values are only warnings: any output fails.
    assert run.returncode == 0 and not run.stdout.strip() and not run.stderr.strip(), run.stdout + run.stderr


@pytest.mark.parametrize("name", UNIT_VERB)
def test_units_drain_on_stop_and_are_hardened(name):
    u = unit(name)
    s = dict(u["Service"])
    assert s["Restart"] == "on-failure"
    assert s["User"] == "dagrid"
    assert values(u, "Service", "EnvironmentFile")[0] == "/etc/dagrid/dagrid.env"
    assert s["ExecStart"] == f"/usr/local/bin/dagrid {UNIT_VERB[name]}"
    assert s["KillSignal"] == "SIGTERM"
    # SIGTERM to dagrid alone, so it drains its steps instead of the steps being signalled.
    assert s["KillMode"] == "mixed"
    env = env_file()
    drain = seconds(env["DAGRID_SHUTDOWN_GRACE"]) + 5  # + Dagu's default maxCleanUpTimeSec
    if UNIT_VERB[name] == "coordinator":
        drain = 30  # requests in flight
    assert seconds(s["TimeoutStopSec"]) > drain
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")]:
        assert s[key] == value
    assert "/var/log/dagrid" in s["ReadWritePaths"]
    text = (UNITS / name).read_text()
    assert "#MemoryMax=" in text and "#CPUQuota=" in text
    assert u["Install"] == [("WantedBy", "multi-user.target")]
    if UNIT_VERB[name] != "coordinator":  # runs steps: a writable $HOME and working directory
        assert s["StateDirectory"] == "dagrid" and s["WorkingDirectory"] == "/var/lib/dagrid"
    if UNIT_VERB[name] == "worker":
        assert s["InaccessiblePaths"] == "-/etc/dagrid/tokens", "steps must not read the API tokens"


@pytest.mark.parametrize("verb", ["coordinator", "worker", "start-all"])
def test_env_file_names_real_settings(verb):
    """Every DAGRID_* name of dagrid.env is an environment variable of some service verb, and
    the values given parse with the real CLI."""
    helps = {
        v: subprocess.run([DAGRID, v, "--help"], capture_output=True, text=True, check=True).stdout
        for v in ("coordinator", "worker", "start-all")
    }
    env_only = {"DAGRID_ADMIN_TOKEN", "DAGRID_READ_TOKEN"}  # read by the coordinator, no flag
    for name in env_file():
        if name.startswith("DAGRID_") and name not in env_only:
            assert any(f"[env: {name}=" in h or f"[env: {name}]" in h for h in helps.values()), name
    settings = {k: v for k, v in env_file().items() if k.startswith("DAGRID_")}
    run = subprocess.run(
        [DAGRID, verb, "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **settings}
    )
    assert run.returncode == 0, run.stderr


def test_dockerfile_passes_hadolint():
    run = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_runs_as_non_root_with_a_curl_free_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "multi-stage"
    assert re.search(r"^USER 10001:10001$", text, re.M), "the uid the helm chart runs as"
    hc = re.search(r"^HEALTHCHECK .*CMD \[\"dagrid\", \"health\"", text, re.M)
    assert hc and "curl" not in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/dagrid"]' in text


def test_both_binaries_ship_and_the_worker_binary_takes_the_worker_settings():
    docker = (ROOT / "Dockerfile").read_text()
    assert "--bin dagrid-worker" in docker and "/usr/local/bin/dagrid-worker" in docker
    assert "/usr/local/bin/dagrid-worker" in (UNITS / "install.sh").read_text()
    small = Path(DAGRID).with_name("dagrid-worker")
    settings = {k: v for k, v in env_file().items() if k.startswith("DAGRID_")}
    run = subprocess.run(
        [str(small), "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **settings}
    )
    assert run.returncode == 0, run.stderr
    ours = subprocess.run([DAGRID, "worker", "--help"], capture_output=True, text=True).stdout
    # dagrid's global --token (ignored by services) is hidden there; --version is its own.
    flags = lambda text: sorted(set(re.findall(r"--[a-z][a-z-]+", text)) - {"--token", "--version"})
    assert flags(run.stdout) == flags(ours)


def test_install_script_passes_shellcheck():
    run = subprocess.run([SHELLCHECK, str(UNITS / "install.sh")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_health_verb_exists():
    run = subprocess.run([DAGRID, "health", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "/health/ready" in run.stdout, run.stderr
