#!/usr/bin/env bash
# The main job: build dagrid, start a local cluster (a coordinator, 2 workers and a private
# redis-server) and run the manpage-stats DAG once per man page, then print the summary and
# check every per-file result. Installs redis-server when it is missing. Safe to run twice.
#
#   FILES   the files to process (a glob; default: the gzipped man pages of section 1)
#   LIMIT   at most this many of them (default 2500)
#   OUT_DIR where the per-file results go (default target/manpage-stats, emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis

FILES=${FILES:-/usr/share/man/man1/*.gz}
LIMIT=${LIMIT:-2500}
OUT_DIR=${OUT_DIR:-$PWD/target/manpage-stats}

cargo build --release --locked
bin=$PWD/target/release/dagrid

found=$(compgen -G "$FILES" | wc -l || true)
if [ "$found" -eq 0 ]; then
  echo "no files match $FILES; set FILES to a glob of gzipped files (for example FILES='/usr/share/doc/*/*.gz')" >&2
  exit 1
fi
if [ "$found" -lt 2000 ]; then
  echo "note: only $found files match $FILES (man pages may be excluded from this image)" >&2
fi

rm -rf "$OUT_DIR"
work=$(mktemp -d)
cleanup() {
  if [ -n "${cluster:-}" ] && kill -0 "$cluster" 2>/dev/null; then
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free port each time, so a second copy or a leftover service does not collide.
"$bin" start-all --dags examples --listen 127.0.0.1:0 --workers 2 --concurrency 2 \
  --log-dir "$work/logs" --ready-file "$work/ready" 2>"$work/cluster.log" &
cluster=$!
for _ in $(seq 1 300); do
  [ -s "$work/ready" ] && break
  kill -0 "$cluster" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/ready" ] || { echo "the cluster did not become ready; its log:" >&2; cat "$work/cluster.log" >&2; exit 1; }
server=$(cat "$work/ready")

status=0
"$bin" batch manpage-stats --server "$server" --files "$FILES" --limit "$LIMIT" \
  --param OUT_DIR="$OUT_DIR" || status=$?

results=$(find "$OUT_DIR" -name '*.tsv' 2>/dev/null | wc -l)
echo "per-file results: $results files in $OUT_DIR"
exit "$status"
