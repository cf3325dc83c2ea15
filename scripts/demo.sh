#!/usr/bin/env bash
# Offline demo: set up .venv, start the bundled OKX simulator on loopback, and run the collector
# against it, writing the lake to ./data (override with L2_DATA_DIR). Stops after DEMO_SECONDS
# (default 60; 0 = until Ctrl-C). Afterwards: `.venv/bin/dagster dev -w workspace.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA_DIR="${L2_DATA_DIR:-./data}"
SECONDS_TO_RUN="${DEMO_SECONDS:-60}"
INSTRUMENTS="${L2_INSTRUMENTS:-BTC-USDT-SWAP,ETH-USDT-SWAP}"
mkdir -p "$DATA_DIR"
SIM_OUT="$(mktemp)"
.venv/bin/l2-collector simulate --port 0 --instruments "$INSTRUMENTS" --faults "drop=0.002,heartbeat=0.01" \
    > "$SIM_OUT" 2> "$DATA_DIR/simulator.log" &
SIM_PID=$!
COLLECTOR_PID=""
cleanup() {
    [ -n "$COLLECTOR_PID" ] && kill -TERM "$COLLECTOR_PID" 2>/dev/null && wait "$COLLECTOR_PID" || true
    kill -TERM "$SIM_PID" 2>/dev/null || true
    rm -f "$SIM_OUT"
}
trap cleanup EXIT INT TERM
for _ in $(seq 100); do grep -q LISTENING "$SIM_OUT" && break; sleep 0.1; done
read -r _ _ WS_URL REST_URL < "$SIM_OUT"
echo "simulator: $WS_URL  $REST_URL"
.venv/bin/l2-collector run --data-dir "$DATA_DIR" --instruments "$INSTRUMENTS" \
    --ws-url "$WS_URL" --rest-url "$REST_URL" --status-interval 10 &
COLLECTOR_PID=$!
if [ "$SECONDS_TO_RUN" -gt 0 ]; then
    sleep "$SECONDS_TO_RUN"
    kill -TERM "$COLLECTOR_PID"
fi
wait "$COLLECTOR_PID"
COLLECTOR_PID=""
echo "lake written under $DATA_DIR:"
find "$DATA_DIR/raw" -name '*.jsonl' -exec wc -l {} + | sed 's/^/  /'
echo "explore it in Dagster: mkdir -p dagster_home && DAGSTER_HOME=$PWD/dagster_home L2_DATA_DIR=$DATA_DIR .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1"
