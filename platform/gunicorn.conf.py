"""gunicorn settings; each one can be overridden from the environment (.env.example)."""

import multiprocessing
import sys
from pathlib import Path

# The repository root, so that the typed readers can be imported before gunicorn loads the app.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.env import env_int, env_str  # noqa: E402

bind = env_str("MODELHUB_BIND", "127.0.0.1:8000")
workers = env_int("MODELHUB_WEB_WORKERS", min(4, multiprocessing.cpu_count()))
# Threads let one process batch concurrent predictions into a single ONNX Runtime call.
worker_class = env_str("MODELHUB_WORKER_CLASS", "gthread")
threads = env_int("MODELHUB_WEB_THREADS", 16)
# Uploads are validated in-process on the embedded default, which can take a while.
timeout = env_int("MODELHUB_WEB_TIMEOUT", 120)
graceful_timeout = 20
keepalive = 5
max_requests = env_int("MODELHUB_WEB_MAX_REQUESTS", 0)
accesslog = env_str("MODELHUB_ACCESS_LOG") or None
errorlog = "-"
loglevel = env_str("MODELHUB_LOG_LEVEL", "info").lower()


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """After the app is imported in this worker: freeze the start-up heap (config/heap.py),
    then start the embedded scheduler (beat's jobs when there is no Redis; one process
    of all the workers runs them, workers/embedded_scheduler.py)."""
    from config import heap
    from workers.embedded_scheduler import start_embedded

    heap.settle()
    start_embedded()
