#!/usr/bin/env bash
# Modelhub started as it ships, for the benchmark (called by start_modelhub.sh, which holds the contract):
#
#   MODEL=mlp PORT=8014 MODELS_DIR=... bench/start_modelhub_shipped.sh make-run|compose
#
# make-run: the lines of `make -n run` (migrate, bootstrap, server), run as they are with a fresh
#           MODELHUB_DATA_DIR; only MODELHUB_BIND is set (the harness's port).
# compose:  docker-compose.yml's `migrate` and `web` commands, with the environment a container gets
#           (.env.example as the .env, then the service's environment:), Postgres and Redis hosts
#           replaced by MODELHUB_BENCH_DATABASE_URL / MODELHUB_BENCH_REDIS_URL; MODELHUB_BIND set.
# In between, bench/modelhub_setup.py registers MODEL and serves it in-process on the endpoint MODEL
# (no key), with the same batching settings as the tuned `modelhub` target, so that the server's
# start-up line and settings are the only difference between the two.
set -euo pipefail
VARIANT="$1"
cd "$REPO_ROOT"
VENV="${MODELHUB_VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"
DATA_DIR="$(mktemp -d /tmp/modelhub-bench.XXXXXX)"
SETUP=("$PY" bench/modelhub_setup.py "$MODEL" "$MODELS_DIR/$MODEL.onnx" --placement in_process
  --max-batch-size "${MODELHUB_MAX_BATCH:-16}" --max-queue-delay-ms "${MODELHUB_QUEUE_DELAY_MS:-0}")
# Nothing from the caller's environment that a user's shell would not have: no thread or process knobs.
unset DATABASE_URL REDIS_URL MODELHUB_INTRA_OP_THREADS MODELHUB_WEB_WORKERS OMP_NUM_THREADS MODELHUB_CELERY_EAGER
export MODELHUB_DATA_DIR="$DATA_DIR" MODELHUB_BIND="127.0.0.1:$PORT"

if [ "$VARIANT" = make-run ]; then
  mapfile -t LINES < <(make -s -n -o "$VENV/.installed" run VENV="$VENV")
  [ "${#LINES[@]}" -ge 1 ] || { echo "start_modelhub_shipped.sh: make -n run printed nothing" >&2; exit 2; }
  for line in "${LINES[@]:0:${#LINES[@]}-1}"; do bash -c "$line" >&2; done
  "${SETUP[@]}" >&2
  exec bash -c "exec ${LINES[-1]}"
fi

if [ "$VARIANT" = compose ]; then
  DB_URL="${MODELHUB_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/modelhub_bench}"
  REDIS="${MODELHUB_BENCH_REDIS_URL:-redis://127.0.0.1:6379/13}"
  # the container environment, printed as shell assignments: .env.example, then the service's own values
  container_env() {  # SERVICE
    "$PY" - "$1" "$DB_URL" "$REDIS" "$DATA_DIR" <<'PY'
import re, shlex, sys, yaml
service, db, redis_url, data_dir = sys.argv[1:]
env = {}
for line in open(".env.example"):
    m = re.match(r"([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
    if m:
        env[m.group(1)] = m.group(2)
spec = yaml.safe_load(open("docker-compose.yml"))["services"][service]
env.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
env.update(DATABASE_URL=db, REDIS_URL=redis_url, MODELHUB_SECRET_KEY="bench-only-secret",
           MODELHUB_DATA_DIR=data_dir, MODELHUB_ARTIFACT_STORE=f"{data_dir}/artifacts")
env.pop("MODELHUB_BIND", None)
command = spec["command"]
print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
print("COMMAND=(" + " ".join(shlex.quote(c) for c in (command if isinstance(command, list) else ["sh", "-c", command])) + ")")
PY
  }
  "$PY" - "$DB_URL" <<'PY'
import sys, psycopg2
from urllib.parse import urlparse
url = urlparse(sys.argv[1]); name = url.path.lstrip("/")
conn = psycopg2.connect(host=url.hostname, port=url.port or 5432, user=url.username, password=url.password, dbname="postgres")
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'); cur.execute(f'CREATE DATABASE "{name}"')
PY
  "$PY" -c "import redis,sys; c=redis.Redis.from_url(sys.argv[1]); [c.delete(k) for k in c.scan_iter('mh:*')]" "$REDIS"
  ( eval "$(container_env migrate)"; export MODELHUB_BIND="127.0.0.1:$PORT"; PATH="$VENV/bin:$PATH" "${COMMAND[@]}" >&2 )
  ( eval "$(container_env web)"; export MODELHUB_CELERY_EAGER=1; "${SETUP[@]}" >&2 )  # no Celery worker here
  eval "$(container_env web)"
  export MODELHUB_BIND="127.0.0.1:$PORT" PATH="$VENV/bin:$PATH"
  exec "${COMMAND[@]}"
fi
echo "start_modelhub_shipped.sh: unknown variant $VARIANT" >&2
exit 2
