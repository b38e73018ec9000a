#!/usr/bin/env bash
# Load benchmark: anomalyd `POST /detect` against a minimal hyper server that
# only parses the same JSON (daemon/examples/baseline_server.rs), plus the
# memory figures (idle RSS, RSS with 1,000,000 full series).
#
# Everything is on 127.0.0.1, every run is bounded, the server is pinned to
# one core and wrk / the feeder to another. See daemon/benches/README.md.
#
# Environment (defaults in brackets):
#   LOAD_DURATION [10s]     length of each measured wrk run
#   LOAD_WARMUP [2s]        unmeasured wrk run per server and workload (0 = none)
#   LOAD_RUNS [3]           measured runs per server and workload (median reported;
#                           0 = skip the throughput runs, only the memory figures)
#   LOAD_CONNECTIONS [32]   wrk connections for single points
#   LOAD_BATCH_CONNECTIONS [8]  wrk connections for NDJSON batches
#   SERVER_CPU [0]          core the servers are pinned to
#   LOAD_CPU [1]            core wrk and the feeder are pinned to
#   LOAD_SERIES [100]       distinct series in the wrk workloads
#   MEM_SERIES [1000000]    series for the memory run (0 = skip it)
#   MEM_WINDOW [30]         window_size for the memory run
#   MEM_DETECTOR [moving_average]  detector for the memory run (the goal
#                           applies to moving_average)
#   LOAD_SKIP_BUILD [0]     1 = use the binaries already in target/release
set -euo pipefail

DURATION=${LOAD_DURATION:-10s}
WARMUP=${LOAD_WARMUP:-2s}
CONNS=${LOAD_CONNECTIONS:-32}
BATCH_CONNS=${LOAD_BATCH_CONNECTIONS:-8}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SERIES=${LOAD_SERIES:-100}
MEM_SERIES=${MEM_SERIES:-1000000}
MEM_WINDOW=${MEM_WINDOW:-30}
MEM_DETECTOR=${MEM_DETECTOR:-moving_average}
BATCH_POINTS=1000
RUNS=${LOAD_RUNS:-3}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ANOMALYD=$TARGET_DIR/release/anomalyd
BASELINE=$TARGET_DIR/release/examples/baseline_server
CLK_TCK=$(getconf CLK_TCK)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# --- tools and binaries -----------------------------------------------------

if ! command -v wrk >/dev/null; then
    log "installing wrk"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk >/dev/null
fi
command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v python3 >/dev/null || die "python3 is required for the memory run"
nproc_all=$(nproc --all)
[ "$nproc_all" -ge 2 ] || die "needs 2 cores (server and load on different cores); found $nproc_all"

