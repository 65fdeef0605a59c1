#!/usr/bin/env bash
# The scale run at full size (tests/scale_run.rs): a 3-node NATS cluster, 2 APIs and 3
# processes of every worker role against one Postgres, one of each (and a NATS node) killed
# midway; prints the machine and the run's figures. Release build: it measures Hubkeeper.
#   HK_SCALE_ACCOUNTS  installations (default 1000)
#   HK_SCALE_SECS      seconds of token + webhook load (default 300)
#   HK_SCALE_WEBHOOKS  unique webhook events (default 20000)
#   HK_SCALE_PROFILE   cargo profile: release (default) or dev
# Extra arguments go to cargo nextest / cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

export HK_SCALE_ACCOUNTS="${HK_SCALE_ACCOUNTS:-1000}"
export HK_SCALE_SECS="${HK_SCALE_SECS:-300}"
export HK_SCALE_WEBHOOKS="${HK_SCALE_WEBHOOKS:-20000}"
profile="${HK_SCALE_PROFILE:-release}"

if [ -z "${HK_NATS_SERVER_BIN:-}" ]; then
  [ -x .hubkeeper/tools/bin/nats-server ] || ./scripts/bootstrap.sh
  export HK_NATS_SERVER_BIN="$PWD/.hubkeeper/tools/bin/nats-server"
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), \
$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "size: $HK_SCALE_ACCOUNTS accounts, $HK_SCALE_SECS s of load, $HK_SCALE_WEBHOOKS webhook events ($profile build)"

log="$(mktemp -t hk-scale-run.XXXXXX)"
trap 'rm -f "$log"' EXIT
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p hubkeeper --test scale_run --cargo-profile "$profile" --no-capture "$@" \
    2>&1 | tee "$log" || status=$?
else
  flag=()
  [ "$profile" = release ] && flag=(--release)
  cargo test -p hubkeeper --test scale_run "${flag[@]}" "$@" -- --nocapture \
    2>&1 | tee "$log" || status=$?
fi
echo
grep '^FIGURES' "$log" || echo "no figures: the run failed (process logs are kept in test-artifacts/)"
exit "$status"
