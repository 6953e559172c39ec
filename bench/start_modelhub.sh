#!/usr/bin/env bash
# Hook: start Modelhub serving ONE model for the benchmark, in the FOREGROUND, until killed.
#
#   bench/start_modelhub.sh MODEL PORT
#
# Contract with bench/harness.py (see bench/README.md, "Modelhub's start hook"):
#   - MODEL is "tiny" or "mlp"; the ONNX file is $MODELS_DIR/$MODEL.onnx (the exact bytes the peers serve).
#   - Serve on 127.0.0.1:PORT (loopback only) the Open Inference Protocol (KServe V2) JSON REST API:
#       GET  /v2/health/ready           -> 200 once the server can take inference requests
#       GET  /v2/models/MODEL           -> 200, {"name":..., "inputs":[{"name":"input","datatype":"FP32","shape":[-1,F]}], "outputs":[...]}
#       POST /v2/models/MODEL/infer     -> 200 for {"inputs":[{"name":"input","shape":[1,F],"datatype":"FP32","data":[...]}]}
#     (F = 10 for tiny, 256 for mlp; the load generator reads inputs[0].name and inputs[0].shape[-1]).
#   - Stay in the foreground (exec the server); the harness runs this script in its own process group
#     and stops it with SIGTERM to the group, then SIGKILL after STOP_TIMEOUT. Do not daemonize.
#   - Use only this machine's 2 cores as the server would in production (no other services needed by the
#     request path should be left running by this script after it is killed).
#   - Exit 3 without starting anything = "Modelhub serving is not wired": the harness skips Modelhub.
#   - Optional: write $STATS_FILE.pid<PID>.json = {"MODEL": {"calls": N, "rows": M}} every 0.5 s
#     (see the peers' batchstats.py) to get the achieved average batch size in the tables.
#
# Env given by the harness: MODEL, PORT, MODELS_DIR, STATS_FILE, PEERS_DIR, REPO_ROOT.
# Until the serving engineer fills this in, MODELHUB_START_CMD can hold the command (run with bash -c,
# in the repo root, with the variables above exported), e.g.
#   MODELHUB_START_CMD='exec .venv/bin/python manage.py serve_v2 --model "$MODELS_DIR/$MODEL.onnx" --name "$MODEL" --port "$PORT"'
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 MODEL PORT" >&2; exit 2; }
export MODEL="$1" PORT="$2"
export REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
export MODELS_DIR="${MODELS_DIR:?MODELS_DIR (dir with tiny.onnx and mlp.onnx) must be set}"
[ -f "$MODELS_DIR/$MODEL.onnx" ] || { echo "start_modelhub.sh: no $MODELS_DIR/$MODEL.onnx" >&2; exit 2; }

if [ -n "${MODELHUB_START_CMD:-}" ]; then
  cd "$REPO_ROOT"
  exec bash -c "$MODELHUB_START_CMD"
fi

# ---- the serving engineer replaces this block with the real start (exec ..., foreground) ----
echo "start_modelhub.sh: Modelhub serving is not wired into the benchmark yet;" \
     "set MODELHUB_START_CMD or fill in bench/start_modelhub.sh. Skipping Modelhub." >&2
exit 3
