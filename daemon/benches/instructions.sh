#!/usr/bin/env bash
# User-space instructions per request, anomalyd against the baseline server,
# counted by callgrind: unlike CPU time on a shared VM, the count barely
# moves between runs, so a change's effect shows even when load.sh's CPU
# ratio is lost in noise. Kernel time (sockets) is not included; it is
# about the same for both servers.
#
# Two workloads: `single` (one JSON object per request; per request) and
# `ndjson` (NDJSON batches of 100 points with timestamps, one series in 20
# with a spike, so about 2% anomalies that go through the log; per point).
#
# Environment: INSTR_SECONDS [8] of wrk load per server (under callgrind
# the servers run ~50x slower), LOAD_SKIP_BUILD [0]. To compare two
# commits, build each into its own CARGO_TARGET_DIR and run this script
# with LOAD_SKIP_BUILD=1 and that CARGO_TARGET_DIR.
set -euo pipefail
SECONDS_PER_RUN=${INSTR_SECONDS:-8}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for tool in valgrind callgrind_control wrk; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required (apt-get install valgrind wrk)" >&2; exit 1; }
done
if [ "${LOAD_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p anomalyd --bin anomalyd --example baseline_server)
fi
TMP=$(mktemp -d)
trap 'pkill -9 -f "callgrind-out-file=$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
# The detector settings of every figure since [1/5] (the built-in defaults
# until [8/11]; keys every version knows), so that commits compare.
cat >"$TMP/anomalyd.toml" <<CONF
[server]
listen = "127.0.0.1:0"
[detector]
window_size = 30
threshold_multiplier = 3.0
direction = "upper"
[log]
anomaly_log_file = "$TMP/anomalies.log"
CONF
cat >"$TMP/single.lua" <<'LUA'
local reqs = {}
for i = 0, 999 do
  local body = string.format("{\"value\": %.2f, \"series\": \"s%d\"}", 50 + (i * 7) % 11 + 0.25 * (i % 4), i % 100)
  reqs[i + 1] = wrk.format("POST", "/detect", {["Content-Type"] = "application/json"}, body)
end
local n = 0
function request() n = n % #reqs + 1; return reqs[n] end
LUA

cat >"$TMP/ndjson.lua" <<'LUA'
local reqs = {}
for b = 0, 49 do
  local lines = {}
  for i = 0, 99 do
    local n = b * 100 + i
    local value = 50 + (n * 7) % 11 + 0.25 * (n % 4)
    if n % 50 == 49 then value = value + 400 end
    lines[i + 1] = string.format("{\"series\":\"web.h%d.latency\",\"value\":%.2f,\"timestamp\":%.3f}", n % 100, value, 1700000000 + n * 0.5)
  end
  reqs[b + 1] = wrk.format("POST", "/detect", {["Content-Type"] = "application/x-ndjson"}, table.concat(lines, "\n") .. "\n")
end
local n = 0
function request() n = n % #reqs + 1; return reqs[n] end
LUA

measure() { # name workload points-per-request command...
    local name=$1 workload=$2 per=$3; shift 3
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.%p" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    for _ in $(seq 1 300); do grep -q "listening on" "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$TMP/$name.out" | head -1)
    [ -n "$addr" ] || { echo "$name did not start" >&2; cat "$TMP/$name.err" >&2; exit 1; }
    # Warm up, then count only the measured load.
    wrk -t1 -c4 -d2s -s "$TMP/$workload.lua" "http://$addr/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c4 -d"${SECONDS_PER_RUN}s" -s "$TMP/$workload.lua" "http://$addr/" | awk '/requests in/ { print $1 }')
    callgrind_control -d "$pid" >/dev/null 2>&1
    local instructions
    instructions=$(cat "$TMP/$name".*.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { printf "%.0f\n", s }')
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rm -f "$TMP/$name".*.* "$TMP/anomalies.log"
    local points=$((requests * per))
    awk -v n="$name" -v w="$workload" -v i="$instructions" -v p="$points" -v per="$per" 'BEGIN { printf "%-9s %-7s %9d %-8s %14.0f instructions %8.0f per %s\n", n, w, p, (per == 1 ? "requests" : "points"), i, i / p, (per == 1 ? "request" : "point") }'
    echo "$instructions $points" >"$TMP/$name-$workload.result"
}
for workload in single ndjson; do
    per=1
    [ "$workload" = ndjson ] && per=100
    measure baseline "$workload" "$per" "$BIN/examples/baseline_server"
    measure anomalyd "$workload" "$per" "$BIN/anomalyd" --config "$TMP/anomalyd.toml"
    read -r bi bp <"$TMP/baseline-$workload.result"
    read -r ai ap <"$TMP/anomalyd-$workload.result"
    awk -v w="$workload" -v bi="$bi" -v bp="$bp" -v ai="$ai" -v ap="$ap" 'BEGIN { printf "%s: instructions per %s, anomalyd / baseline: %.2fx\n", w, (w == "single" ? "request" : "point"), (ai / ap) / (bi / bp) }'
done
