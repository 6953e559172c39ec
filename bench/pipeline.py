#!/usr/bin/env python3
"""Pipelines against their alternatives, side by side in one run (issue #14). Not a test.

    .venv/bin/python bench/pipeline.py [--duration 8] [--conc 16,64] [--rounds 4] [--entities 10000]
    .venv/bin/python bench/pipeline.py --overhead 1000   # only the in-process us/request of (1)

1. `tiny` (10 -> 16 -> 2): the model served directly (a model route) vs a pipeline of one
   model step (a pipeline route), same server, same request (`{"inputs": {"x": [[...]]}}`).
2. The fraud graph on mlp-sized models (8 -> 2048 -> 2048 -> 2048 -> 2, two versions):
   Redis feature lookup (7 features per card) + transform (stack, scale) + a two-model
   ensemble (mean) + a business rule, as a Modelhub pipeline vs the same graph written as
   a FastAPI service with redis-py and two ORT sessions (bench/pipeline_fastapi.py,
   uvicorn 2 workers, the peers' `base` venv + redis-py). Each request: one random card.

Both servers run at once (one idles while the other is measured); each point is measured
in `rounds` slices that alternate the two sides (A B, B A, ...), so that both see the
same background load, and the table shows medians and the median of per-slice ratios.

Modelhub runs as bench/start_modelhub.sh's tuned in-process variant does (config.serve,
2 workers, intra-op 1, SQLite) plus Redis (MODELHUB_BENCH_REDIS_URL, default db 14) for
the features. wrk (2 threads) drives each slice for `duration` s after a 2 s warm-up.
Prints one JSON line per slice and a table; writes the lines to
bench/results/pipeline-<time>.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PY = str(ROOT / ".venv" / "bin" / "python")
PEER_PY = os.environ.get("PEER_PYTHON", str(Path.home() / ".cache/modelhub-peers/venvs/base/bin/python"))
REDIS_URL = os.environ.get("MODELHUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
FEATURES = [f"f{i}" for i in range(7)]
FRAUD_DIMS = (8, 2048, 2048, 2048, 2)


def build_models(folder: Path) -> dict[str, Path]:
    import onnx
    from gpu_check import mlp

    tiny = mlp(folder / "tiny.onnx", (10, 16, 2), names=("x", "y"))
    fraud_a = mlp(folder / "fraud_a.onnx", FRAUD_DIMS, names=("x", "y"))
    model = onnx.load(str(fraud_a))
    model.doc_string = "second version"  # other bytes: the registry refuses a digest twice
    for init in model.graph.initializer:  # and other weights
        if init.name == "w0":
            import numpy as np
            from onnx import numpy_helper

            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.1), "w0"))
    fraud_b = folder / "fraud_b.onnx"
    onnx.save(model, str(fraud_b))
    return {"tiny": tiny, "fraud_a": fraud_a, "fraud_b": fraud_b}


def fraud_spec() -> dict[str, object]:
    return {
        "inputs": [
            {"name": "card_id", "datatype": "INT64", "shape": [-1]},
            {"name": "amount", "datatype": "FP32", "shape": [-1]},
        ],
        "outputs": ["fraud_score", "action"],
        "steps": [
            {
                "name": "lookup",
                "kind": "feature_lookup",
                "key": "card_id",
                "feature_set": "bench-cards",
                "features": FEATURES,
                "timeout_ms": 200,
                "on_missing": "refuse",
            },
            {
                "name": "prep",
                "kind": "transform",
                "ops": [
                    {"op": "stack", "fields": ["amount", *FEATURES], "output": "x"},
                    {"op": "scale", "field": "x", "mean": [1500.0] + [0.0] * 7, "std": [900.0] + [1.0] * 7},
                ],
            },
            {
                "name": "ensemble",
                "kind": "ensemble",
                "combine": "mean",
                "members": [{"model": "fraud", "version": 1}, {"model": "fraud", "version": 2}],
                "outputs": {"y": "y"},
            },
            {
                "name": "rules",
                "kind": "transform",
                "rules": [
                    "fraud_score = y[1]",
                    "if fraud_score > 0.0 and amount > 1000 then action = 'review' else action = 'approve'",
                ],
            },
        ],
    }


def setup(models_dir: Path, entities: int) -> None:
    """In the server's environment: register the models, load the features, make the endpoints."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    import numpy as np

    from inference import endpoints, traffic
    from inference.pipelines import features
    from inference.pipelines import services as pipelines
    from registry import storage
    from registry.services import model_register, model_version_create

    user, _ = get_user_model().objects.get_or_create(username="bench")
    for name, files in (("tiny", ["tiny"]), ("fraud", ["fraud_a", "fraud_b"])):
        model = model_register(name=name, user=user)
        for file in files:
            data = (models_dir / f"{file}.onnx").read_bytes()
            model_version_create(model=model, staged=storage.stage_bytes(data, filename=f"{file}.onnx"), user=user)
    rng = np.random.default_rng(0)
    rows = [
        {"card_id": i, **{f: float(v) for f, v in zip(FEATURES, rng.normal(size=7), strict=True)}}
        for i in range(1, entities + 1)
    ]
    features.features_load(feature_set="bench-cards", key="card_id", rows=rows)
    pipelines.pipeline_create(
        name="tiny-pipe",
        user=user,
        spec={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 10]}],
            "outputs": ["y"],
            "steps": [{"name": "model", "kind": "model", "model": "tiny", "version": 1}],
        },
    )
    pipelines.pipeline_create(name="fraud", user=user, spec=fraud_spec())
    # Both sides batch with the shipped defaults (inference.spec: up to 32 rows, no added
    # delay), which a pipeline's model step uses too: the ratio is the pipeline's own cost.
    for endpoint, route in (
        ("tiny", {"model": "tiny", "version": 1}),
        ("tiny-pipe", {"pipeline": "tiny-pipe", "version": 1}),
        ("fraud", {"pipeline": "fraud", "version": 1}),
    ):
        created = endpoints.endpoint_create(name=endpoint, user=user, require_key=False)
        traffic.traffic_policy_revise(endpoint=created, routes=[{**route, "role": "primary", "weight": 100}], user=user)


