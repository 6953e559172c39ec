"""gunicorn settings; each one can be overridden from the environment."""

import multiprocessing
import os

bind = os.environ.get("MODELHUB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MODELHUB_WEB_WORKERS", min(4, multiprocessing.cpu_count())))
# Threads let one process batch concurrent predictions into a single ONNX Runtime call.
worker_class = os.environ.get("MODELHUB_WORKER_CLASS", "gthread")
threads = int(os.environ.get("MODELHUB_WEB_THREADS", 16))
# Uploads are validated in-process on the embedded default, which can take a while.
timeout = int(os.environ.get("MODELHUB_WEB_TIMEOUT", 120))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("MODELHUB_WEB_MAX_REQUESTS", 0))
accesslog = os.environ.get("MODELHUB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("MODELHUB_LOG_LEVEL", "info").lower()


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """After the app is imported in this worker: freeze the start-up heap (config/heap.py),
    then start the embedded scheduler (beat's jobs when there is no Redis; one process
    of all the workers runs them, workers/embedded_scheduler.py)."""
    from config import heap
    from workers.embedded_scheduler import start_embedded

    heap.settle()
    start_embedded()
