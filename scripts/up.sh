#!/usr/bin/env bash
# Runs Hubkeeper on this machine: installs what is missing, builds, and starts every role in one
# process. With no DATABASE_URL / NATS_URL it starts its own Postgres and nats-server under
# .hubkeeper/ (reused by the next run). Ctrl-C stops everything. Extra arguments go to `up`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh
export HK_NATS_SERVER_BIN="${HK_NATS_SERVER_BIN:-$PWD/.hubkeeper/tools/bin/nats-server}"
cargo build --release --quiet -p hubkeeper
exec ./target/release/hubkeeper up "$@"
