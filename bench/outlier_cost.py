"""What outlier scoring costs per request, on the benchmark's tiny model (10 features).

    python bench/outlier_cost.py [BLOCKS=40] [N=250] [MODEL_FILE]

A fresh embedded set-up (SQLite and no Redis, in a temporary MODELHUB_DATA_DIR): the same
model served twice, as endpoint "plain" (outlier_scoring off) and endpoint "scored" (on,
with reference statistics of 2,000 rows), both open (no key). Then, in one thread through
the WSGI front gunicorn loads (config.wsgi: the raw edge, the batcher and ONNX Runtime
included), BLOCKS blocks of N V2 JSON requests of one row to each endpoint in turn,
interleaved so that a loaded machine slows both alike, each block ending with a flush
(which scores what the block kept). Prints requests/s (wall), the median of the blocks'
ratios, and CPU time per request (less sensitive to other processes than wall time).
MODEL_FILE defaults to the tests' tiny classifier (10 features, as the benchmark's
tiny.onnx; pass $MODELS_DIR/tiny.onnx for those exact bytes).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MODELHUB_DATA_DIR"] = tempfile.mkdtemp(prefix="modelhub-outliers.")
for name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(name, None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("MODELHUB_LOG_LEVEL", "WARNING")
# No flusher thread: each block flushes (and so scores what it kept) itself, see block().
os.environ["MODELHUB_MONITORING_FLUSH_INTERVAL_S"] = "0"


def main() -> None:
    import django

    django.setup()
    import numpy as np
    import orjson
    from django.core.management import call_command

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("bench", password="bench-only-password")
    if len(sys.argv) > 3:
        data = Path(sys.argv[3]).read_bytes()
    else:
        from tests.onnx_models import tiny_classifier

        data = tiny_classifier()
    path = Path(os.environ["MODELHUB_DATA_DIR"]) / "tiny.onnx"
    path.write_bytes(data)
    for endpoint in ("plain", "scored"):
        call_command("endpoint_from_file", file=str(path), name=endpoint, open=True, verbosity=0, stdout=io.StringIO())

    from inference import endpoints
    from inference.models import Endpoint
    from monitoring.drift import reference_stats_set
    from registry.models import ModelVersion

    version = ModelVersion.objects.select_related("model").get(model__name="scored")
    signature = version.signature or {}
    tensor = signature["inputs"][0]
    features = int(tensor["shape"][1])
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2000, features))
    reference_stats_set(
        model="scored",
        version=version.version,
        features={f"{tensor['name']}[{j}]": reference[:, j] for j in range(features)},
        source="upload",
        user=admin,
    )
    endpoints.endpoint_update(endpoint=Endpoint.objects.get(name="scored"), user=admin, outlier_scoring=True)

    from bench.edge_overhead import wsgi_environ
    from config.wsgi import application as front
    from inference.routing_cache import edge_cache
    from monitoring.flusher import flush_now

    edge_cache.clear()
    body = orjson.dumps(
        {"inputs": [{"name": tensor["name"], "datatype": "FP32", "shape": [1, features], "data": [0.5] * features}]}
    )

    def environ(path: str) -> dict[str, object]:
        return wsgi_environ(path, body)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        assert status.startswith("200"), status

    def block(endpoint: str, count: int) -> tuple[float, float]:
        """Wall and CPU seconds for `count` requests and the flush that follows them (with
        the flusher thread off, the flush runs here: scoring is charged to its block)."""
        path = f"/v2/models/{endpoint}/infer"
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(count):
            b"".join(front(environ(path), start_response))
        flush_now()
        return time.perf_counter() - started, time.process_time() - cpu_started

    table = edge_cache.table("scored")
    assert table is not None and table.outliers, "the scored endpoint has no outlier scorer"
    for endpoint in ("plain", "scored"):
        block(endpoint, 300)  # load, warm, fill the caches
    wall = {"plain": 0.0, "scored": 0.0}
    cpu = {"plain": 0.0, "scored": 0.0}
    ratios = []
    for number in range(1, rounds + 1):
        order = ("plain", "scored") if number % 2 else ("scored", "plain")
        took = {}
        for endpoint in order:
            took[endpoint] = block(endpoint, n)
            wall[endpoint] += took[endpoint][0]
            cpu[endpoint] += took[endpoint][1]
        ratios.append(took["plain"][0] / took["scored"][0])
    total = rounds * n
    plain_rps, scored_rps = total / wall["plain"], total / wall["scored"]
    print(
        f"{rounds} interleaved blocks of {n} requests each: plain {plain_rps:,.0f} req/s, scored {scored_rps:,.0f} "
        f"req/s (wall); scored/plain {scored_rps / plain_rps:.3f}, median of the blocks' ratios "
        f"{statistics.median(ratios):.3f}"
    )
    print(
        f"CPU per request (this process, all threads, the flush included): plain {cpu['plain'] / total * 1e6:.1f} us, "
        f"scored {cpu['scored'] / total * 1e6:.1f} us; scored/plain {cpu['scored'] / cpu['plain']:.3f}"
    )


if __name__ == "__main__":
    main()
