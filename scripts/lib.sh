# Shared by the scripts: install what they need when it is missing.

# Installs redis-server with apt-get when it is not on PATH (Debian, Ubuntu).
ensure_redis() {
  if command -v redis-server >/dev/null 2>&1; then
    return 0
  fi
  echo "redis-server not found; installing it with apt-get" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 || {
    echo "could not install redis-server; install it by hand and run again" >&2
    return 1
  }
}
