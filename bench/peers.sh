#!/usr/bin/env bash
# Prepare the peer servers Modelhub is measured against (FastAPI, PyTriton, MLServer, BentoML, raw ORT),
# from the read-only kit in shared/peers, into a private cache dir. Idempotent: a second call with an
# unchanged kit returns at once.
#
#   bench/peers.sh            # prepare (or verify) and print PEERS_DIR=...
#   FORCE=1 bench/peers.sh    # re-copy the kit and re-run its setup.sh (keeps the venvs, pip re-checks them)
#
# Env:
#   PEERS_SRC  the kit (default: <repo>/../shared/peers)
#   PEERS_DIR  where it is copied and set up (default: $HOME/.cache/modelhub-peers)
#   PY         interpreter for the venvs (passed to setup.sh; default python3)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/.." && pwd))"
PEERS_SRC="${PEERS_SRC:-$ROOT/../shared/peers}"
PEERS_DIR="${PEERS_DIR:-$HOME/.cache/modelhub-peers}"

[ -f "$PEERS_SRC/setup.sh" ] || { echo "peers.sh: no peer kit at $PEERS_SRC (set PEERS_SRC)" >&2; exit 2; }
PEERS_SRC="$(cd "$PEERS_SRC" && pwd)"
mkdir -p "$(dirname "$PEERS_DIR")"

# one preparer at a time (two engineers, or run.sh started twice)
exec 9>"$PEERS_DIR.lock"
flock -w 1800 9 || { echo "peers.sh: timed out waiting for $PEERS_DIR.lock" >&2; exit 1; }

# fingerprint of the kit's own files (not of venvs/models/results, which the kit may also contain)
kit_files() {
  (cd "$PEERS_SRC" && find . -type f \
     -not -path './venvs/*' -not -path './models/*' -not -path './results/*' -not -path './logs/*' \
     -not -name '*.pyc' -print | LC_ALL=C sort)
}
STAMP_WANT="$(cd "$PEERS_SRC" && kit_files | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)"
STAMP_FILE="$PEERS_DIR/.modelhub-peers-stamp"

ready() {
  [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP_WANT" ] || return 1
  for v in base pytriton bentoml mlserver; do [ -x "$PEERS_DIR/venvs/$v/bin/python" ] || return 1; done
  [ -s "$PEERS_DIR/models/tiny.onnx" ] && [ -s "$PEERS_DIR/models/mlp.onnx" ] || return 1
  command -v wrk >/dev/null || return 1
}

if [ "${FORCE:-0}" != 1 ] && ready; then
  echo "peers ready (kit $STAMP_WANT) in $PEERS_DIR" >&2
  echo "PEERS_DIR=$PEERS_DIR"
  exit 0
fi

echo "preparing peers: $PEERS_SRC -> $PEERS_DIR (kit $STAMP_WANT)" >&2
# refuse to clean out a directory that is not ours (PEERS_DIR=$HOME by mistake, say)
if [ -d "$PEERS_DIR" ] && [ -n "$(ls -A "$PEERS_DIR")" ] && [ ! -f "$PEERS_DIR/setup.sh" ]; then
  echo "peers.sh: $PEERS_DIR exists, is not empty and holds no peer kit; choose another PEERS_DIR" >&2; exit 2
fi
mkdir -p "$PEERS_DIR"
# refresh the kit's files, keep what setup built (venvs, models) so a re-run is quick
rm -f "$STAMP_FILE"
(cd "$PEERS_DIR" && find . -mindepth 1 -maxdepth 1 \
   -not -name venvs -not -name models -not -name results -not -name logs -not -name '.modelhub-peers-stamp' \
   -exec rm -rf {} +)
(cd "$PEERS_SRC" && kit_files) | (cd "$PEERS_SRC" && xargs -d '\n' cp --parents -t "$PEERS_DIR")
chmod -R u+w "$PEERS_DIR"

# wrk: setup.sh runs a bare `apt-get update && apt-get install`, which fails at once if another apt/dpkg
# holds the lock; install it here first, waiting for the lock.
if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq wrk
fi

# setup.sh is noisy about the local file:// pip indexes ("Location ... is ignored"); keep its full log.
mkdir -p "$PEERS_DIR/logs"
if ! (cd "$PEERS_DIR" && ./setup.sh) > "$PEERS_DIR/logs/setup.log" 2>&1; then
  grep -v '^WARNING: Location ' "$PEERS_DIR/logs/setup.log" | tail -n 40 >&2
  echo "peers.sh: setup.sh failed; full log: $PEERS_DIR/logs/setup.log" >&2
  exit 1
fi
grep -v '^WARNING: Location ' "$PEERS_DIR/logs/setup.log" | tail -n 3 >&2
echo "$STAMP_WANT" > "$STAMP_FILE"
ready || { echo "peers.sh: setup.sh finished but the peers are incomplete (see $PEERS_DIR/logs/setup.log)" >&2; exit 1; }
echo "peers ready in $PEERS_DIR" >&2
echo "PEERS_DIR=$PEERS_DIR"
