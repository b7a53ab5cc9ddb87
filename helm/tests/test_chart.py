"""The helm chart, checked with Helm's own engine (helm-python-sdk: Helm's Go SDK as a library)
and the Kubernetes schemas (kubernetes-validate): lint and render for several value sets,
validate every manifest, and assert on the rendered objects. Run by scripts/deploy-check.sh.
"""

import os
import shutil
import re
import subprocess
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dagrid"
DAGRID = os.environ.get("DAGRID_BIN", str(ROOT / "target" / "debug" / "dagrid"))
# The newest Kubernetes release whose schemas kubernetes-validate ships.
KUBE_VERSION = kubernetes_validate.utils.latest_version()
# Custom resources, validated by their operators' CRDs (not shipped by kubernetes-validate).
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
RELEASE, NAMESPACE = "prod", "jobs"
FULL = f"{RELEASE}-dagrid"

VALUE_SETS = {
    "default": {},
    "bundled-redis": {"redis": {"bundled": {"enabled": True}}},
    "autoscaling": {
        "worker": {
            "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
            "concurrency": 8,
            "shutdownGraceSeconds": 120,
            "stepCleanupSeconds": 30,
            "labels": {"gpu": True, "region": "eu"},
        },
        "coordinator": {"queues": {"batch": 2, "etl.nightly": 1}},
    },
    "keda-and-monitoring": {
        "worker": {"keda": {"enabled": True}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    },
    "existing-secrets": {
        "auth": {"existingSecret": "ops-dagrid-tokens", "adminTokenKey": "admin", "readTokenKey": "read"},
        "redis": {
            "external": {
                "existingSecret": "ops-redis",
                "existingSecretKey": "dagrid-url",
                "caSecret": "ops-redis-ca",
            }
        },
        "dags": {"existingConfigMap": "ops-dags"},
        "serviceAccount": {"create": False, "name": "dagrid-runner"},
        "coordinator": {"replicas": 3},
        "worker": {"terminationGracePeriodSeconds": 300},
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, values):
    """Every rendered object of the chart (NOTES.txt aside), in file order."""
    out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return objects


def find(objects, kind, name):
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}")


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def walk(node):
    """Every dict inside a rendered object."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lints_renders_and_validates_against_kubernetes_schemas(chart, name):
    values = VALUE_SETS[name]
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == [] and report["messages"] == [], report
    objects = render(chart, values)
    assert objects
    for o in objects:
        for node in walk(o):
            empty = [k for k, v in node.items() if v is None]
            assert not empty, f"{o['kind']} {o['metadata']['name']}: {empty} rendered empty"
        if (o["apiVersion"], o["kind"]) in CRDS:
            assert o["metadata"]["name"] and o["spec"], o
            continue
        kubernetes_validate.validate(o, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes_ports_and_grace_periods(chart, name):
    values = VALUE_SETS[name]
    merged = chart.merge_values(values)
    objects = render(chart, values)

    coord = find(objects, "Deployment", f"{FULL}-coordinator")
    c = container(coord)
    port = merged["coordinator"]["port"]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert f"--listen=0.0.0.0:{port}" in c["args"]
    assert coord["spec"]["replicas"] == merged["coordinator"]["replicas"]
    svc = find(objects, "Service", FULL)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"

    worker = find(objects, "Deployment", f"{FULL}-worker")
    w = container(worker)
    wv = merged["worker"]
    hp = wv["healthPort"]
    assert f"--health-addr=0.0.0.0:{hp}" in w["args"]
    assert {"name": "health", "containerPort": hp, "protocol": "TCP"} in w["ports"]
    assert w["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
    assert w["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "health"}
    assert f"--concurrency={wv['concurrency']}" in w["args"]
    grace = wv["shutdownGraceSeconds"]
    assert f"--shutdown-grace={grace}s" in w["args"]
    tgps = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert tgps > grace + wv["stepCleanupSeconds"], "SIGKILL would cut the drain short"
    if wv.get("terminationGracePeriodSeconds") is not None:  # null: coalesced away
        assert tgps == wv["terminationGracePeriodSeconds"]
    scaled = wv["autoscaling"]["enabled"] or wv["keda"]["enabled"]
    assert ("replicas" in worker["spec"]) != scaled


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secrets_arrive_through_secret_key_refs(chart, name):
    values = VALUE_SETS[name]
    merged = chart.merge_values(values)
    objects = render(chart, values)
    secret_like = re.compile(r"TOKEN|PASSWORD|REDIS_URL")
    for o in objects:
        for node in walk(o):
            if "name" in node and ("value" in node or "valueFrom" in node) and secret_like.search(node["name"]):
                assert "value" not in node, f"{o['kind']} {o['metadata']['name']}: {node['name']} in plain text"
                assert "secretKeyRef" in node["valueFrom"], node
    c = container(find(objects, "Deployment", f"{FULL}-coordinator"))
    env = {e["name"]: e for e in c["env"]}
    auth = merged["auth"]
    auth_secret = auth["existingSecret"] or f"{FULL}-auth"
    assert env["DAGRID_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth_secret, "key": auth["adminTokenKey"]}
    assert env["DAGRID_READ_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth_secret, "key": auth["readTokenKey"]}
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    assert (f"{FULL}-auth" in secrets) == (not auth["existingSecret"])
    redis_ref = env["DAGRID_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    if merged["redis"]["bundled"]["enabled"]:
        assert redis_ref == {"name": f"{FULL}-redis", "key": "url"}
    else:
        ext = merged["redis"]["external"]
        assert redis_ref == {"name": ext["existingSecret"], "key": ext["existingSecretKey"]}
    w = container(find(objects, "Deployment", f"{FULL}-worker"))
    assert not any("TOKEN" in e["name"] for e in w["env"]), "workers (and their steps) get no API token"


def test_generated_tokens_are_long_and_given_ones_are_kept(chart):
    secret = find(render(chart, {}), "Secret", f"{FULL}-auth")
    import base64

    tokens = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(tokens) == {"admin-token", "read-token"}
    assert all(len(t) >= 16 and not re.search(r"\s", t) for t in tokens.values())
    assert tokens["admin-token"] != tokens["read-token"]
    given = find(render(chart, {"auth": {"adminToken": "a" * 32}}), "Secret", f"{FULL}-auth")
    assert base64.b64decode(given["data"]["admin-token"]).decode() == "a" * 32


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_shared_volume_and_secure_pods(chart, name):
    objects = render(chart, VALUE_SETS[name])
    for o in objects:
        for node in walk(o):
            assert "ReadWriteMany" not in node.get("accessModes", []), o["metadata"]["name"]
            assert "persistentVolumeClaim" not in node or o["kind"] == "StatefulSet", "no shared claim"
        if o["kind"] == "ServiceAccount":
            assert o["automountServiceAccountToken"] is False
        if o["kind"] in ("Deployment", "StatefulSet", "Pod"):
            pod = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert "resources" in c
    w = find(objects, "Deployment", f"{FULL}-worker")
    mounts = {m["mountPath"]: m["name"] for m in container(w)["volumeMounts"]}
    vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in vols[mounts["/var/log/dagrid"]], "the log dir is writable on a read-only root"
    assert "emptyDir" in vols[mounts["/home/dagrid"]], "steps' $HOME and working directory are writable"
    assert "emptyDir" in vols[mounts["/tmp"]]
    assert "--log-dir=/var/log/dagrid" in container(w)["args"]


def test_bundled_redis_keeps_every_write_and_says_it_is_not_ha(chart):
    objects = render(chart, VALUE_SETS["bundled-redis"])
    sts = find(objects, "StatefulSet", f"{FULL}-redis")
    assert sts["spec"]["replicas"] == 1
    assert "not-highly-available" in " ".join(sts["metadata"]["annotations"])
    args = " ".join(container(sts)["args"])
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert setting in args
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    notes = chart.render(values=VALUE_SETS["bundled-redis"], name=RELEASE, namespace=NAMESPACE)
    assert "NOT highly available" in notes["dagrid/templates/NOTES.txt"]
    # Without it, no Redis is deployed.
    assert not [o for o in render(chart, {}) if o["kind"] == "StatefulSet"]


def test_autoscaling_objects(chart):
    hpa = find(render(chart, VALUE_SETS["autoscaling"]), "HorizontalPodAutoscaler", f"{FULL}-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULL}-worker"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    objects = render(chart, VALUE_SETS["keda-and-monitoring"])
    so = find(objects, "ScaledObject", f"{FULL}-worker")
    assert "dagrid_ready_steps" in so["spec"]["triggers"][0]["metadata"]["query"]
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"], "KEDA makes its own HPA"
    sm = find(objects, "ServiceMonitor", FULL)
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus"
    assert not [o for o in render(chart, {}) if o["kind"] in ("ScaledObject", "ServiceMonitor", "HorizontalPodAutoscaler")]


def test_helm_test_hook_probes_the_service(chart):
    pod = find(render(chart, {}), "Pod", f"{FULL}-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"][:2] == ["health", f"--server=http://{FULL}:8080"]


def test_pod_disruption_budgets(chart):
    objects = render(chart, {})
    assert find(objects, "PodDisruptionBudget", f"{FULL}-coordinator")["spec"]["minAvailable"] == 1
    assert find(objects, "PodDisruptionBudget", f"{FULL}-worker")["spec"]["maxUnavailable"] == 1
    single = render(chart, {"coordinator": {"replicas": 1}})
    assert not [o for o in single if o["metadata"]["name"] == f"{FULL}-coordinator" and o["kind"] == "PodDisruptionBudget"]


def test_dags_come_from_a_config_map_mounted_at_dags(chart):
    objects = render(chart, {"dags": {"files": {"nightly.yaml": "name: nightly\nsteps:\n  - name: a\n    command: echo a\n"}}})
    cm = find(objects, "ConfigMap", f"{FULL}-dags")
    assert set(cm["data"]) == {"hello.yaml", "nightly.yaml"}
    coord = find(objects, "Deployment", f"{FULL}-coordinator")
    c = container(coord)
    assert "--dags=/etc/dagrid/dags" in c["args"]
    assert {"name": "dags", "mountPath": "/etc/dagrid/dags", "readOnly": True} in c["volumeMounts"]
    vols = {v["name"]: v for v in coord["spec"]["template"]["spec"]["volumes"]}
    assert vols["dags"]["configMap"]["name"] == f"{FULL}-dags"
    assert "checksum/dags" in coord["spec"]["template"]["metadata"]["annotations"]
    existing = render(chart, VALUE_SETS["existing-secrets"])
    assert not [o for o in existing if o["kind"] == "ConfigMap"]
    vols = {v["name"]: v for v in find(existing, "Deployment", f"{FULL}-coordinator")["spec"]["template"]["spec"]["volumes"]}
    assert vols["dags"]["configMap"]["name"] == "ops-dags"


@pytest.mark.parametrize(
    "values, error",
    [
        ({"worker": {"concurency": 3}}, "additional properties 'concurency' not allowed"),
        ({"worker": {"concurrency": 0}}, "/worker/concurrency"),
        ({"worker": {"replicas": "two"}}, "/worker/replicas"),
        ({"coordinator": {"leaseTimeout": "soon"}}, "/coordinator/leaseTimeout"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"auth": {"adminToken": "short"}}, "/auth/adminToken"),
        ({"redis": {"external": {"url": "http://redis:6379"}}}, "/redis/external/url"),
        ({"dags": {"files": {"bad name.txt": "x"}}}, "'bad name.txt' does not match pattern"),
        ({"surprise": True}, "additional properties 'surprise' not allowed"),
        ({"worker": {"labels": {"a b": "1"}}}, "'a b' does not match pattern"),
        ({"worker": {"labels": {"gpu": "x y"}}}, "/worker/labels/gpu"),
    ],
)
def test_values_outside_the_schema_are_refused(chart, values, error):
    with pytest.raises(helm.HelmValuesError, match=re.escape(error)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_worker_labels_reach_the_workers_environment(chart):
    """worker.labels become DAGRID_WORKER_LABELS (keys sorted, booleans as `true`), which the
    real CLI accepts; no labels, no variable."""
    def labels_env(values):
        env = container(find(render(chart, values), "Deployment", f"{FULL}-worker"))["env"]
        return [e.get("value") for e in env if e["name"] == "DAGRID_WORKER_LABELS"]

    assert labels_env({}) == []
    (value,) = labels_env({"worker": {"labels": {"region": "eu-west.1", "gpu": True, "rack": 7}}})
    assert value == "gpu=true,rack=7,region=eu-west.1"
    # The worker checks its labels before its log directory: an impossible --log-dir makes it
    # exit right after the labels passed (`--help` would skip the environment).
    run = subprocess.run(
        [DAGRID, "worker", "--redis-url", "redis://127.0.0.1:1", "--log-dir", "/proc/dagrid-none/logs"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "DAGRID_WORKER_LABELS": value},
    )
    assert run.returncode != 0 and "log directory" in run.stderr and "label" not in run.stderr, run.stderr


def test_a_grace_period_shorter_than_the_drain_is_refused(chart):
    with pytest.raises(helm.HelmError, match="must be above worker.shutdownGraceSeconds"):
        chart.render(values={"worker": {"terminationGracePeriodSeconds": 30}}, name=RELEASE, namespace=NAMESPACE)


def test_missing_redis_secret_is_named(chart):
    with pytest.raises(helm.HelmError, match="redis.external.existingSecret"):
        chart.render(values={"redis": {"external": {"existingSecret": ""}}}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_args_are_real_dagrid_flags(chart, name):
    """Every dagrid container's args parse with the real CLI (clap checks flags and values
    before it reaches the trailing --help)."""
    for o in render(chart, VALUE_SETS[name]):
        if o["kind"] == "Deployment":
            args = container(o)["args"]
        elif o["kind"] == "Pod":  # the `helm test` hook
            (c,) = o["spec"]["containers"]
            args = c["args"]
        else:
            continue
        run = subprocess.run([DAGRID, *args, "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, f"{o['metadata']['name']}: dagrid {' '.join(args)}: {run.stderr}"


def test_chart_dags_are_valid():
    files = sorted(str(p) for p in (CHART / "dags").glob("*.y*ml"))
    assert files
    run = subprocess.run([DAGRID, "validate", *files], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rendered_commands_run_a_cluster(chart, tmp_path):
    """The coordinator and worker exactly as rendered (args, env from the rendered Secrets, the
    DAG ConfigMap laid out as the kubelet mounts it: symlinks into ..data), on free ports and
    against a real redis-server: both probes answer ready, the admin token from the Secret
    submits the chart's hello DAG, and the read token may not."""
    import base64
    import time

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server not found; scripts/test.sh installs it (ensure_redis)")
    redis_port, api_port, health_port = free_port(), free_port(), free_port()
    objects = render(chart, {"redis": {"external": {"url": f"redis://127.0.0.1:{redis_port}"}}})
    secrets = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
        for o in objects
        if o["kind"] == "Secret"
    }
    cm = find(objects, "ConfigMap", f"{FULL}-dags")
    dags = tmp_path / "dags"
    (dags / "..2026_01_01").mkdir(parents=True)
    (dags / "..data").symlink_to("..2026_01_01")
    for name, text in cm["data"].items():
        (dags / "..2026_01_01" / name).write_text(text)
        (dags / name).symlink_to(f"..data/{name}")
    logs = tmp_path / "logs"

    def command(deployment):
        c = container(find(objects, "Deployment", deployment))
        env = {"PATH": "/usr/bin:/bin"}
        for e in c["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
        args = [
            a.replace("/etc/dagrid/dags", str(dags))
            .replace("/var/log/dagrid", str(logs))
            .replace("0.0.0.0:8080", f"0.0.0.0:{api_port}")
            .replace("0.0.0.0:9091", f"127.0.0.1:{health_port}")
            for a in c["args"]
        ]
        return [DAGRID, *args], env

    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL,
            )
        )
        for deployment in (f"{FULL}-coordinator", f"{FULL}-worker"):
            argv, env = command(deployment)
            procs.append(subprocess.Popen(argv, env=env, stderr=open(tmp_path / f"{deployment}.log", "w")))
        api = f"http://127.0.0.1:{api_port}"
        for server in (api, f"http://127.0.0.1:{health_port}"):
            deadline = time.monotonic() + 30
            while subprocess.run([DAGRID, "health", "--server", server], capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, f"{server} never ready: " + (tmp_path / f"{FULL}-coordinator.log").read_text()
                time.sleep(0.2)
        tokens = secrets[f"{FULL}-auth"]
        client = {"PATH": "/usr/bin:/bin", "DAGRID_SERVER": api}
        run = subprocess.run(
            [DAGRID, "submit", "hello", "--param", "NAME=helm", "--wait"],
            capture_output=True,
            text=True,
            env={**client, "DAGRID_TOKEN": tokens["admin-token"]},
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        refused = subprocess.run(
            [DAGRID, "submit", "hello"], capture_output=True, text=True, env={**client, "DAGRID_TOKEN": tokens["read-token"]}
        )
        assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                assert p.wait(timeout=60) == 0 or p is procs[0], f"{p.args[:2]} did not drain and exit 0"
            except subprocess.TimeoutExpired:
                p.kill()
                raise


def test_every_value_is_commented():
    """Each value of values.yaml has a comment above it, or above the block holding it."""
    stack, prev_comment, bare = [], False, []
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            prev_comment = text.startswith("#")
            continue
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not m:
            prev_comment = False
            continue
        indent = len(m[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if m[3].strip() and not (prev_comment or any(c for _, c in stack)):
            bare.append(f"{number}: {line}")
        stack.append((indent, prev_comment))
        prev_comment = False
    assert not bare, "values without a comment:\n" + "\n".join(bare)
