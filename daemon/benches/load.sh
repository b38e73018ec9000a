#!/usr/bin/env bash
# Load benchmark: anomalyd `POST /detect`, `POST /api/v1/write` and `POST
# /api/v2/write` against a minimal hyper server that only parses the same
# formats (daemon/examples/baseline_server.rs); anomalyd with unreachable
# alert sinks against anomalyd without; plus the memory figures (idle RSS,
# RSS with 1,000,000 full series, for 16-byte and Prometheus-style names).
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
#   LOAD_SERIES [100]       distinct series in the wrk and load_client workloads
#   LOAD_WORKLOADS [single batch ts rw lp]  which workloads to run (see README)
#   LOAD_NAMES [short]      series names of ts/rw/lp: short (s17) or prometheus
#   LOAD_SINKS [1]          1 = also run anomalyd with unreachable alert sinks
#                           on the ts workload (0 = skip)
#   MEM_SERIES [1000000]    series for the memory run (0 = skip it)
#   MEM_WINDOW [30]         window_size for the memory run
#   MEM_DETECTOR [moving_average]  detector for the memory run (the goal
#                           applies to moving_average)
#   MEM_NAMES [16 prometheus]  name shapes of the memory runs: 16 (16-byte
#                           names), short (m0, m1, ...: the [1/5] feeder),
#                           prometheus (node_cpu_seconds_total{cpu=...,...})
#   SNAP_SERIES [1000000]   series for the state-snapshot run (0 = skip it)
#   SNAP_RUNS [3]           single-point runs per server in the snapshot run
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
WORKLOADS=${LOAD_WORKLOADS:-single batch ts rw lp}
NAMES=${LOAD_NAMES:-short}
SINKS=${LOAD_SINKS:-1}
MEM_NAMES=${MEM_NAMES:-16 prometheus}
SNAP_SERIES=${SNAP_SERIES:-1000000}
SNAP_RUNS=${SNAP_RUNS:-3}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ANOMALYD=$TARGET_DIR/release/anomalyd
BASELINE=$TARGET_DIR/release/examples/baseline_server
CLIENT=$TARGET_DIR/release/examples/load_client
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
    (cd "$ROOT" && cargo build --release --quiet -p anomalyd --bin anomalyd --example baseline_server --example load_client)
fi
[ -x "$ANOMALYD" ] || die "missing $ANOMALYD"
[ -x "$BASELINE" ] || die "missing $BASELINE"
[ -x "$CLIENT" ] || die "missing $CLIENT"

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

# The anomaly log goes to a directory of its own, as /var/log/anomalyd is:
# anomalyd watches its configuration's directory, and a log written there
# would wake the watcher at every write.
write_config() { # write_config FILE EXTRA_TOML
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:0"
$2
[log]
anomaly_log_file = "$TMP/log/anomalies.log"
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

# bench NAME PID ADDR WORKLOAD CONNS DURATION: one run against a server
# (wrk for single and batch; load_client, which makes every body new, for
# ts, rw and lp); prints "req_per_s cpu_us_per_req cpu_pct p50_us p99_us
# values_per_s cpu_ns_per_value".
bench() {
    local name=$1 pid=$2 workload=$4 conns=$5 duration=$6 url="http://$3/detect"
    local out="$TMP/$name-$workload-$duration.txt"
    local before after format=""
    case $workload in
        ts) format=ndjson ;;
        rw) format=remote-write ;;
        lp) format=influx ;;
    esac
    before=$(cpu_ticks "$pid")
    if [ -n "$format" ]; then
        taskset -c "$LOAD_CPU" "$CLIENT" --addr "$3" --format "$format" --connections "$conns" \
            --duration "${duration%s}" --series "$SERIES" --names "$NAMES" >"$out"
    else
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$duration" --timeout 5s -s "$TMP/$workload.lua" "$url" >"$out"
    fi
    after=$(cpu_ticks "$pid")
    local result
    result=$(grep '^RESULT ' "$out") || { cat "$out" >&2; die "wrk gave no result"; }
    get() { sed -n "s/.* $1=\([0-9-]*\).*/\1/p" <<<"$result"; }
    local requests duration_us non2xx socket_errors p50 p99 values
    requests=$(get requests) duration_us=$(get duration_us) non2xx=$(get non2xx)
    socket_errors=$(get socket_errors) p50=$(get p50_us) p99=$(get p99_us) values=$(get values)
    if [ -z "$values" ]; then
        values=$requests
        [ "$workload" = batch ] && values=$((requests * BATCH_POINTS))
    fi
    if [ "$non2xx" -gt 0 ] || [ "$socket_errors" -gt 0 ]; then
        cat "$out" >&2
        die "$name/$workload: $non2xx non-2xx replies, $socket_errors socket errors"
    fi
    [ "$requests" -gt 0 ] || die "$name/$workload: no requests completed"
    awk -v r="$requests" -v d="$duration_us" -v t=$((after - before)) -v hz="$CLK_TCK" -v p50="$p50" -v p99="$p99" -v n="$values" \
        'BEGIN { cpu_s = t / hz; printf "%.1f %.3f %.1f %d %d %.0f %.1f\n", r / (d / 1e6), cpu_s * 1e6 / r, 100 * cpu_s / (d / 1e6), p50, p99, n / (d / 1e6), cpu_s * 1e9 / n }'
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
    S_PID="" S_ADDR=""
    if [ "$SINKS" = 1 ] && [[ " $WORKLOADS " == *" ts "* ]]; then
        # The same anomalyd with an Alertmanager and a webhook that nobody
        # listens to: every episode is queued, every send fails.
        dead=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        write_config "$TMP/sinks.toml" "[detector]
