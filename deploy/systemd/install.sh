#!/bin/sh
# Installs dagrid's systemd units on this machine: the binaries (dagrid and, from the same
# directory, dagrid-worker, which `dagrid worker` execs), a `dagrid` system user,
# /etc/dagrid (settings, DAG directory, a token file with fresh tokens) and the units.
# Starts nothing: edit /etc/dagrid/dagrid.env, then enable the units (docs/deploy.md).
# Safe to run twice: existing settings and tokens are kept.
#
#   sudo deploy/systemd/install.sh [path/to/dagrid]    (default: target/release/dagrid)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/dagrid}
[ -x "$bin" ] || { echo "no dagrid binary at $bin; build it with cargo build --release or pass its path" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

install -m 0755 "$bin" /usr/local/bin/dagrid
small=$(dirname "$bin")/dagrid-worker
if [ -x "$small" ]; then
  install -m 0755 "$small" /usr/local/bin/dagrid-worker
else
  # A dagrid-worker left by an earlier install would be of another build: remove it.
  rm -f /usr/local/bin/dagrid-worker
  echo "no dagrid-worker next to $bin: workers run inside dagrid (more memory); build it with cargo build --release" >&2
fi
if ! id dagrid >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/dagrid --create-home --shell /usr/sbin/nologin dagrid
fi
install -d -m 0750 -o root -g dagrid /etc/dagrid /etc/dagrid/dags
# Read by systemd (as root) before it starts dagrid: steps, which run as dagrid, cannot read it.
[ -e /etc/dagrid/dagrid.env ] || install -m 0600 -o root -g root "$here/dagrid.env" /etc/dagrid/dagrid.env
if [ ! -e /etc/dagrid/tokens ]; then
  umask 027
  {
    echo "# <role> <token> [name]; role admin or read"
    echo "admin $(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') admin"
    echo "read $(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') read"
  } > /etc/dagrid/tokens
  chown root:dagrid /etc/dagrid/tokens
  chmod 0640 /etc/dagrid/tokens
fi
for unit in dagrid.service dagrid-coordinator.service dagrid-worker@.service; do
  install -m 0644 "$here/$unit" "/etc/systemd/system/$unit"
done
systemctl daemon-reload
echo "installed; edit /etc/dagrid/dagrid.env (DAGRID_REDIS_URL), put DAG files in /etc/dagrid/dags, then:"
echo "  one machine:  systemctl enable --now dagrid"
echo "  split:        systemctl enable --now dagrid-coordinator dagrid-worker@{1..4}"
echo "the admin token: sudo awk '\$1 == \"admin\" {print \$2}' /etc/dagrid/tokens"
