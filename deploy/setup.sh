#!/usr/bin/env bash
# Sets up Shipway on a Debian/Ubuntu machine, idempotently:
#   - Debian's prometheus package (server + promtool) and redis-server (the Redis online store),
#   - uv, then the platform environment (.venv) exactly as uv.lock pins it,
#   - the serving runtime's own environment (deploy/serving/.venv, MLServer) from its lock,
#   - `shipway doctor`: DuckDB's delta extension from its wheel, the dbt manifest, checks.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
say() { printf '\033[1mshipway setup:\033[0m %s\n' "$*"; }
die() { printf 'shipway setup: %s\n' "$*" >&2; exit 2; }

[ -f uv.lock ] || die "uv.lock is missing: restore it (git checkout -- uv.lock); the environment is only built from the lock"
[ -f deploy/serving/uv.lock ] || die "deploy/serving/uv.lock is missing: restore it (git checkout -- deploy/serving/uv.lock)"
command -v python3 >/dev/null || die "python3 not found: install Python 3.11 (apt-get install python3 python3-venv)"

PACKAGES=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || PACKAGES+=(prometheus)
command -v redis-server >/dev/null || PACKAGES+=(redis-server)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  say "installing ${PACKAGES[*]} from Debian packages"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  # Debian starts its own redis-server on :6379; Shipway starts its own, in $SHIPWAY_HOME.
  if [[ " ${PACKAGES[*]} " == *" redis-server "* ]]; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  say "installing uv $UV_VERSION into .tools/"
  python3 -m venv .tools
  .tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

say "platform environment (.venv) from uv.lock"
.tools/bin/uv sync --frozen --quiet --compile-bytecode
say "serving runtime environment (deploy/serving/.venv) from deploy/serving/uv.lock"
.tools/bin/uv sync --frozen --quiet --compile-bytecode --project deploy/serving

.venv/bin/shipway doctor
say "ready"
