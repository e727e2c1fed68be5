#!/usr/bin/env bash
# `make demo`: run worker and reporter (`mta run`) against the simulator partner, publish
# examples/batch.json, print its results as they arrive, and stop by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

export MTA_ACCOUNTS="${MTA_ACCOUNTS:-examples/accounts.toml}"
export MTA_PREFIX="${MTA_PREFIX:-mta-demo}"
export MTA_POLL_FIRST_S="${MTA_POLL_FIRST_S:-1}"
export MTA_POLL_MAX_S="${MTA_POLL_MAX_S:-2}"
mta=.venv/bin/mta
log=$(mktemp -t mta-demo.XXXXXX.log)
total=$(.venv/bin/python -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["messages"]))' examples/batch.json)

echo "== mta run (worker + reporter, simulator partner), log: $log"
"$mta" run >"$log" 2>&1 &
run_pid=$!
stop() {
    if kill -0 "$run_pid" 2>/dev/null; then
        kill -TERM "$run_pid" && wait "$run_pid" || true
        echo "== mta run stopped (SIGTERM, graceful)"
    fi
}
trap stop EXIT

for _ in $(seq 1 100); do
    grep -q " running (prefix " "$log" && break
    if ! kill -0 "$run_pid" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.2
done

echo "== results on ${MTA_PREFIX}.reports (until every message of the batch has its final)"
"$mta" reports --count "$total" --finals --idle-timeout 60 &
reports_pid=$!
sleep 1  # let the tail bind its queue before anything is published

echo "== mta publish examples/batch.json ($total messages)"
"$mta" publish examples/batch.json >/dev/null
wait "$reports_pid"