window_size = 30
threshold_multiplier = 3.0
direction = \"upper\"
[[alert.alertmanager]]
url = \"http://127.0.0.1:$dead\"
[[alert.webhook]]
url = \"http://127.0.0.1:$dead/hook\""
        sed -i "s|anomalies.log|anomalies-sinks.log|" "$TMP/sinks.toml"
        start_server sinks "$ANOMALYD" --config "$TMP/sinks.toml"
        S_PID=$SERVER_PID S_ADDR=$SERVER_ADDR
    fi
    sleep 0.5
    IDLE_RSS=$(rss_kib "$A_PID")
    log "servers pinned to CPU $SERVER_CPU (baseline pid $B_PID, anomalyd pid $A_PID${S_PID:+, with sinks pid $S_PID}), load to CPU $LOAD_CPU"

    for w in $WORKLOADS; do
        conns=$BATCH_CONNS
        [ "$w" = single ] && conns=$CONNS
        servers="baseline anomalyd"
        [ "$w" = ts ] && [ -n "$S_PID" ] && servers="baseline anomalyd sinks"
        for run in $(seq 0 "$RUNS"); do
            if [ "$run" -eq 0 ]; then
                { [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; } || continue
                log "$w: warm-up ($servers)"
            else
                log "$w run $run/$RUNS: $servers in turn ($conns connections, $DURATION)"
            fi
            order=$servers
            # anomalyd with and without sinks swap places every other run,
            # so that neither always runs right after the other.
            if [ $((run % 2)) -eq 0 ] && [[ $servers == *sinks* ]]; then
                order="baseline sinks anomalyd"
            fi
            for s in $order; do
                case $s in
                    baseline) pid=$B_PID addr=$B_ADDR ;;
                    anomalyd) pid=$A_PID addr=$A_ADDR ;;
                    sinks) pid=$S_PID addr=$S_ADDR ;;
                esac
                if [ "$run" -eq 0 ]; then
                    bench "$s" "$pid" "$addr" "$w" "$conns" "$WARMUP" >/dev/null
                else
                    line=$(bench "$s" "$pid" "$addr" "$w" "$conns" "$DURATION")
                    R[$s,$w]+="$line"$'\n'
                fi
            done
        done
    done
    if [ -n "$S_PID" ]; then
        S_DROPPED=$(python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics").read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("anomalyd_notifications_dropped_total"))))
' "$S_ADDR")
        SERVER_PID=$S_PID stop_server
    fi
    SERVER_PID=$B_PID stop_server
    SERVER_PID=$A_PID stop_server
fi

# --- memory -------------------------------------------------------------------

cat >"$TMP/feed.py" <<'EOF'
"""Fills anomalyd with SERIES series of WINDOW points each (NDJSON batches).

Names: "short" (m0, m1, ...), "16" (16 bytes each: series-000000001) or
"prometheus" (node_cpu_seconds_total{cpu="3",instance="web-0142:9100",
job="node",mode="idle"}: 8 modes x 64 cpus per instance, about 80 bytes).
"""
import http.client, json, sys, time

host, port = sys.argv[1].rsplit(":", 1)
series, window, shape, block = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], 5000
MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"]

