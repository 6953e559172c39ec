#!/usr/bin/env bash
# Prove the GPU worker on a machine with an NVIDIA GPU: provider really got + rows/s of mlp batch 64, GPU vs CPU.
#
#   bench/gpu_check.sh                 # installs onnxruntime-gpu's CUDA runtime wheels, 10 s per measurement
#   SKIP_INSTALL=1 SECONDS_PER=20 bench/gpu_check.sh
#
# Needs: the repo's requirements installed (pip install -r requirements.txt), nvidia-smi, and Redis
# (REDIS_URL, else a private redis-server on a free port is started and stopped here).
# Prints: the providers ONNX Runtime lists, the provider each worker's session really got (from its heartbeat,
# expect CUDAExecutionProvider for the gpu worker), and rows/s for mlp (256 -> 3 x 2048 -> 10) at batch 64:
# raw ORT in-process on CUDA and on CPU (the limits), and through one inference worker each (the pool path).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
nvidia-smi -L || { echo "gpu_check: nvidia-smi found no GPU" >&2; exit 2; }
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  # the CUDA 13 runtime + cuDNN 9 (cu13) wheels onnxruntime-gpu 1.31 loads (onnxruntime.preload_dlls() finds them)
  "$PY" -m pip install -q "onnxruntime-gpu[cuda,cudnn]==1.31.1"
fi
REDIS_PID=""
if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || { echo "gpu_check: set REDIS_URL or install redis-server" >&2; exit 2; }
  PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/tmp/gpu_check_redis.log 2>&1 &
  REDIS_PID=$!
  export REDIS_URL="redis://127.0.0.1:$PORT/0"
  for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
trap '[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; true' EXIT
"$PY" bench/gpu_check.py --seconds "${SECONDS_PER:-10}"
