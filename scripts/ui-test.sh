#!/usr/bin/env bash
# Browser tests of the web UI: headless Chromium (Debian's chromium and chromium-driver,
# installed with apt-get when missing) driven by playwright-core (installed from npm into
# target/ui-test/) against a real cluster: `dagrid start-all` with a private redis-server,
# 2 workers and an admin and a read token, on a free port. Runs scripts/ui-test.mjs, which
# also writes the screenshots of docs/ui/. Safe to run twice; leaves nothing running.
#   UI_TEST_KEEP=1 keeps the temp dir (cluster log, DAG files) for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing $* with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || apt_install chromium chromium-driver
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm

PW_VERSION=1.57.0
dir=target/ui-test
mkdir -p "$dir"
if [ ! -f "$dir/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$PW_VERSION\"" "$dir/node_modules/playwright-core/package.json"; then
  [ -f "$dir/package.json" ] || echo '{"name": "dagrid-ui-test", "private": true}' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --silent "playwright-core@$PW_VERSION")
fi

cargo build -p dagrid --locked --quiet
tmp=$(mktemp -d)
pid=""
finish() {
  local rc=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ]; then
    echo "ui-test failed; the cluster's log:" >&2
    tail -n 40 "$tmp/cluster.log" >&2 || true
  fi
  if [ "${UI_TEST_KEEP:-}" = 1 ] || [ "$rc" -ne 0 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap finish EXIT

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
admin=$(node -e 'console.log(require("crypto").randomBytes(16).toString("hex"))')
read=$(node -e 'console.log(require("crypto").randomBytes(16).toString("hex"))')
mkdir -p "$tmp/dags" "$tmp/logs" "$tmp/work"
node scripts/ui-test.mjs --write-dags "$tmp/dags" "$tmp/work"

DAGRID_ADMIN_TOKEN=$admin DAGRID_READ_TOKEN=$read \
  target/debug/dagrid start-all --listen "127.0.0.1:$port" --dags "$tmp/dags" \
  --workers 2 --concurrency 4 --label region=eu --log-dir "$tmp/logs" >"$tmp/cluster.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "dagrid start-all exited" >&2; exit 1; }
  sleep 0.1
done

UI_URL="http://127.0.0.1:$port" UI_ADMIN_TOKEN=$admin UI_READ_TOKEN=$read UI_WORK="$tmp/work" \
  UI_SHOTS="${UI_SHOTS:-target/ui-test/shots}" UI_NODE_MODULES="$PWD/$dir/node_modules" \
  node scripts/ui-test.mjs
