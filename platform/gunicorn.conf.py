"""gunicorn settings; each one can be overridden from the environment.

gunicorn is the alternative server, not the default: `python -m config.serve` (the ASGI
front, a SO_REUSEPORT socket per process) serves `make run`, docker-compose and the
Kubernetes web Deployment. Issue #13 measured the full stack on the mlp model at c=64:
gunicorn with this file 1,861-2,293 requests/s, config.serve 2,328-2,789 with ONNX Runtime's
all-core default and 5,138-5,603 with one intra-op thread per process (what config/serving.py
now derives on 2 cores). Keep gunicorn where an ASGI server is not wanted (a platform that
only runs WSGI, or to compare). Processes, bind address and ONNX Runtime threads come from
config/serving.py, the same derivation config.serve uses.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import serving  # noqa: E402
from config.env import env_int, env_str, log_level  # noqa: E402

_host, _port = serving.bind_address()
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
workers = serving.web_processes()
# The forked workers inherit it: their sessions split the cores between this many processes.
os.environ["MODELHUB_WEB_WORKERS"] = str(workers)
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
loglevel = log_level().lower()


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """After the app is imported in this worker: freeze the start-up heap (config/heap.py),
    then start the embedded scheduler (beat's jobs when there is no Redis; one process
    of all the workers runs them, workers/embedded_scheduler.py)."""
    from config import heap
    from workers.embedded_scheduler import start_embedded

    heap.settle()
    start_embedded()
