#!/usr/bin/env bash
# Schemathesis over every operation of the coordinator's OpenAPI document, against a real
# coordinator + worker + redis-server of its own (free ports, a temp dir), three times: with no
# token, with a read token and with an admin token. Fails on any failure schemathesis reports
# (5xx, responses outside the document, ignored auth, …).
#
# Installs a pinned schemathesis into a virtual environment (reused when present:
# $DAGRID_SCHEMATHESIS_VENV, default target/schemathesis-venv). Bounded in time:
# $DAGRID_SCHEMATHESIS_SECONDS per token (default 25; about 90 s in all on 2 cores), with the
# seed $DAGRID_SCHEMATHESIS_SEED (default 12). One worker thread: Python 3.11's ast module is
# not thread-safe, and hypothesis parses lambdas with it. Cleans up what it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis

SCHEMATHESIS_VERSION=4.32.5
VENV="${DAGRID_SCHEMATHESIS_VENV:-target/schemathesis-venv}"
SECONDS_PER_RUN="${DAGRID_SCHEMATHESIS_SECONDS:-25}"
SEED="${DAGRID_SCHEMATHESIS_SEED:-12}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet --bin dagrid
BIN="$PWD/target/debug/dagrid"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    echo "schemathesis: failed; logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

REDIS_PORT="$(free_port)"
API_PORT="$(free_port)"
API="http://127.0.0.1:$API_PORT"
READ_TOKEN="read-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
ADMIN_TOKEN="admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS+=($!)

mkdir -p "$WORK/dags" "$WORK/logs"
cat >"$WORK/dags/hello.yaml" <<'EOF'
name: hello
steps:
  - name: hi
    command: echo hi
EOF

export DAGRID_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export DAGRID_NAMESPACE="schemathesis"
DAGRID_ADMIN_TOKEN="$ADMIN_TOKEN" DAGRID_READ_TOKEN="$READ_TOKEN" \
  "$BIN" coordinator --listen "127.0.0.1:$API_PORT" --dags "$WORK/dags" \
  >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
"$BIN" worker --log-dir "$WORK/logs" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

for _ in $(seq 1 200); do
  if curl -fsS "$API/health/ready" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
curl -fsS "$API/health/ready" >/dev/null

# The document needs a token; the runs read it from a file.
curl -fsS -H "Authorization: Bearer $READ_TOKEN" "$API/api/v1/openapi.json" >"$WORK/openapi.json"

run() {
  local name="$1"
  shift
  echo "schemathesis: $name" >&2
  "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "$WORK/openapi.json" --url "$API" \
    --max-time "$SECONDS_PER_RUN" --workers 1 --seed "$SEED" \
    --request-timeout 10 --suppress-health-check all --no-color --generation-database none \
    --report junit --report-junit-path "$WORK/junit-$name.xml" "$@"
}

started=$(date +%s)
run no-token
run read-token -H "Authorization: Bearer $READ_TOKEN"
run admin-token -H "Authorization: Bearer $ADMIN_TOKEN"
echo "schemathesis: 3 runs passed in $(($(date +%s) - started)) s" >&2