if [ "${LOAD_SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --quiet -p anomalyd --bin anomalyd --example baseline_server)
fi
[ -x "$ANOMALYD" ] || die "missing $ANOMALYD"
[ -x "$BASELINE" ] || die "missing $BASELINE"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/anomalyd-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------

# start_server NAME CMD...: starts CMD pinned to SERVER_CPU; sets SERVER_PID
# and SERVER_ADDR from its first stdout line `listening on ADDR`.
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local line="" i
    for i in $(seq 1 200); do
        line=$(head -n1 "$TMP/$name.out" 2>/dev/null || true)
        [[ $line == "listening on "* ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/$name.err" >&2; die "$name exited at start-up"; }
        sleep 0.05
    done
    [[ $line == "listening on "* ]] || die "$name did not print its address"
    SERVER_ADDR=${line#listening on }
}

stop_server() { # uses SERVER_PID
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# cpu_ticks PID: utime+stime of the whole process (all threads), in ticks.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # drop "pid (comm) ": the next field is field 3 (state)
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

write_config() { # write_config FILE EXTRA_TOML
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:0"
$2
[log]
anomaly_log_file = "$TMP/anomalies.log"
EOF
}

# --- wrk scripts ---------------------------------------------------------------

# Values cycle through a narrow deterministic pattern (50 + 0..10 + 0..0.75),
# so after warm-up every point gets a verdict and none is an anomaly: the
# steady "normal traffic" path, with no anomaly log writes.
common_lua='
local series = tonumber(os.getenv("LOAD_SERIES") or "100")
local function point(i)
  local value = 50 + (i * 7) % 11 + 0.25 * (i % 4)
  return string.format("{\"value\": %.2f, \"series\": \"s%d\"}", value, i % series)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
'
cat >"$TMP/single.lua" <<EOF
$common_lua
-- 1,000 precomputed requests, cycled: ${SERIES} series, values varying.
local reqs = {}
for i = 0, 999 do
  reqs[i + 1] = wrk.format("POST", "/detect", {["Content-Type"] = "application/json"}, point(i))
end
local n = 0
function request()
  n = n % #reqs + 1
  return reqs[n]
end
EOF
cat >"$TMP/batch.lua" <<EOF
$common_lua
-- One NDJSON body of ${BATCH_POINTS} points over ${SERIES} series.
local lines = {}
for i = 0, ${BATCH_POINTS} - 1 do
  lines[i + 1] = point(i)
end
wrk.method = "POST"
wrk.path = "/detect"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.body = table.concat(lines, "\n") .. "\n"
EOF
export LOAD_SERIES=$SERIES

# bench NAME PID ADDR WORKLOAD CONNS DURATION: one wrk run against a server;
# prints "req_per_s cpu_us_per_req cpu_pct p50_us p99_us".
bench() {
    local name=$1 pid=$2 workload=$4 conns=$5 duration=$6 url="http://$3/detect"
    local out="$TMP/$name-$workload-$duration.txt"
    local before after
    before=$(cpu_ticks "$pid")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$duration" --timeout 5s -s "$TMP/$workload.lua" "$url" >"$out"
    after=$(cpu_ticks "$pid")
    local result
    result=$(grep '^RESULT ' "$out") || { cat "$out" >&2; die "wrk gave no result"; }
    get() { sed -n "s/.* $1=\([0-9-]*\).*/\1/p" <<<"$result"; }
    local requests duration_us non2xx socket_errors p50 p99
    requests=$(get requests) duration_us=$(get duration_us) non2xx=$(get non2xx)
    socket_errors=$(get socket_errors) p50=$(get p50_us) p99=$(get p99_us)
    if [ "$non2xx" -gt 0 ] || [ "$socket_errors" -gt 0 ]; then
        cat "$out" >&2
        die "$name/$workload: $non2xx non-2xx replies, $socket_errors socket errors"
    fi
    [ "$requests" -gt 0 ] || die "$name/$workload: no requests completed"
    awk -v r="$requests" -v d="$duration_us" -v t=$((after - before)) -v hz="$CLK_TCK" -v p50="$p50" -v p99="$p99" \
        'BEGIN { cpu_s = t / hz; printf "%.1f %.3f %.1f %d %d\n", r / (d / 1e6), cpu_s * 1e6 / r, 100 * cpu_s / (d / 1e6), p50, p99 }'
}

# median COLUMN LINES: the median of one column of the runs' result lines.
median() {
    awk -v c="$1" 'NF {print $c}' <<<"$2" | sort -g | awk '{v[NR] = $1} END { printf "%s", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- throughput and CPU -----------------------------------------------------

# Both servers run side by side on the same core (an idle one costs nothing)
# and the measured runs alternate between them, so drift of the machine
# affects both alike; the summary shows the median of the runs.
declare -A R
# The detector settings of every figure since [1/5] (the built-in defaults
# until [8/11]; keys every version knows), so that runs of different
# commits compare.
write_config "$TMP/anomalyd.toml" "[detector]
window_size = 30
threshold_multiplier = 3.0
direction = \"upper\""
if [ "$RUNS" -eq 0 ]; then
    # Memory figures only: the idle RSS still comes from a fresh anomalyd.
    start_server anomalyd "$ANOMALYD" --config "$TMP/anomalyd.toml"
    sleep 0.5
    IDLE_RSS=$(rss_kib "$SERVER_PID")
    stop_server
else
    start_server baseline "$BASELINE" --listen 127.0.0.1:0
    B_PID=$SERVER_PID B_ADDR=$SERVER_ADDR
    start_server anomalyd "$ANOMALYD" --config "$TMP/anomalyd.toml"
    A_PID=$SERVER_PID A_ADDR=$SERVER_ADDR
    sleep 0.5
    IDLE_RSS=$(rss_kib "$A_PID")
    log "servers pinned to CPU $SERVER_CPU (baseline pid $B_PID, anomalyd pid $A_PID), wrk to CPU $LOAD_CPU"

    for w in single batch; do
        conns=$CONNS
        [ "$w" = batch ] && conns=$BATCH_CONNS
        if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
            bench baseline "$B_PID" "$B_ADDR" "$w" "$conns" "$WARMUP" >/dev/null
            bench anomalyd "$A_PID" "$A_ADDR" "$w" "$conns" "$WARMUP" >/dev/null
        fi
        for run in $(seq 1 "$RUNS"); do
            log "$w run $run/$RUNS: baseline, then anomalyd (wrk -t1 -c$conns -d$DURATION)"
            line=$(bench baseline "$B_PID" "$B_ADDR" "$w" "$conns" "$DURATION")
            R[baseline,$w]+="$line"$'\n'
            line=$(bench anomalyd "$A_PID" "$A_ADDR" "$w" "$conns" "$DURATION")
            R[anomalyd,$w]+="$line"$'\n'
        done
    done
    SERVER_PID=$B_PID stop_server
    SERVER_PID=$A_PID stop_server
fi

# --- memory -------------------------------------------------------------------

MEM_LINE=""
if [ "$MEM_SERIES" -gt 0 ]; then
    write_config "$TMP/mem.toml" "max_series = $((MEM_SERIES * 2))
[detector]
detector = \"$MEM_DETECTOR\"
window_size = $MEM_WINDOW"
    log "memory: anomalyd with $MEM_SERIES series x $MEM_WINDOW points ($MEM_DETECTOR)"
    start_server mem "$ANOMALYD" --config "$TMP/mem.toml"
    sleep 0.5
    MEM_IDLE=$(rss_kib "$SERVER_PID")
    cat >"$TMP/feed.py" <<'EOF'
"""Fills anomalyd with SERIES series of WINDOW points each (NDJSON batches)."""
import http.client, sys, time

host, port = sys.argv[1].rsplit(":", 1)
series, window, block = int(sys.argv[2]), int(sys.argv[3]), 5000
conn = http.client.HTTPConnection(host, int(port))
headers = {"Content-Type": "application/x-ndjson"}
points = 0
start = time.monotonic()
for first in range(0, series, block):
    # One template per block of series; each round only changes the value.
    template = "".join(
        '{"value": VVV, "series": "m%d"}\n' % i for i in range(first, min(first + block, series))
    ).encode()
    for r in range(window):
        body = template.replace(b"VVV", b"%d.5" % (40 + r % 7))
        conn.request("POST", "/detect", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            sys.exit(f"feed: HTTP {resp.status}: {data[:300]!r}")
        points += body.count(b"\n")
elapsed = time.monotonic() - start
print(f"{points} {elapsed:.2f}")
EOF
    read -r MEM_POINTS MEM_SECS < <(taskset -c "$LOAD_CPU" python3 "$TMP/feed.py" "$SERVER_ADDR" "$MEM_SERIES" "$MEM_WINDOW")
    sleep 0.5
    MEM_FULL=$(rss_kib "$SERVER_PID")
    MEM_HWM=$(hwm_kib "$SERVER_PID")
    stop_server
fi

# --- summary --------------------------------------------------------------------

field() { median "$2" "${R[$1]}"; }
mark() { # mark VALUE OP LIMIT
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; print ok ? "PASS" : "FAIL" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

if [ "$RUNS" -gt 0 ]; then
    echo
    echo "anomalyd load benchmark: server on CPU $SERVER_CPU, wrk -t1 on CPU $LOAD_CPU, $DURATION per run, $SERIES series"
    echo
    printf '%-18s %12s %12s %9s %9s %9s   %s\n' "median of $RUNS" "req/s" "CPU us/req" "srv CPU%" "p50 us" "p99 us" "req/s of each run"
    for w in single batch; do
        for s in baseline anomalyd; do
            printf '%-18s %12s %12s %9s %9s %9s   %s\n' "$s $w" "$(field "$s,$w" 1)" "$(field "$s,$w" 2)" \
                "$(field "$s,$w" 3)" "$(field "$s,$w" 4)" "$(field "$s,$w" 5)" "$(awk '{printf "%s ", $1}' <<<"${R[$s,$w]}")"
        done
    done
    busy=$(for k in "${!R[@]}"; do awk 'NF && $3 < 90 {n++} END {print n + 0}' <<<"${R[$k]}"; done | awk '{n += $1} END {print n}')
    if [ "$busy" -gt 0 ]; then
        echo "WARNING: in $busy run(s) the server used < 90% of its core: something else was running"
        echo "         on CPU $SERVER_CPU or CPU $LOAD_CPU; req/s figures are unreliable (CPU us/req less so)."
    fi
    echo
    s_ratio=$(ratio "$(field anomalyd,single 1)" "$(field baseline,single 1)")
    c_ratio=$(ratio "$(field anomalyd,single 2)" "$(field baseline,single 2)")
    b_ratio=$(ratio "$(field anomalyd,batch 1)" "$(field baseline,batch 1)")
    bc_ratio=$(ratio "$(field anomalyd,batch 2)" "$(field baseline,batch 2)")
    pps_a=$(awk -v r="$(field anomalyd,batch 1)" -v n=$BATCH_POINTS 'BEGIN { printf "%.0f", r * n }')
    pps_b=$(awk -v r="$(field baseline,batch 1)" -v n=$BATCH_POINTS 'BEGIN { printf "%.0f", r * n }')
    ns_a=$(awk -v c="$(field anomalyd,batch 2)" -v n=$BATCH_POINTS 'BEGIN { printf "%.0f", c * 1000 / n }')
    ns_b=$(awk -v c="$(field baseline,batch 2)" -v n=$BATCH_POINTS 'BEGIN { printf "%.0f", c * 1000 / n }')
    printf '%-52s %14s  %s\n' "single points: req/s anomalyd/baseline (goal >= 0.8x)" "${s_ratio}x" "$(mark "$s_ratio" ">=" 0.8)"
    printf '%-52s %14s  %s\n' "single points: CPU/req anomalyd/baseline (goal <= 1.25x)" "${c_ratio}x" "$(mark "$c_ratio" "<=" 1.25)"
    printf '%-52s %14s\n' "NDJSON batches: req/s anomalyd/baseline" "${b_ratio}x"
    printf '%-52s %14s\n' "NDJSON batches: CPU/req anomalyd/baseline" "${bc_ratio}x"
    printf '%-52s %14s  %s\n' "NDJSON points/s anomalyd, one core (goal >= 3M)" "$pps_a" "$(mark "$pps_a" ">=" 3000000)"
    printf '%-52s %14s\n' "NDJSON points/s baseline (parse only)" "$pps_b"
    printf '%-52s %14s\n' "NDJSON CPU ns/point anomalyd | baseline" "$ns_a | $ns_b"
fi
idle_mib=$(awk -v k="$IDLE_RSS" 'BEGIN { printf "%.1f", k / 1024 }')
printf '%-52s %14s  %s\n' "idle RSS MiB, fresh anomalyd (goal <= 10)" "$idle_mib" "$(mark "$idle_mib" "<=" 10)"
if [ -n "${MEM_FULL:-}" ]; then
    full_mib=$(awk -v k="$MEM_FULL" 'BEGIN { printf "%.1f", k / 1024 }')
    hwm_mib=$(awk -v k="$MEM_HWM" 'BEGIN { printf "%.1f", k / 1024 }')
    idle2_mib=$(awk -v k="$MEM_IDLE" 'BEGIN { printf "%.1f", k / 1024 }')
    printf '%-52s %14s  %s\n' "RSS MiB, $MEM_SERIES series x window $MEM_WINDOW, $MEM_DETECTOR (goal <= 400)" "$full_mib" "$(mark "$full_mib" "<=" 400)"
    printf '%-52s %14s\n' "  (idle before: MiB; peak VmHWM: MiB)" "$idle2_mib; $hwm_mib"
    printf '%-52s %14s\n' "  fill: points, seconds, points/s (python feeder)" \
        "$MEM_POINTS, $MEM_SECS, $(awk -v p="$MEM_POINTS" -v s="$MEM_SECS" 'BEGIN { printf "%.0f", p / s }')"
fi
