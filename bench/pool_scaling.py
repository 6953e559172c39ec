#!/usr/bin/env python3
"""Worker-pool scaling: rows/s through WorkerPoolTransport with 1, 2 and 4 CPU inference workers.

    DJANGO_SETTINGS_MODULE=config.settings MODELHUB_DATA_DIR=/tmp/mh \
        python3 bench/pool_scaling.py --out /tmp/pool_scaling.json

Builds the mlp model (256 -> 2048 -> 2048 -> 2048 -> 10, ReLU, FP32, IR 9, about 36 MB), starts a private
redis-server (``--redis-server``, default ``redis-server`` on PATH) on a free port, and for each N in the
interleaved order (1, 2, 4, 1, 2, 4 by default) starts N ``python -m workers.inference_worker --device cpu
--intra-op-threads 2 --pullers 4`` processes, assigns one worker-pool deployment (a fresh id per round),
waits until N workers report it warm in their heartbeats, then drives load from client threads in this
process (default 32 threads, each sending 8-row requests with ``WorkerPoolTransport.infer(timeout_s=10)``)
for ``--seconds`` and records requests/s, rows/s, p50/p99 round trip and errors. Prints medians per N and
writes every round to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# The same model builder as the GPU check (this folder is on sys.path when run as a script).
from gpu_check import mlp as build_mlp  # noqa: E402

from inference.pool import WorkerPoolTransport, worker_status  # noqa: E402
from inference.transport import DeploymentSpec  # noqa: E402


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis(binary: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp / "redis.log", "wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return proc, url
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"redis-server did not answer on {url}; see {tmp / 'redis.log'}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def drive(transport: WorkerPoolTransport, spec: DeploymentSpec, seconds: float, threads: int, rows: int) -> dict:
    x = np.random.default_rng(2).standard_normal((rows, 256)).astype(np.float32)
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[dict[str, int]] = [{} for _ in range(threads)]
    batch_rows: list[list[int]] = [[] for _ in range(threads)]
    workers_seen: list[set] = [set() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = [0.0]

    def caller(i: int) -> None:
        start.wait()
        while time.monotonic() < stop[0]:
            t0 = time.perf_counter()
            try:
                res = transport.infer(spec, {"input": x}, timeout_s=10)
            except Exception as exc:  # count, keep going
                name = type(exc).__name__
                errors[i][name] = errors[i].get(name, 0) + 1
                continue
            lat[i].append((time.perf_counter() - t0) * 1000.0)
            if res.batch_rows:
                batch_rows[i].append(int(res.batch_rows))
            workers_seen[i].add(res.extra.get("worker", ""))

    pool = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    stop[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - t0
    all_lat = [v for per in lat for v in per]
    all_err: dict[str, int] = {}
    for per in errors:
        for k, v in per.items():
            all_err[k] = all_err.get(k, 0) + v
    all_batches = [v for per in batch_rows for v in per]
    return {
        "seconds": elapsed,
        "requests": len(all_lat),
        "requests_per_s": len(all_lat) / elapsed,
        "rows_per_s": len(all_lat) * rows / elapsed,
        "p50_ms": pct(all_lat, 50),
        "p99_ms": pct(all_lat, 99),
        "errors": sum(all_err.values()),
        "errors_by_type": all_err,
        "mean_batch_rows": (sum(all_batches) / len(all_batches)) if all_batches else None,
        "workers_answering": len(set().union(*workers_seen) - {""}),
    }


def spec_for(deployment_id: int, path: Path, max_batch: int, delay_ms: int) -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=deployment_id,
        endpoint="mlp",
        model="mlp",
        version=1,
        role="primary",
        weight=100,
        artifact_sha256="0" * 64,
        artifact_path=str(path),
        signature={},
        device="cpu",
        placement="worker_pool",
        max_batch_size=max_batch,
        max_queue_delay_ms=delay_ms,
    )


def run_round(args, url: str, n: int, deployment_id: int, path: Path, tmp: Path, rnd: int) -> dict:
    procs = []
    for w in range(n):
        log = open(tmp / f"worker-r{rnd}-n{n}-{w}.log", "wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.inference_worker",
                    "--device",
                    "cpu",
                    "--redis-url",
                    url,
                    "--intra-op-threads",
                    str(args.intra_op_threads),
                    "--pullers",
                    str(args.pullers),
                    "--worker-id",
                    f"scal-r{rnd}-w{w}",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    transport = WorkerPoolTransport(url)
    spec = spec_for(deployment_id, path, args.max_batch_size, args.max_queue_delay_ms)
    try:
        transport.ensure_loaded(spec)
        t0 = time.monotonic()
        while transport.warm_workers(spec) < n:
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"only {transport.warm_workers(spec)}/{n} workers warmed deployment {spec.key}")
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker exited during warm-up; logs in {tmp}")
            time.sleep(0.2)
        warm_s = time.monotonic() - t0
        beats = [b for b in worker_status(transport.client) if spec.key in b.get("deployments", {})]
        providers = sorted({b["deployments"][spec.key].get("provider", "?") for b in beats})
        drive(transport, spec, args.warmup, args.threads, args.rows)  # discard: warm caches and connections
        res = drive(transport, spec, args.seconds, args.threads, args.rows)
        res.update(
            round=rnd,
            workers=n,
            deployment=spec.key,
            warm_wait_s=warm_s,
            providers=providers,
            warm_workers_reported=len(beats),
        )
        return res
    finally:
        try:
            transport.unload(spec)
        except Exception:
            pass
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--order", default="1,2,4,1,2,4", help="worker counts, in run order")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--intra-op-threads", type=int, default=2)
    ap.add_argument("--pullers", type=int, default=4)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--max-queue-delay-ms", type=int, default=0)
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("--model", default="", help="an existing mlp.onnx (input 'input' [N,256]); else built")
    ap.add_argument("--out", default="", help="write all rounds + medians here as JSON")
    ap.add_argument("--logdir", default="", help="worker/redis logs (default: a temp dir)")
    args = ap.parse_args()

    tmp = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="pool_scaling."))
    tmp.mkdir(parents=True, exist_ok=True)
    path = Path(args.model) if args.model else build_mlp(tmp / "mlp.onnx")
    redis_proc, url = start_redis(args.redis_server, tmp)
    os.environ["REDIS_URL"] = url
    import onnxruntime as ort

    print(
        f"python {platform.python_version()}, onnxruntime {ort.__version__}, nproc {os.cpu_count()}, "
        f"redis {url}, model {path} ({path.stat().st_size} bytes)",
        flush=True,
    )
    order = [int(v) for v in args.order.split(",")]
    rounds = []
    try:
        for rnd, n in enumerate(order):
            res = run_round(args, url, n, 9100 + rnd, path, tmp, rnd)
            rounds.append(res)
            print(
                f"round {rnd}: N={n} warm={res['warm_workers_reported']} answering={res['workers_answering']} "
                f"req/s={res['requests_per_s']:.0f} rows/s={res['rows_per_s']:.0f} p50={res['p50_ms']:.1f}ms "
                f"p99={res['p99_ms']:.1f}ms errors={res['errors']} mean_batch={res['mean_batch_rows']} "
                f"providers={res['providers']}",
                flush=True,
            )
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)

    medians = {}
    for n in sorted(set(order)):
        rs = [r for r in rounds if r["workers"] == n]
        medians[n] = {
            k: statistics.median(r[k] for r in rs) for k in ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms")
        }
        medians[n]["errors"] = sum(r["errors"] for r in rs)
        medians[n]["rounds"] = len(rs)
    base = medians[min(medians)]["rows_per_s"]
    print(f"\nmedians ({args.threads} client threads x {args.rows}-row requests, {args.seconds:.0f} s per round):")
    print(f"{'workers':>8} {'req/s':>9} {'rows/s':>9} {'x vs 1':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for n, m in medians.items():
        print(
            f"{n:>8} {m['requests_per_s']:>9.0f} {m['rows_per_s']:>9.0f} {m['rows_per_s'] / base:>7.2f} "
            f"{m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f} {m['errors']:>7}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"args": vars(args), "nproc": os.cpu_count(), "rounds": rounds, "medians": medians},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
