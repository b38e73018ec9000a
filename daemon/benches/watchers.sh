#!/usr/bin/env bash
# What dashboards watching cost ingest: anomalyd's NDJSON ingest rate with
# and without ten `GET /events` streams open (each watching one series, as
# an open dashboard does), in alternating runs against the same daemon.
#
# The daemon is pinned to one core; wrk and the ten watchers (curl -N) to
# the other. The workload is the shape real clients send: NDJSON batches of
# 1,000 points with timestamps, over 1,000 series named like Prometheus
# series with labels, about 2% of them anomalies (so anomaly events flow to
# the watchers and lines to the log). Everything is on 127.0.0.1 and every
# run is bounded in time.
#
# Environment (defaults in brackets):
#   WATCH_DURATION [5s]   length of each measured wrk run
#   WATCH_PAIRS [5]       alternating pairs (without, with); medians reported
#   WATCHERS [10]         event streams in the "with" runs
#   SERVER_CPU [0], LOAD_CPU [1], LOAD_SKIP_BUILD [0]
set -euo pipefail

DURATION=${WATCH_DURATION:-5s}
PAIRS=${WATCH_PAIRS:-5}
WATCHERS=${WATCHERS:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ANOMALYD=${CARGO_TARGET_DIR:-$ROOT/target}/release/anomalyd

die() { printf 'watchers.sh: %s\n' "$*" >&2; exit 1; }
for tool in wrk curl taskset; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install wrk curl util-linux)"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 cores"
if [ "${LOAD_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p anomalyd --bin anomalyd)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/anomalyd-watchers.XXXXXX")
PIDS=()
WATCHER_PIDS=()
cleanup() {
    for pid in "${WATCHER_PIDS[@]}" "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/anomalyd.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[log]
anomaly_log_file = "$TMP/anomalies.log"
EOF
taskset -c "$SERVER_CPU" "$ANOMALYD" --config "$TMP/anomalyd.toml" >"$TMP/out" 2>"$TMP/err" &
PID=$!
PIDS+=("$PID")
for _ in $(seq 1 200); do
    grep -q '^listening on ' "$TMP/out" 2>/dev/null && break
    sleep 0.05
done
ADDR=$(sed -n 's/^listening on //p' "$TMP/out" | head -n1)
[ -n "$ADDR" ] || die "anomalyd did not start: $(cat "$TMP/err")"

# 1,000 series; each batch moves the clock on by one second per point of a
# series; one series in 50 gets a spike in each batch.
cat >"$TMP/batch.lua" <<'LUA'
local n = 0
local function body()
  local lines = {}
  for i = 0, 999 do
    local value = 50 + (i * 7 + n) % 11 + 0.25 * (i % 4)
    if (i + n) % 50 == 0 then value = 500 + (n % 7) end
    lines[#lines + 1] = string.format(
      '{"series":"http_request_duration_seconds{instance=\\"host-%03d:9100\\",job=\\"api\\"}","value":%.2f,"timestamp":%d}',
      i, value, 1700000000 + n)
  end
  return table.concat(lines, "\n") .. "\n"
end
local bodies = {}
for b = 0, 63 do n = b; bodies[b + 1] = body() end
local k = 0
function request()
  k = k % #bodies + 1
  return wrk.format("POST", "/detect", {["Content-Type"] = "application/x-ndjson"}, bodies[k])
end
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA

run() { # run -> points per second
    local out
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c4 -d"$1" --timeout 5s -s "$TMP/batch.lua" "http://$ADDR/detect" | grep '^RESULT')
    local requests duration errors
    requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
    duration=$(sed -n 's/.*duration_us=\([0-9]*\).*/\1/p' <<<"$out")
    errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
    [ "$errors" = 0 ] || die "wrk saw $errors errors"
    awk -v r="$requests" -v d="$duration" 'BEGIN { printf "%.0f", r * 1000 / (d / 1e6) }'
}

start_watchers() {
    WATCHER_PIDS=()
    for i in $(seq 1 "$WATCHERS"); do
        local series
        series=$(printf 'http_request_duration_seconds%%7Binstance%%3D%%22host-%03d%%3A9100%%22%%2Cjob%%3D%%22api%%22%%7D' $((i * 7)))
        taskset -c "$LOAD_CPU" curl -sN --max-time 600 "http://$ADDR/events?series=$series" >"$TMP/watch-$i" &
        WATCHER_PIDS+=("$!")
    done
    for _ in $(seq 1 100); do
        [ "$(curl -s "http://$ADDR/metrics" | awk '/^anomalyd_event_streams / {print $2}')" = "$WATCHERS" ] && return
        sleep 0.05
    done
    die "the watchers did not connect"
}
stop_watchers() {
    for pid in "${WATCHER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${WATCHER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    WATCHER_PIDS=()
}

run 2s >/dev/null # warm-up: every series past its window
without=() with=() ratios=()
for pair in $(seq 1 "$PAIRS"); do
    a=$(run "$DURATION")
    start_watchers
    b=$(run "$DURATION")
    received=$(cat "$TMP"/watch-* | grep -c '^event: ' || true)
    stop_watchers
    without+=("$a") with+=("$b")
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4f", b / a }')
    ratios+=("$ratio")
    printf 'pair %d: without %s points/s, with %d watchers %s points/s (%s events received), ratio %s\n' \
        "$pair" "$a" "$WATCHERS" "$b" "$received" "$ratio" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf 'median: without %s points/s, with %d watchers %s points/s; median ratio %s (cost %.1f%%)\n' \
    "$(median "${without[@]}")" "$WATCHERS" "$(median "${with[@]}")" "$(median "${ratios[@]}")" \
    "$(awk -v r="$(median "${ratios[@]}")" 'BEGIN { print (1 - r) * 100 }')"
