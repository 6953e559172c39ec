#!/usr/bin/env bash
# The test command: starts PostgreSQL and Redis if they are down, installs headless
# Chromium if missing, then runs the whole suite against the real services.
# Usage: scripts/test.sh [pytest args]   (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
if [ ! -x /usr/bin/chromium ]; then
  echo "installing headless Chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The Feast source's tests run a real `feast serve` from a venv of its own (Feast does not
# install beside the platform's pandas): build it in the background while the suite runs,
# when the run includes them. The tests' fixture waits for it (one builder, a file lock).
if [ $# -eq 0 ] || [[ "$*" == *pipelines* ]]; then
  "$PYTHON" -m tests.pipelines.feast_server >/tmp/modelhub-feast-venv.log 2>&1 &
fi

export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
export REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
export MODELHUB_DATA_DIR=${MODELHUB_DATA_DIR:-$(mktemp -d /tmp/modelhub-test.XXXXXX)}
exec "$PYTHON" -m pytest "$@"
