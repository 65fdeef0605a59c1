#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting and lints, then the whole suite
# against real Postgres and nats-server processes that the tests start themselves.
#   HK_SKIP_LINT=1  skip cargo fmt/clippy (quicker local iterations)
set -euo pipefail
cd "$(dirname "$0")/.."

# --browser: the dashboard's end-to-end test drives Debian's chromium through chromedriver.
./scripts/bootstrap.sh --browser
export HK_NATS_SERVER_BIN="$PWD/.hubkeeper/tools/bin/nats-server"

if [ "${HK_SKIP_LINT:-0}" != 1 ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --profile ci "$@"
else
  cargo test --workspace "$@"
fi
