#!/usr/bin/env bash
# What monitoring costs over HTTP: the same Modelhub server (in-process, V2 infer on tiny)
# with prediction counting on and off (MODELHUB_MONITORING_ENABLED), interleaved, wrk at
# one concurrency. Prints requests/s per round and the median ratio.
#   bench/monitoring_overhead.sh [ROUNDS=3] [CONC=16] [DURATION=8] [MODEL=tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; CONC=${CONC:-16}; DURATION=${DURATION:-8}; MODEL=${MODEL:-tiny}; PORT=${PORT:-8019}
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/modelhub-peers}
export MODELS_DIR=${MODELS_DIR:-$PEERS_DIR/models}
features=$(python3 -c "import onnx,sys; m=onnx.load(sys.argv[1]); print(m.graph.input[0].type.tensor_type.shape.dim[1].dim_value)" "$MODELS_DIR/$MODEL.onnx")
body=$(mktemp); python3 -c "import json,sys; f=int(sys.argv[1]); print(json.dumps({'inputs':[{'name':'input','shape':[1,f],'datatype':'FP32','data':[0.5]*f}]}))" "$features" > "$body"
results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for enabled in 1 0; do
    MODELHUB_MONITORING_ENABLED=$enabled setsid bench/start_modelhub.sh "$MODEL" "$PORT" > /tmp/monitoring_overhead_server.log 2>&1 &
    pid=$!
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break; sleep 0.2; done
    WRK_BODY_FILE=$body wrk -t1 -c"$CONC" -d2s -s "$PEERS_DIR/loadgen/post_json.lua" "http://127.0.0.1:$PORT/v2/models/$MODEL/infer" >/dev/null
    rps=$(WRK_BODY_FILE=$body wrk -t1 -c"$CONC" -d"${DURATION}s" -s "$PEERS_DIR/loadgen/post_json.lua" "http://127.0.0.1:$PORT/v2/models/$MODEL/infer" | awk '/Requests\/sec/ {print $2}')
    kill -- -"$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    echo "round $round monitoring=$enabled rps=$rps" | tee -a "$results"
  done
done
python3 - "$results" <<'PY'
import re, statistics, sys
rows = [re.findall(r"monitoring=(\d) rps=([\d.]+)", line)[0] for line in open(sys.argv[1]) if "rps=" in line]
on = [float(r) for e, r in rows if e == "1"]; off = [float(r) for e, r in rows if e == "0"]
print(f"median rps: monitoring on {statistics.median(on):,.0f}, off {statistics.median(off):,.0f}; "
      f"cost {100 * (1 - statistics.median(on) / statistics.median(off)):.1f} %")
PY
