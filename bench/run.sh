#!/usr/bin/env bash
# The one command: Modelhub side by side with the peers, both models, interleaved rounds, median tables.
#
#   bench/run.sh                    # raw ORT limit, FastAPI, PyTriton, Modelhub; tiny + mlp; 3 rounds
#   bench/run.sh --all-peers        # + MLServer and BentoML
#   bench/run.sh --plan             # print plan + time estimate only
#   bench/run.sh --report FILE...   # re-print the tables of earlier results (bench/results/latest/results.jsonl)
#
# Env knobs: ROUNDS (3)  DURATION (10, s per point)  CONC (1,16,64)  MODELS ("tiny mlp")
#   TARGETS ("raw-ort fastapi pytriton modelhub"; + "mlserver bentoml" with --all-peers / ALL_PEERS=1)
#   WARMUP (2)  RAW_SECONDS (3)  MODELHUB_PORT (8010)  MODELHUB_START_CMD (see start_modelhub.sh)
#   PEERS_SRC / PEERS_DIR (see peers.sh)  OUT_DIR (bench/results)  BENCH_MAX_S (hard stop)
# Exit: 0 all measured, 1 some target failed, 130 interrupted. Modelhub not wired = skipped, not a failure.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = "--report" ]; then
  shift
  exec python3 "$HERE/report.py" "${@:-$HERE/results/latest/results.jsonl}"
fi
if [ "${1:-}" != "--plan" ]; then
  PEERS_DIR="$("$HERE/peers.sh" | sed -n 's/^PEERS_DIR=//p')"
  export PEERS_DIR
fi
exec python3 "$HERE/harness.py" "$@"
