#!/usr/bin/env bash
# The whole test suite: the deploy checks (scripts/deploy-check.sh) and schemathesis over the API
# (scripts/schemathesis.sh), then unit tests and end-to-end tests, each against redis-servers of
# its own. Installs redis-server when it is missing. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
./scripts/deploy-check.sh
# Before cargo test, whose summary lines close the output.
./scripts/schemathesis.sh
./scripts/ui-test.sh
# Four tests at a time (libtest's default is one per core): the end-to-end tests spend most
# of their time waiting on processes and timers, so on 2 cores this halves the wall time.
# DAGRID_TEST_THREADS overrides it.
cargo test --workspace --locked -- --test-threads="${DAGRID_TEST_THREADS:-4}"
