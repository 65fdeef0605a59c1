#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting, lints and dependencies, then the
# whole suite (cargo-nextest) against real Postgres and nats-server processes that the tests
# start themselves.
#   HK_SKIP_LINT=1   skip cargo fmt/clippy (quicker local iterations)
#   HK_SKIP_TESTS=1  stop before the test run (prerequisites, lints and dependency checks only)
# Extra arguments go to `cargo nextest run` (e.g. `-E 'binary(up)'`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if ! command -v cargo >/dev/null 2>&1; then
  missing+=("the Rust toolchain (https://rustup.rs, then reopen the shell)")
fi
if ! command -v cc >/dev/null 2>&1; then
  missing+=("a C compiler and linker: sudo apt-get install build-essential")
fi
if command -v cargo >/dev/null 2>&1; then
  if ! cargo fmt --version >/dev/null 2>&1; then
    missing+=("rustfmt: rustup component add rustfmt")
  fi
  if ! cargo clippy --version >/dev/null 2>&1; then
    missing+=("clippy: rustup component add clippy")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: missing, install first:" >&2
  for item in "${missing[@]}"; do echo "  - $item" >&2; done
  exit 1
fi

# --browser: the dashboard's end-to-end test drives Debian's chromium through chromedriver.
# Also installs the pinned cargo-nextest and cargo-deny into .hubkeeper/tools/bin.
./scripts/bootstrap.sh --browser
export PATH="$PWD/.hubkeeper/tools/bin:$PATH"
export HK_NATS_SERVER_BIN="$PWD/.hubkeeper/tools/bin/nats-server"

if [ "${HK_SKIP_LINT:-0}" != 1 ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

# Licenses, banned crates and sources (deny.toml). The advisories check needs the RustSec
# database from the network: docs/operations.md says how to run it.
cargo deny --log-level error check licenses bans sources

if [ "${HK_SKIP_TESTS:-0}" = 1 ]; then
  echo "test.sh: HK_SKIP_TESTS=1, not running the test suite"
  exit 0
fi

# Always nextest: its profile keeps the multi-process tests in their serial group and applies
# the slow-test limits (.config/nextest.toml); `cargo test` would silently lose both.
cargo nextest run --workspace --profile ci "$@"
