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

# ---- Modelhub: a fresh data dir, the model registered and deployed, then the server in the foreground ----
# MODELHUB_VARIANT: inproc (default; batcher + ORT inside each web process, tuned: 2 workers, intra-op 1)
#                   pool1 / pool2 (worker-pool placement with 1 or 2 inference worker processes)
#                   make-run (as shipped: the commands of `make run`, read from `make -n run`, with its
#                             defaults: SQLite, no Redis, processes and threads derived by config/serving.py)
#                   compose (as shipped: docker-compose.yml's migrate and web commands with .env.example's
#                            settings, on PostgreSQL (MODELHUB_BENCH_DATABASE_URL, a database it recreates)
#                            and Redis (MODELHUB_BENCH_REDIS_URL); container host names become local ones)
#                   The as-shipped variants set nothing the user would not: no thread or process knobs.
# MODELHUB_SERVER:  asgi (default; config/serve.py: uvicorn + uvloop + httptools, a SO_REUSEPORT socket per process),
#                   uvicorn (uvicorn --workers: one shared socket) or gunicorn (gthread)
# MODELHUB_WEB_WORKERS (2)  MODELHUB_INTRA_OP (ORT intra-op threads per session; 1)
# MODELHUB_MAX_BATCH (16: bounds one ORT call, and so the p99 tail)  MODELHUB_QUEUE_DELAY_MS (0: batch what queued while the model ran)  MODELHUB_BENCH_REDIS_URL (redis://127.0.0.1:6379/13, pool only)
VARIANT="${MODELHUB_VARIANT:-inproc}"
case "$VARIANT" in make-run|compose) exec "$(dirname "$0")/start_modelhub_shipped.sh" "$VARIANT" ;; esac
SERVER="${MODELHUB_SERVER:-asgi}"
WEB_WORKERS="${MODELHUB_WEB_WORKERS:-2}"
PY="${MODELHUB_PYTHON:-python3}"
cd "$REPO_ROOT"
export DJANGO_SETTINGS_MODULE=config.settings
export MODELHUB_DATA_DIR="$(mktemp -d /tmp/modelhub-bench.XXXXXX)"
export MODELHUB_SECRET_KEY="${MODELHUB_SECRET_KEY:-bench-only-secret}"
export MODELHUB_ARTIFACT_STORE="$MODELHUB_DATA_DIR/artifacts"
export MODELHUB_CELERY_EAGER=1 MODELHUB_LOG_LEVEL="${MODELHUB_LOG_LEVEL:-WARNING}"
export MODELHUB_INTRA_OP_THREADS="${MODELHUB_INTRA_OP:-1}" OMP_NUM_THREADS=1
unset DATABASE_URL
case "$VARIANT" in
  inproc) PLACEMENT=in_process; unset REDIS_URL ;;
  pool*)  PLACEMENT=worker_pool; NWORKERS="${VARIANT#pool}"
          export REDIS_URL="${MODELHUB_BENCH_REDIS_URL:-redis://127.0.0.1:6379/13}"
          "$PY" -c "import redis,os; c=redis.Redis.from_url(os.environ['REDIS_URL']); [c.delete(k) for k in c.scan_iter('mh:*')]"
          # the inference workers stay in this process group: the harness stops them with the server
          for i in $(seq "$NWORKERS"); do
            "$PY" -m workers.inference_worker --device cpu --redis-url "$REDIS_URL" \
              --intra-op-threads "${MODELHUB_INTRA_OP:-1}" --pullers "${MODELHUB_PULLERS:-4}" \
              --log-level WARNING &
          done ;;
  *) echo "start_modelhub.sh: unknown MODELHUB_VARIANT=$VARIANT" >&2; exit 2 ;;
esac
"$PY" bench/modelhub_setup.py "$MODEL" "$MODELS_DIR/$MODEL.onnx" --placement "$PLACEMENT" \
  --max-batch-size "${MODELHUB_MAX_BATCH:-16}" --max-queue-delay-ms "${MODELHUB_QUEUE_DELAY_MS:-0}"
if [ "$SERVER" = gunicorn ]; then
  exec "$PY" -m gunicorn config.wsgi:application -b "127.0.0.1:$PORT" -w "$WEB_WORKERS" -k gthread \
    --threads "${MODELHUB_THREADS:-32}" --log-level warning
fi
if [ "$SERVER" = uvicorn ]; then  # one listening socket shared by the workers (for comparison)
  exec "$PY" -m uvicorn config.asgi_edge:application --host 127.0.0.1 --port "$PORT" --workers "$WEB_WORKERS" \
    --loop uvloop --http httptools --no-access-log --log-level warning --backlog 2048
fi
exec "$PY" -m config.serve --host 127.0.0.1 --port "$PORT" --workers "$WEB_WORKERS" --log-level warning
