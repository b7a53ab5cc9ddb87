#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests, each against redis-servers of its own.
# Installs redis-server when it is missing. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
./scripts/deploy-check.sh
./scripts/ui-test.sh
cargo test --workspace --locked
