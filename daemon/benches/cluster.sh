#!/usr/bin/env bash
# Cluster throughput ([11/11]): points per second that 1, 2 and 3 members
# sharing the series through NATS JetStream take in and apply, against the
# direct HTTP path of one daemon, in the same run on this machine.
#
# The load is load_client's NDJSON shape (timestamps, seq, about one point
# in 83 a spike), posted to the first member. A cluster figure counts from
# the first post until every accepted point has been applied by its owner
# (the sum of anomalyd_points_received_total over the members), so it is
# the rate the cluster sustains, not the rate posts are acknowledged. CPU is
# that of every process involved (members and nats-server) per point.
#
# On 2 cores the members share the cores with nats-server and the client:
# the figures show the cost per point of the NATS path, not scaling.
#
# Environment:
#   CLUSTER_DURATION [10]     seconds of posting per run
#   CLUSTER_RUNS [3]          runs per configuration (the median is shown)
#   CLUSTER_CONNECTIONS [8]   client connections
#   CLUSTER_SERIES [1000]     distinct series
#   CLUSTER_PARTITIONS [64]   [cluster] partitions
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${CLUSTER_DURATION:-10}
RUNS=${CLUSTER_RUNS:-3}
CONNECTIONS=${CLUSTER_CONNECTIONS:-8}
SERIES=${CLUSTER_SERIES:-1000}
PARTITIONS=${CLUSTER_PARTITIONS:-64}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ANOMALYD=$TARGET_DIR/release/anomalyd
CLIENT=$TARGET_DIR/release/examples/load_client
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "== $*" >&2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

if ! command -v nats-server >/dev/null; then
    log "installing nats-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
log "building"
(cd "$ROOT" && cargo build --release --quiet -p anomalyd --bin anomalyd --example load_client)
CLK_TCK=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { # utime+stime of a process
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}
metric_sum() { # NAME ADDR...: the sum of one unlabelled or labelled sample over members
    local name=$1 total=0 value
    shift
    for addr in "$@"; do
        value=$(curl -s "http://$addr/metrics" | awk -v n="$name" '$1 == n {print $2}')
        total=$(awk -v a="$total" -v b="${value:-0}" 'BEGIN {printf "%.0f", a + b}')
    done
    echo "$total"
}

NATS_PORT=$(free_port)
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.05
done

