#!/usr/bin/env bash
# All seven step-path figures of issue 13 against one dagrid binary, one after the other (about
# ten minutes on a 2-core machine): each command's full output goes to stdout and to LOG, and
# the summary lines ("<figure>: dagrid X, reference Y, ratio Z") are printed again at the end,
# ready for the table of loadtest/README.md.
#
#   loadtest/figures.sh [--dagrid PATH]     (default target/release/dagrid)
#   LOG (default target/loadtest-figures.log)
# Builds the load tester first (cargo build --release --locked -p dagrid-loadtest).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DAGRID_BIN:-target/release/dagrid}
while [ $# -gt 0 ]; do
  case "$1" in
    --dagrid) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--dagrid PATH]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "no dagrid binary at $bin: build it (cargo build --release -p dagrid) or pass --dagrid" >&2; exit 1; }
bin=$(realpath "$bin")
log=${LOG:-target/loadtest-figures.log}
cargo build --release --locked -p dagrid-loadtest
: > "$log"
{
  echo "dagrid: $bin; $(redis-server --version); $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
  for b in step-throughput redis-cost submit-rate memory dispatch-latency scale; do
    echo "=== $b (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "target/release/$b" --dagrid "$bin" || echo "$b: FAILED (exit $?)"
  done
  echo "=== main-job (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  loadtest/main-job.sh --dagrid "$bin" --rounds 2 || echo "main-job: FAILED (exit $?)"
} 2>&1 | tee -a "$log"
echo
echo "summary (full output in $log):"
grep -E '^[a-z-]+( \([^)]*\))?: (dagrid |FAILED)' "$log"