def overhead(n: int) -> None:
    """Per-request cost without the network, `tiny` direct and the one-step pipeline in
    alternating blocks: (a) the WSGI front (what gunicorn loads) called in process, one
    thread; (b) the ASGI front (what config.serve runs: the event-loop path, the batcher's
    future awaited) driven on a uvloop loop by 1 and by 16 concurrent callers. For each,
    medians over 10 alternating blocks: wall-clock us/request, this process's CPU
    us/request (all threads, the batchers' included) and the calling thread's (the event
    loop's: what bounds a server process's requests/s). CPU time is far less sensitive
    to other processes on a shared machine than wall time."""
    import asyncio
    import io
    import statistics

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # as the ASGI lifespan does
    import django

    django.setup()
    import uvloop

    from config.asgi_edge import application as asgi_app
    from config.wsgi import application

    body = b'{"inputs":{"x":[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]]}}'

    def call(name: str) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/api/v1/endpoints/{name}/predict",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
        }
        status = []
        b"".join(application(environ, lambda s, h, e=None: status.append(s)))
        assert status[0].startswith("200"), status

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, object]:
        return message

    async def acall(name: str) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": f"/api/v1/endpoints/{name}/predict",
            "query_string": b"",
            "headers": headers,
            "server": ("127.0.0.1", 8000),
        }
        sent = []

        async def send(msg: dict[str, object]) -> None:
            sent.append(msg)

        await asgi_app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def ablock(name: str, conc: int, count: int) -> None:
        async def caller(calls: int) -> None:
            for _ in range(calls):
                await acall(name)

        await asyncio.gather(*(caller(count // conc) for _ in range(conc)))

    def measure(label: str, one: object, blocks_of: int) -> None:
        per: dict[str, list[tuple[float, float, float]]] = {"tiny": [], "tiny-pipe": []}
        for name in per:
            one(name, 300)  # type: ignore[operator]
        for block in range(10):
            for name in ("tiny", "tiny-pipe") if block % 2 == 0 else ("tiny-pipe", "tiny"):
                clocks = (time.perf_counter(), time.process_time(), time.thread_time())
                one(name, blocks_of)  # type: ignore[operator]
                now = (time.perf_counter(), time.process_time(), time.thread_time())
                per[name].append(tuple((b - a) / blocks_of * 1e6 for a, b in zip(clocks, now, strict=True)))  # type: ignore[arg-type]
        med = {k: [statistics.median(row[i] for row in v) for i in range(3)] for k, v in per.items()}
        for name, (wall, cpu, thread) in med.items():
            print(
                f"{label:11s} {name:10s} wall {wall:6.1f}, cpu {cpu:6.1f}, calling thread's cpu {thread:6.1f} "
                f"us/request (10 blocks of {n})"
            )
        extra = [p - d for p, d in zip(med["tiny-pipe"], med["tiny"], strict=True)]
        print(f"{label:11s} one-step pipeline: wall {extra[0]:+.1f}, cpu {extra[1]:+.1f}, thread {extra[2]:+.1f} us")

    def wsgi_block(name: str, count: int) -> None:
        for _ in range(count):
            call(name)

    measure("wsgi", wsgi_block, n)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    for conc in (1, 16):
        measure(f"asgi c={conc}", lambda name, count, conc=conc: loop.run_until_complete(ablock(name, conc, count)), n)


# ------------------------------------------------------------------ load


LUA_FRAUD = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"inputs":{"card_id":[%d],"amount":[%d.5]}}', math.random(1, {n}), math.random(1, 3000))
  return wrk.format(nil, nil, nil, body)
end
"""
LUA_TINY = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":{"x":[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]]}}'
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, conc: int, duration: int) -> dict[str, float]:
    subprocess.run(["wrk", "-t2", f"-c{conc}", "-d2s", "-s", str(script), url], capture_output=True, check=True)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conc}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct.get("50", 0.0),
        "p99_ms": pct.get("99", 0.0),
        "errors": int(bad.group(1)) if bad else 0,
    }


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet (or a 404 on FastAPI's /)
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--conc", default="16,64")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per point")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=18461)
    parser.add_argument("--only", choices=["one-model", "fraud"], help="measure one of the two comparisons")
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--overhead", type=int, default=0, help="only: in-process us/request, N requests per block")
    parser.add_argument("--overhead-here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup(Path(args.setup), args.entities)
        return
    if args.overhead_here:
        overhead(args.overhead)
        return
    import redis

    work = Path(tempfile.mkdtemp(prefix="modelhub-pipebench."))
    models = build_models(work)
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "MODELHUB_DATA_DIR": str(work / "data"),
        "MODELHUB_SECRET_KEY": "bench-only-secret",
        "MODELHUB_ARTIFACT_STORE": str(work / "data" / "artifacts"),
        "MODELHUB_CELERY_EAGER": "1",
        "MODELHUB_LOG_LEVEL": "WARNING",
        "MODELHUB_INTRA_OP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "REDIS_URL": REDIS_URL,
    }
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [PY, __file__, "--setup", str(work), "--entities", str(args.entities)], env=env, check=True, cwd=ROOT
    )
    if args.overhead:
        subprocess.run(
            [PY, __file__, "--overhead-here", "--overhead", str(args.overhead)], env=env, check=True, cwd=ROOT
        )
        return
    (work / "tiny.lua").write_text(LUA_TINY)
    (work / "fraud.lua").write_text(LUA_FRAUD.replace("{n}", str(args.entities)))
    # redis-py for the peers' venv (pure Python): the package folder of our venv, on PYTHONPATH.
    import redis as redis_pkg

    shim = work / "peer-site"
    shim.mkdir()
    (shim / "redis").symlink_to(Path(redis_pkg.__file__).parent)
    concs = [int(c) for c in args.conc.split(",")]
    results = []
    out_file = ROOT / "bench" / "results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    out_file.parent.mkdir(parents=True, exist_ok=True)

    def record(**row: object) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        with out_file.open("a") as f:
            f.write(json.dumps(row) + "\n")

    # Both servers stay up (an idle one costs next to nothing) and the two sides of each
    # comparison are measured in alternating slices, so that both see the same background
    # load (this machine is shared); the table gives medians over the slices.
    base, peer_base = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.port + 1}"
    server = subprocess.Popen(
        [
            PY,
            "-m",
            "config.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    peer_env = {
        **env,
        "FRAUD_A": str(models["fraud_a"]),
        "FRAUD_B": str(models["fraud_b"]),
        "FEATURE_SET": "bench-cards",
        "ORT_INTRA_OP": "1",
        "PYTHONPATH": str(shim),
    }
    peer = subprocess.Popen(
        [
            PEER_PY,
            "-m",
            "uvicorn",
            "pipeline_fastapi:app",
            "--app-dir",
            str(ROOT / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port + 1),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=peer_env,
        cwd=ROOT,
        start_new_session=True,
    )
    pairs = [
        (
            "one-model",
            ("model directly", f"{base}/api/v1/endpoints/tiny/predict", "tiny.lua"),
            ("pipeline of one model step", f"{base}/api/v1/endpoints/tiny-pipe/predict", "tiny.lua"),
        ),
        (
            "fraud",
            ("fastapi+redis-py+2 ORT", f"{peer_base}/predict", "fraud.lua"),
            ("modelhub pipeline", f"{base}/api/v1/endpoints/fraud/predict", "fraud.lua"),
        ),
    ]
    pairs = [p for p in pairs if args.only in (None, p[0])]
    try:
        wait_ready(f"{base}/v2/health/ready", server)
        wait_ready(f"{peer_base}/openapi.json", peer)
        for case, first, second in pairs:
            for conc in concs:
                for slice_ in range(args.rounds):
                    order = (first, second) if slice_ % 2 == 0 else (second, first)
                    for target, url, script in order:
                        point = wrk(url, work / script, conc, args.duration)
                        record(slice=slice_, case=case, target=target, conc=conc, **point)
    finally:
        stop(server)
        stop(peer)
    import statistics

    print("\n| case | target | c | req/s (median) | p50 ms | p99 ms | errors | slices |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, first, second in pairs:
        for conc in concs:
            medians = {}
            for target in (first[0], second[0]):
                rows = [r for r in results if r["case"] == case and r["target"] == target and r["conc"] == conc]
                med = {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50_ms", "p99_ms")}
                medians[target] = med
                print(
                    f"| {case} | {target} | {conc} | {med['rps']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                    f"{sum(r['errors'] for r in rows)} | {len(rows)} |"
                )
            ratios = [
                b["rps"] / a["rps"]
                for a, b in zip(
                    [r for r in results if r["case"] == case and r["target"] == first[0] and r["conc"] == conc],
                    [r for r in results if r["case"] == case and r["target"] == second[0] and r["conc"] == conc],
                    strict=True,
                )
            ]
            print(
                f"| {case} | ratio {second[0]} / {first[0]} (median of slices) | {conc} | "
                f"{statistics.median(ratios):.2f} | | | | |"
            )
    print(f"\nresults: {out_file}")


if __name__ == "__main__":
    main()
