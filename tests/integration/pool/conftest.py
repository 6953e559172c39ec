"""Worker-pool test fixtures: real inference worker processes, Redis, small models."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference import pool_protocol as wire
from inference.pool import WorkerPoolTransport, redis_client, worker_status
from inference.transport import DeploymentSpec

ROOT = Path(__file__).resolve().parents[3]


def mlp_model(path: Path, *, features: int = 16, hidden: int = 32, classes: int = 3, seed: int = 0) -> Path:
    """A small FP32 MLP [-1, features] -> [-1, classes] with a free batch dim."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("MatMul", ["hr", "w2"], ["output"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", classes])],
        [
            helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel()),
            helper.make_tensor("w2", TensorProto.FLOAT, w2.shape, w2.ravel()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def pool_spec(path: Path, *, deployment_id: int | None = None, **overrides: Any) -> DeploymentSpec:
    values: dict[str, Any] = dict(
        deployment_id=deployment_id or random.randint(10_000_000, 99_999_999),
        endpoint="scores",
        model="mlp",
        version=1,
        role="primary",
        weight=100,
        artifact_sha256="0" * 64,
        artifact_path=str(path),
        signature={},
        device="cpu",
        placement="worker_pool",
        max_batch_size=32,
        max_queue_delay_ms=2.0,
    )
    values.update(overrides)
    return DeploymentSpec(**values)


class InferenceWorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_inference_worker(
    redis_url: str,
    log: Path,
    *,
    device: str = "cpu",
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    frame_version: int | None = None,
    code: str | None = None,
) -> InferenceWorkerProcess:
    """`python -m workers.inference_worker`; `frame_version` starts it speaking another frame version
    (as a worker of another release would), `code` starts it with `python -c code` (code that
    changes a part of the worker, then calls its main()), `env` and `args` add settings."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    entry = ["-m", "workers.inference_worker"]
    if frame_version is not None:
        code = (
            "import inference.pool_protocol as w, workers.inference_worker as m\n"
            f"w.FRAME_VERSION = {int(frame_version)}\nm.main()"
        )
    if code is not None:
        entry = ["-c", code]
    cmd = [
        sys.executable,
        *entry,
        "--device",
        device,
        "--redis-url",
        redis_url,
        "--intra-op-threads",
        "1",
        "--pullers",
        "4",
        *(args or []),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return InferenceWorkerProcess(proc, log)


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, fail: bool = True) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    if not fail:
        return None
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def two_workers_warm(
    transport: WorkerPoolTransport, inference_workers: Callable[..., InferenceWorkerProcess], tmp_path: Path
) -> tuple[DeploymentSpec, InferenceWorkerProcess, InferenceWorkerProcess]:
    """A deployment of the small mlp that two real workers both hold warm."""
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"), max_queue_delay_ms=1)
    transport.ensure_loaded(spec)
    first, second = inference_workers(), inference_workers()
    wait_until(lambda: transport.warm_workers(spec) == 2, timeout=60, what="both workers to warm the model")
    return spec, first, second


def assert_each_answer_is_its_own(path: Path, inputs: list[np.ndarray], answers: list[Any]) -> None:
    """Every answer holds the outputs ONNX Runtime gives for its own request's rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x, answer in zip(inputs, answers, strict=True):
        expected = session.run(None, {"input": x})[0]
        assert answer.outputs["output"].shape == expected.shape
        np.testing.assert_allclose(answer.outputs["output"], expected, rtol=1e-5, atol=1e-5)


def outcome(error: BaseException | None) -> str:
    """How a request through a pool losing a worker ended: "ok", "503", "504", or what
    else happened (which fails the test)."""
    from config.errors import ServiceUnavailable
    from inference.runtime.errors import DeadlineExceeded

    if error is None:
        return "ok"
    if isinstance(error, ServiceUnavailable):
        return "503"
    if isinstance(error, DeadlineExceeded):
        return "504"
    return f"unexpected {type(error).__name__}: {error}"


def assert_survived_the_kill(outcomes: list[tuple[float, float, str]], killed_at: float, deadline_s: float) -> None:
    """(started, seconds, outcome) of every request: each ended 200, 503 or 504 by its
    deadline (plus scheduling slack on a busy machine), and the ones started well after the
    kill were all served by the surviving worker."""
    kinds = {o for _, _, o in outcomes}
    assert kinds <= {"ok", "503", "504"}, kinds
    assert max(seconds for _, seconds, _ in outcomes) < deadline_s + 3
    later = [o for started, _, o in outcomes if started > killed_at + deadline_s + 0.5]
    assert later and set(later) == {"ok"}, later[-20:]


def deployment_report(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """This deployment's entry in every live worker's heartbeat."""
    return [b["deployments"][spec.key] for b in worker_status() if spec.key in b.get("deployments", {})]


@pytest.fixture
def redis_url(settings: Any) -> str:
    if not settings.REDIS_URL:
        pytest.skip("worker-pool tests need Redis (set REDIS_URL)")
    return settings.REDIS_URL


@pytest.fixture
def transport(redis_url: str) -> Iterator[WorkerPoolTransport]:
    transport = WorkerPoolTransport(redis_url)
    yield transport
    client = redis_client(redis_url)
    client.delete(wire.assign_key("cpu"), wire.assign_key("gpu"))


@pytest.fixture
def inference_workers(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., InferenceWorkerProcess]]:
    """A factory of real `python -m workers.inference_worker` processes, all stopped at the end."""
    started: list[InferenceWorkerProcess] = []

    def start(**options: Any) -> InferenceWorkerProcess:
        worker = start_inference_worker(redis_url, tmp_path / f"inference-worker-{len(started)}.log", **options)
        started.append(worker)
        return worker

    start.started = started  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.stop()