def name(i):
    if shape == "short":
        return "m%d" % i
    if shape == "16":
        return "series-%09d" % i
    return 'node_cpu_seconds_total{cpu="%d",instance="web-%04d:9100",job="node",mode="%s"}' % (
        i // 8 % 64, i // 512, MODES[i % 8])

conn = http.client.HTTPConnection(host, int(port))
headers = {"Content-Type": "application/x-ndjson"}
points = 0
start = time.monotonic()
for first in range(0, series, block):
    # One template per block of series; each round only changes the value.
    template = "".join(
        '{"value": VVV, "series": %s}\n' % json.dumps(name(i)) for i in range(first, min(first + block, series))
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

declare -A MEM
if [ "$MEM_SERIES" -gt 0 ]; then
    write_config "$TMP/mem.toml" "max_series = $((MEM_SERIES * 2))
[detector]
detector = \"$MEM_DETECTOR\"
window_size = $MEM_WINDOW"
    for shape in $MEM_NAMES; do
        log "memory: anomalyd with $MEM_SERIES series x $MEM_WINDOW points ($MEM_DETECTOR, $shape names)"
        start_server mem "$ANOMALYD" --config "$TMP/mem.toml"
        sleep 0.5
        idle=$(rss_kib "$SERVER_PID")
        read -r points secs < <(taskset -c "$LOAD_CPU" python3 "$TMP/feed.py" "$SERVER_ADDR" "$MEM_SERIES" "$MEM_WINDOW" "$shape")
        # The steady state: within 10 s of the table's last change the
        # daemon returns what the table's growth left freed to the kernel.
        sleep 11
        MEM[$shape]="$(rss_kib "$SERVER_PID") $(hwm_kib "$SERVER_PID") $idle $points $secs"
        stop_server
        rm -f "$TMP/log/anomalies.log"
    done
fi

# --- state snapshots ------------------------------------------------------------

# One anomalyd with SNAP_SERIES full series (window 30, 16-byte names).
# Single-point runs alternate between a snapshot every second (a write
# takes most of that second at a million series, so most requests meet
# one) and none (snapshot_interval = "1d"), switched by editing the config
# (hot reload): the p99 with snapshots against the p99 without, on the same
# table. Then it is stopped (its final snapshot) and started again: the
# restore time and the RSS after it.
metric_of() { # metric_of ADDR NAME
    python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics").read().decode()
print(next(l.split()[-1] for l in text.splitlines() if l.startswith(sys.argv[2] + " ")))
' "$1" "$2"
}
snap_config() { # snap_config INTERVAL: (re)writes the config, atomically
    write_config "$TMP/snap.toml.new" "max_series = $((SNAP_SERIES * 2))
[detector]
window_size = 30
threshold_multiplier = 3.0
direction = \"upper\"
[state]
directory = \"$TMP/state\"
snapshot_interval = \"$1\""
    mv "$TMP/snap.toml.new" "$TMP/snap.toml"
}
snap_interval() { # snap_interval INTERVAL: reloads the running daemon with it
    local before
    before=$(metric_of "$SERVER_ADDR" 'anomalyd_config_reloads_total{result="success"}')
    snap_config "$1"
    for _ in $(seq 1 100); do
        [ "$(metric_of "$SERVER_ADDR" 'anomalyd_config_reloads_total{result="success"}')" != "$before" ] && return 0
        sleep 0.1
    done
    die "anomalyd did not reload its snapshot_interval"
}
declare -A SNAP
if [ "$SNAP_SERIES" -gt 0 ]; then
    snap_config 1d
    log "snapshots: filling anomalyd with $SNAP_SERIES series x 30 points"
    start_server snap "$ANOMALYD" --config "$TMP/snap.toml"
    SNAP_PID=$SERVER_PID
    taskset -c "$LOAD_CPU" python3 "$TMP/feed.py" "$SERVER_ADDR" "$SNAP_SERIES" 30 16 >/dev/null
    bench snap "$SNAP_PID" "$SERVER_ADDR" single "$CONNS" "$WARMUP" >/dev/null
    for run in $(seq 1 "$SNAP_RUNS"); do
        for mode in on off; do
            if [ "$mode" = on ]; then
                snap_interval 1s
                # A snapshot of the whole table is under way or done.
                for _ in $(seq 1 100); do
                    [ "$(metric_of "$SERVER_ADDR" anomalyd_snapshot_series)" -ge "$SNAP_SERIES" ] && break
                    sleep 0.1
                done
            else
                snap_interval 1d
                sleep 3 # the write under way, if any, finishes
            fi
            log "snapshots run $run/$SNAP_RUNS: single points, snapshots $mode"
            SNAP[$mode,runs]+="$(bench snap "$SNAP_PID" "$SERVER_ADDR" single "$CONNS" "$DURATION")"$'\n'
        done
    done
    SNAP[write_s]=$(metric_of "$SERVER_ADDR" anomalyd_snapshot_duration_seconds)
    SNAP[bytes]=$(metric_of "$SERVER_ADDR" anomalyd_snapshot_bytes)
    SNAP[series]=$(metric_of "$SERVER_ADDR" anomalyd_snapshot_series)
    SNAP[rss_before]=$(rss_kib "$SNAP_PID")
    stop_server
    SNAP[final]=$(sed -n 's/.*State snapshot written for the next start.* seconds=\([0-9.]*\).*/\1/p' "$TMP/snap.err")
    log "snapshots: restarting anomalyd on its snapshot"
    start_server snap-restart "$ANOMALYD" --config "$TMP/snap.toml"
    for _ in $(seq 1 600); do
        grep -q "State snapshot restored" "$TMP/snap-restart.err" && break
        sleep 0.1
    done
    SNAP[restore]=$(sed -n 's/.*State snapshot restored.* seconds=\([0-9.]*\).*/\1/p' "$TMP/snap-restart.err")
    SNAP[restored]=$(sed -n 's/.*State snapshot restored.* restored=\([0-9]*\).*/\1/p' "$TMP/snap-restart.err")
    sleep 11
    SNAP[rss_after]=$(rss_kib "$SERVER_PID")
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
    echo "anomalyd load benchmark: server on CPU $SERVER_CPU, load on CPU $LOAD_CPU, $DURATION per run, $SERIES series, $NAMES names"
    echo
    printf '%-18s %11s %11s %8s %8s %8s %11s %8s   %s\n' "median of $RUNS" "req/s" "CPU us/req" "srv CPU%" "p50 us" "p99 us" "values/s" "CPU ns/v" "values/s of each run"
    for w in $WORKLOADS; do
        for s in baseline anomalyd sinks; do
            [ -n "${R[$s,$w]:-}" ] || continue
            printf '%-18s %11s %11s %8s %8s %8s %11s %8s   %s\n' "$s $w" "$(field "$s,$w" 1)" "$(field "$s,$w" 2)" \
                "$(field "$s,$w" 3)" "$(field "$s,$w" 4)" "$(field "$s,$w" 5)" "$(field "$s,$w" 6)" "$(field "$s,$w" 7)" \
                "$(awk '{printf "%s ", $6}' <<<"${R[$s,$w]}")"
        done
    done
    busy=$(for k in "${!R[@]}"; do awk 'NF && $3 < 90 {n++} END {print n + 0}' <<<"${R[$k]}"; done | awk '{n += $1} END {print n}')
    if [ "$busy" -gt 0 ]; then
        echo "NOTE: in $busy run(s) the server used < 90% of its core: the load client was the limit, or"
        echo "      something else ran on CPU $SERVER_CPU or CPU $LOAD_CPU; compare CPU ns/value there, not values/s."
    fi
    echo
    has() { [ -n "${R[anomalyd,$1]:-}" ]; }
    if has single; then
        s_ratio=$(ratio "$(field anomalyd,single 1)" "$(field baseline,single 1)")
        c_ratio=$(ratio "$(field anomalyd,single 2)" "$(field baseline,single 2)")
        printf '%-60s %14s  %s\n' "single points: req/s anomalyd/baseline (goal >= 0.8x)" "${s_ratio}x" "$(mark "$s_ratio" ">=" 0.8)"
        printf '%-60s %14s  %s\n' "single points: CPU/req anomalyd/baseline (goal <= 1.25x)" "${c_ratio}x" "$(mark "$c_ratio" "<=" 1.25)"
    fi
    # goal_line WORKLOAD LABEL GOAL: values/s, its ratio to the baseline
    # (parse only) and the CPU per value of both.
    goal_line() {
        local w=$1 label=$2 goal=$3
        has "$w" || return 0
        local a b
        a=$(field "anomalyd,$w" 6) b=$(field "baseline,$w" 6)
        printf '%-60s %14s  %s\n' "$label/s (goal >= $((goal / 1000000))M)" "$a" "$(mark "$a" ">=" "$goal")"
        printf '%-60s %14s\n' "  ratio to the parse-only baseline ($b/s)" "$(ratio "$a" "$b")x"
        printf '%-60s %14s\n' "  CPU ns per value anomalyd | baseline" "$(field "anomalyd,$w" 7) | $(field "baseline,$w" 7)"
    }
    goal_line batch "NDJSON points, no timestamps ([1/5] shape)" 3000000
    goal_line ts "NDJSON points, timestamps+seq, 1% anomalies" 5000000
    goal_line rw "remote-write samples" 2000000
    goal_line lp "line-protocol fields" 3000000
    if [ -n "${R[sinks,ts]:-}" ]; then
        k_ratio=$(ratio "$(field sinks,ts 6)" "$(field anomalyd,ts 6)")
        printf '%-60s %14s  %s\n' "ts with unreachable sinks / without (goal >= 0.95x)" "${k_ratio}x" "$(mark "$k_ratio" ">=" 0.95)"
        printf '%-60s %14s\n' "  CPU ns per point with sinks | without" "$(field sinks,ts 7) | $(field anomalyd,ts 7)"
        printf '%-60s %14s\n' "  notifications the unreachable sinks dropped" "${S_DROPPED:-?}"
    fi
fi
idle_mib=$(awk -v k="$IDLE_RSS" 'BEGIN { printf "%.1f", k / 1024 }')
printf '%-60s %14s  %s\n' "idle RSS MiB, fresh anomalyd (goal <= 10)" "$idle_mib" "$(mark "$idle_mib" "<=" 10)"
for shape in $MEM_NAMES; do
    [ -n "${MEM[$shape]:-}" ] || continue
    read -r full hwm idle points secs <<<"${MEM[$shape]}"
    full_mib=$(awk -v k="$full" 'BEGIN { printf "%.1f", k / 1024 }')
    goal=400
    [ "$shape" = prometheus ] && goal=500
    printf '%-60s %14s  %s\n' "RSS MiB, $MEM_SERIES series x window $MEM_WINDOW, $shape names (goal <= $goal)" "$full_mib" "$(mark "$full_mib" "<=" "$goal")"
    printf '%-60s %14s\n' "  (idle before: MiB; peak VmHWM: MiB)" \
        "$(awk -v k="$idle" 'BEGIN { printf "%.1f", k / 1024 }'); $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
    printf '%-60s %14s\n' "  fill: points, seconds, points/s (python feeder)" \
        "$points, $secs, $(awk -v p="$points" -v s="$secs" 'BEGIN { printf "%.0f", p / s }')"
done
if [ -n "${SNAP[on,runs]:-}" ]; then
    mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
    echo
    echo "state snapshots: ${SNAP[series]} series x window 30 (16-byte names); single points, median of $SNAP_RUNS"
    printf '%-60s %14s\n' "snapshot size MiB" "$(mib "${SNAP[bytes]}")"
    printf '%-60s %14s\n' "snapshot write seconds (periodic, under load | final)" "${SNAP[write_s]} | ${SNAP[final]:-?}"
    printf '%-60s %14s\n' "restore seconds at start (series restored)" "${SNAP[restore]:-?} (${SNAP[restored]:-?})"
    printf '%-60s %14s\n' "RSS MiB before the restart | after the restore" \
        "$(awk -v k="${SNAP[rss_before]}" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k="${SNAP[rss_after]}" 'BEGIN { printf "%.1f", k / 1024 }')"
    for mode in on off; do
        printf '%-60s %14s   p99 of each run: %s\n' "single points, snapshots $mode: req/s, p50 | p99 us" \
            "$(median 1 "${SNAP[$mode,runs]}"), $(median 4 "${SNAP[$mode,runs]}") | $(median 5 "${SNAP[$mode,runs]}")" \
            "$(awk '{printf "%s ", $5}' <<<"${SNAP[$mode,runs]}")"
    done
    printf '%-60s %14s\n' "  p99 with snapshots / without" \
        "$(ratio "$(median 5 "${SNAP[on,runs]}")" "$(median 5 "${SNAP[off,runs]}")")x"
fi
