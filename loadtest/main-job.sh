#!/usr/bin/env bash
# main-job: the main job against its xargs baseline, back to back over the same files:
# `loadtest/manpages-xargs.sh`, then the Quick start's main job (the cluster of
# scripts/manpage-batch.sh: `dagrid start-all --workers 2 --concurrency 2` with its private
# redis-server, and `dagrid batch manpage-stats` over the man pages), alternating ROUNDS times
# (xargs, dagrid, xargs, dagrid…) to show the noise. Files/s of each, and
# "main-job: dagrid X files/s, reference Y files/s, ratio Z" from the medians.
#
#   loadtest/main-job.sh [--dagrid PATH] [--rounds N]
#   DAGRID_BIN (default target/release/dagrid; build it with `cargo build --release -p dagrid`),
#   ROUNDS (default 1; 2 shows the noise), FILES (default /usr/share/man/man1/*.gz), LIMIT (default 2500)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

bin=${DAGRID_BIN:-target/release/dagrid}
rounds=${ROUNDS:-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --dagrid) bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--dagrid PATH] [--rounds N]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "no dagrid binary at $bin: build it (cargo build --release -p dagrid) or pass --dagrid" >&2; exit 1; }
bin=$(realpath "$bin")
ensure_redis
export FILES=${FILES:-/usr/share/man/man1/*.gz}
export LIMIT=${LIMIT:-2500}
n=$(compgen -G "$FILES" | LC_ALL=C sort | awk -v n="$LIMIT" 'NR <= n' | wc -l)
[ "$n" -gt 0 ] || { echo "no files match $FILES" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  if [ -n "${cluster:-}" ] && kill -0 "$cluster" 2>/dev/null; then
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" start-all --dags examples --listen 127.0.0.1:0 --workers 2 --concurrency 2 \
  --log-dir "$work/logs" --ready-file "$work/ready" >"$work/cluster.log" 2>&1 &
cluster=$!
for _ in $(seq 1 300); do
  [ -s "$work/ready" ] && break
  kill -0 "$cluster" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/ready" ] || { echo "the cluster did not become ready; its log:" >&2; cat "$work/cluster.log" >&2; exit 1; }
server=$(cat "$work/ready")
echo "main-job: $n files, $rounds rounds of xargs then dagrid ($bin; start-all --workers 2 --concurrency 2)"

ours=() refs=()
for round in $(seq 1 "$rounds"); do
  line=$(OUT_DIR="$work/xargs-$round" loadtest/manpages-xargs.sh | tail -1)
  echo "  round $round: $line"
  refs+=("$(echo "$line" | awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "files/s") print $i }')")
  start=$(date +%s.%N)
  "$bin" batch manpage-stats --server "$server" --files "$FILES" --limit "$LIMIT" \
    --param OUT_DIR="$work/dagrid-$round" >"$work/batch.out" 2>&1 || {
    cat "$work/batch.out" >&2
    echo "dagrid batch failed; the last lines of the cluster's log:" >&2
    tail -n 30 "$work/cluster.log" >&2
    exit 1
  }
  end=$(date +%s.%N)
  results=$(find "$work/dagrid-$round" -name '*.tsv' | wc -l)
  [ "$results" -eq "$n" ] || { echo "dagrid wrote $results of $n results" >&2; exit 1; }
  rate=$(awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", n / (e - s) }')
  awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { printf "  round '"$round"': dagrid batch: %d files, wall time %.2fs, %.1f files/s\n", n, e - s, n / (e - s) }'
  ours+=("$rate")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
o=$(median "${ours[@]}")
r=$(median "${refs[@]}")
awk -v o="$o" -v r="$r" 'BEGIN { printf "main-job: dagrid %.1f files/s, reference %.1f files/s (manpages-xargs.sh), ratio %.2f\n", o, r, o / r }'
