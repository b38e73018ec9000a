#!/usr/bin/env bash
# The highest rate one anomaly-generator sustains against anomalyd, single
# points and NDJSON batches. anomalyd is pinned to one core, the generator
# to the other; everything runs on 127.0.0.1 and every run is bounded (a
# fixed --count per series, --start-time so nothing waits for the clock).
#
# Environment (defaults in brackets):
#   RATE_SERIES [4]             series generated at once
#   RATE_SINGLE_POINTS [25000]  points per series with batch_size = 1
#   RATE_BATCH_POINTS [250000]  points per series with batch_size = RATE_BATCH
#   RATE_BATCH [100]            points per request in the batched run
#   SERVER_CPU [0], LOAD_CPU [1]
#   RATE_SKIP_BUILD [0]         1 = use the binaries already in target/release
set -euo pipefail

SERIES=${RATE_SERIES:-4}
SINGLE=${RATE_SINGLE_POINTS:-25000}
BATCHED=${RATE_BATCH_POINTS:-250000}
BATCH=${RATE_BATCH:-100}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

command -v taskset >/dev/null || { echo "rate.sh: taskset (util-linux) is required" >&2; exit 1; }
if [ "${RATE_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p anomalyd -p anomaly-generator)
fi

TMP=$(mktemp -d)
DAEMON=""
cleanup() { [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

cat >"$TMP/anomalyd.toml" <<CONF
[server]
listen = "127.0.0.1:0"
[log]
anomaly_log_file = "$TMP/anomalies.log"
fsync = "never"
CONF
taskset -c "$SERVER_CPU" "$BIN/anomalyd" --config "$TMP/anomalyd.toml" >"$TMP/out" 2>"$TMP/err" &
DAEMON=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$TMP/out" 2>/dev/null && break
    sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$TMP/out" | head -1)
[ -n "$ADDR" ] || { echo "rate.sh: anomalyd did not start" >&2; cat "$TMP/err" >&2; exit 1; }

run() { # batch_size points_per_series
    local batch=$1 count=$2
    {
        printf 'anomaly_detection_url = "http://%s/detect"\ndata_frequency = 0\nbatch_size = %s\n' "$ADDR" "$batch"
        for i in $(seq 1 "$SERIES"); do printf '[[series]]\nname = "rate%s"\n' "$i"; done
    } >"$TMP/gen.toml"
    local start end
    start=$(date +%s.%N)
    taskset -c "$LOAD_CPU" "$BIN/anomaly-generator" --config "$TMP/gen.toml" \
        --count "$count" --start-time 1700000000 2>"$TMP/gen.err" \
        || { cat "$TMP/gen.err" >&2; exit 1; }
    end=$(date +%s.%N)
    awk -v n=$((count * SERIES)) -v s="$start" -v e="$end" -v b="$batch" \
        'BEGIN { printf "batch_size %-5d %10d points in %6.2f s: %10.0f points/s\n", b, n, e - s, n / (e - s) }'
}

run 1 "$SINGLE"
run "$BATCH" "$BATCHED"
