#!/usr/bin/env python3
"""The body of bench/gpu_check.sh: one GPU and one CPU inference worker, mlp at batch 64."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from inference.pool import WorkerPoolTransport, worker_status  # noqa: E402
from inference.transport import DeploymentSpec  # noqa: E402

MLP_DIMS = (256, 2048, 2048, 2048, 10)


def mlp(path: Path, dims: tuple[int, ...] = MLP_DIMS, *, names: tuple[str, str] = ("input", "output")) -> Path:
    """The peers' mlp shape by default: 256 -> 2048 -> 2048 -> 2048 -> 10, ReLU, FP32 (about
    36 MB); `dims` for other widths and depths, `names` for the input and output tensors."""
    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], names[0]
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        last = f"m{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], [names[1]]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["batch", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def raw_rows_per_s(path: Path, providers: list[str], seconds: float) -> tuple[str, float]:
    sess = ort.InferenceSession(str(path), providers=providers)
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    for _ in range(10):
        sess.run(None, {"input": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"input": x})
        n += 1
    return sess.get_providers()[0], n * 64 / (time.perf_counter() - t0)


def pool_rows_per_s(transport: WorkerPoolTransport, spec: DeploymentSpec, seconds: float, threads: int = 8) -> float:
    x = np.random.default_rng(2).standard_normal((64, 256)).astype(np.float32)
    rows, lock, stop = [0], threading.Lock(), time.monotonic() + seconds

    def caller() -> None:
        while time.monotonic() < stop:
            transport.infer(spec, {"input": x}, timeout_s=10)
            with lock:
                rows[0] += 64

    started = time.monotonic()
    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return rows[0] / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    ort.preload_dlls()
    print(f"onnxruntime {ort.__version__}, providers listed: {ort.get_available_providers()}")
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check."))
    path = mlp(tmp / "mlp.onnx")
    url = os.environ["REDIS_URL"]
    workers = []
    for device in ("gpu", "cpu"):
        log = open(tmp / f"worker-{device}.log", "wb")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.inference_worker",
                    "--device",
                    device,
                    "--redis-url",
                    url,
                    "--pullers",
                    "4",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    transport = WorkerPoolTransport(url)
    specs = {
        device: DeploymentSpec(
            deployment_id=900 + i,
            endpoint="mlp",
            model="mlp",
            version=1,
            role="primary",
            weight=100,
            artifact_sha256="0" * 64,
            artifact_path=str(path),
            signature={},
            device=device,
            placement="worker_pool",
            max_batch_size=256,
            max_queue_delay_ms=0,
        )
        for i, device in enumerate(("gpu", "cpu"))
    }
    try:
        for spec in specs.values():
            transport.ensure_loaded(spec)
        deadline = time.monotonic() + 180
        while not all(transport.ready(s) for s in specs.values()):
            if time.monotonic() > deadline:
                raise SystemExit(f"workers did not warm the model; logs in {tmp}")
            time.sleep(0.5)
        for beat in worker_status():
            for key, rep in beat["deployments"].items():
                print(
                    f"worker {beat['worker']} device={beat['device']} deployment {key}: "
                    f"provider really got = {rep['provider']} (ready={rep['ready']})"
                )
        x = np.ones((1, 256), np.float32)
        answer = transport.infer(specs["gpu"], {"input": x}, timeout_s=10)
        print("one request through the gpu worker: provider =", answer.provider)
        print(f"\nmlp, batch 64, {args.seconds:.0f} s each (rows/s):")
        for label, providers in (
            ("raw ORT CUDA", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
            ("raw ORT CPU", ["CPUExecutionProvider"]),
        ):
            got, rate = raw_rows_per_s(path, providers, args.seconds)
            print(f"  {label:<28} {rate:>12,.0f}   ({got})")
        for device in ("gpu", "cpu"):
            rate = pool_rows_per_s(transport, specs[device], args.seconds)
            print(f"  {'pool, 1 ' + device + ' worker':<28} {rate:>12,.0f}")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(20)


if __name__ == "__main__":
    main()
