#!/usr/bin/env bash
# User-space instructions per request, anomalyd against the baseline server,
# counted by callgrind: unlike CPU time on a shared VM, the count barely
# moves between runs, so a change's effect shows even when load.sh's CPU
# ratio is lost in noise. Kernel time (sockets) is not included; it is
# about the same for both servers.
#
# Environment: INSTR_SECONDS [8] of wrk load per server (under callgrind
# the servers run ~50x slower), LOAD_SKIP_BUILD [0].
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
cat >"$TMP/anomalyd.toml" <<CONF
[server]
listen = "127.0.0.1:0"
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

measure() { # name command...
    local name=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.%p" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    for _ in $(seq 1 300); do grep -q "listening on" "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$TMP/$name.out" | head -1)
    [ -n "$addr" ] || { echo "$name did not start" >&2; cat "$TMP/$name.err" >&2; exit 1; }
    # Warm up, then count only the measured load.
    wrk -t1 -c4 -d2s -s "$TMP/single.lua" "http://$addr/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c4 -d"${SECONDS_PER_RUN}s" -s "$TMP/single.lua" "http://$addr/" | awk '/requests in/ { print $1 }')
    callgrind_control -d "$pid" >/dev/null 2>&1
    local instructions
    instructions=$(cat "$TMP/$name".*.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s }')
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    awk -v n="$name" -v i="$instructions" -v r="$requests" 'BEGIN { printf "%-9s %8d requests %14d instructions %8.0f per request\n", n, r, i, i / r }'
    echo "$instructions $requests" >"$TMP/$name.result"
}
measure baseline "$BIN/examples/baseline_server"
measure anomalyd "$BIN/anomalyd" --config "$TMP/anomalyd.toml"
read -r bi br <"$TMP/baseline.result"
read -r ai ar <"$TMP/anomalyd.result"
awk -v bi="$bi" -v br="$br" -v ai="$ai" -v ar="$ar" 'BEGIN { printf "instructions per request, anomalyd / baseline: %.2fx\n", (ai / ar) / (bi / br) }'