# start_member DIR [CLUSTER_TOML]: starts anomalyd; sets MEMBER_PID, MEMBER_ADDR.
start_member() {
    local dir=$1 cluster=${2:-}
    mkdir -p "$dir"
    cat >"$dir/anomalyd.toml" <<EOF
[server]
listen = "127.0.0.1:0"
max_body_bytes = 16777216
[detector]
window_size = 30
threshold_multiplier = 3.0
direction = "upper"
[log]
anomaly_log_file = "$dir/anomalies.log"
$cluster
EOF
    "$ANOMALYD" --config "$dir/anomalyd.toml" >"$dir/out" 2>"$dir/err" &
    MEMBER_PID=$!
    PIDS+=("$MEMBER_PID")
    local line=""
    for _ in $(seq 1 200); do
        line=$(head -n1 "$dir/out" 2>/dev/null || true)
        [[ $line == "listening on "* ]] && break
        sleep 0.05
    done
    [[ $line == "listening on "* ]] || { cat "$dir/err" >&2; die "anomalyd did not start"; }
    MEMBER_ADDR=${line#listening on }
}

# run_client ADDR: posts for DURATION; prints the points answered 2xx.
run_client() {
    local out=$TMP/client.txt
    "$CLIENT" --addr "$1" --format ndjson --connections "$CONNECTIONS" \
        --duration "$DURATION" --series "$SERIES" >"$out"
    local result
    result=$(grep '^RESULT ' "$out") || die "load_client gave no result"
    [[ $result == *" non2xx=0 "* ]] || die "refused posts: $result"
    sed -n 's/.* values=\([0-9]*\).*/\1/p' <<<"$result"
}

median() { sort -g | awk '{v[NR] = $1} END { printf "%s", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure MEMBERS RUN: one run; prints "points_per_s cpu_ns_per_point".
measure() {
    local members=$1 run=$2 addrs=() pids=() i
    if [ "$members" -eq 0 ]; then
        start_member "$TMP/direct-$run"
        addrs=("$MEMBER_ADDR") pids=("$MEMBER_PID")
    else
        for i in $(seq 1 "$members"); do
            start_member "$TMP/c$members-$run-$i" "[cluster]
nats_url = \"nats://127.0.0.1:$NATS_PORT\"
subject_prefix = \"bench$members-$run\"
partitions = $PARTITIONS
instance_id = \"member-$i\""
            addrs+=("$MEMBER_ADDR") pids+=("$MEMBER_PID")
        done
        local deadline=$((SECONDS + 60))
        until [ "$(metric_sum anomalyd_cluster_partitions_owned "${addrs[@]}")" -eq "$PARTITIONS" ]; do
            [ $SECONDS -lt $deadline ] || die "the members did not take every partition"
            sleep 0.2
        done
        # Let the balance settle (a member releases what it holds over its share).
        sleep 3
        pids+=("$NATS_PID")
    fi
    local before=0 after=0 p nats_before nats_after
    nats_before=$(cpu_ticks "$NATS_PID")
    for p in "${pids[@]}"; do before=$((before + $(cpu_ticks "$p"))); done
    local start
    start=$(date +%s.%N)
    local points
    points=$(run_client "${addrs[0]}")
    if [ "$members" -gt 0 ]; then
        local deadline=$((SECONDS + 600))
        until [ "$(metric_sum 'anomalyd_points_received_total{format="detect"}' "${addrs[@]}")" -ge "$points" ]; do
            [ $SECONDS -lt $deadline ] || die "the members did not apply every accepted point"
            sleep 0.1
        done
    fi
    local end
    end=$(date +%s.%N)
    for p in "${pids[@]}"; do after=$((after + $(cpu_ticks "$p"))); done
    nats_after=$(cpu_ticks "$NATS_PID")
    for p in "${pids[@]}"; do
        [ "$p" = "$NATS_PID" ] || kill "$p" 2>/dev/null || true
    done
    awk -v n="$points" -v s="$start" -v e="$end" -v t=$((after - before)) -v hz="$CLK_TCK" \
        -v nt=$((nats_after - nats_before)) -v m="$members" \
        'BEGIN { if (m == 0) nt = 0; printf "%.0f %.0f %.0f\n", n / (e - s), (t / hz) * 1e9 / n, (nt / hz) * 1e9 / n }'
}

declare -A RATE CPU NATS
for members in 0 1 2 3; do
    lines=""
    for run in $(seq 1 "$RUNS"); do
        log "members=$members run $run/$RUNS"
        line=$(measure "$members" "$run")
        log "  $line"
        lines+="$line"$'\n'
    done
    RATE[$members]=$(awk 'NF {print $1}' <<<"$lines" | median)
    CPU[$members]=$(awk 'NF {print $2}' <<<"$lines" | median)
    NATS[$members]=$(awk 'NF {print $3}' <<<"$lines" | median)
done

echo
echo "Cluster throughput, NDJSON with timestamps and seq (~1.2% spikes), $SERIES series, $PARTITIONS partitions,"
echo "${DURATION}s posting per run, median of $RUNS runs; CPU of all members and nats-server per point"
printf '%-28s %14s %10s %16s %22s\n' "path" "points/s" "vs direct" "CPU ns/point" "of which nats-server"
for members in 0 1 2 3; do
    name="direct HTTP, one daemon"
    [ "$members" -gt 0 ] && name="cluster, $members member(s)"
    printf '%-28s %14s %9.2fx %16s %22s\n' "$name" "${RATE[$members]}" \
        "$(awk -v a="${RATE[$members]}" -v b="${RATE[0]}" 'BEGIN {print a / b}')" "${CPU[$members]}" "${NATS[$members]}"
done
