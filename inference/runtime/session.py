"""ONNX Runtime sessions: load, warm, predict with a deadline, unload."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from inference.runtime.errors import (
    DeadlineExceeded,
    InputError,
    ModelExecutionError,
    ModelLoadError,
    ModelNotReady,
)
from inference.runtime.inputs import example_inputs
from inference.runtime.signature import Signature, UnsupportedTypeError, signature_from_session

logger = logging.getLogger(__name__)

Device = Literal["cpu", "gpu"]

_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build has.

    A provider being listed means it was compiled in, not that a device is present:
    onnxruntime-gpu lists CUDA on a machine without a GPU and falls back at load time.
    """
    return list(ort.get_available_providers())


def ort_error_text(exc: BaseException) -> str:
    """ORT's message without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " prefix."""
    text = str(exc)
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return text.strip()


class _Watch:
    __slots__ = ("deadline", "done", "fired", "run_options")

    def __init__(self, deadline: float, run_options: Any) -> None:
        self.deadline = deadline
        self.run_options = run_options
        self.fired = False
        self.done = False


class _DeadlineWatchdog:
    """One daemon thread that sets `RunOptions.terminate` on runs past their deadline.

    A `threading.Timer` per request would cost a thread start (~100 us) each time; a
    heap served by one thread costs a push and, rarely, a notify.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, run_options: Any) -> _Watch:
        w = _Watch(deadline, run_options)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ort-deadline-watchdog", daemon=True)
                self._thread.start()
            # Finished runs are only dropped when they reach the top; compact now and then
            # so that long deadlines on fast runs do not pile up.
            if len(self._heap) > 1024 and len(self._heap) > 4 * self._live:
                self._heap = [e for e in self._heap if not e[2].done]
                heapq.heapify(self._heap)
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._seq), w))
            self._live += 1
            if earliest:
                self._cond.notify()
        return w

    def release(self, w: _Watch) -> None:
        with self._cond:
            w.done = True
            self._live -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, w = self._heap[0]
                if w.done:
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                w.fired = True
                w.run_options.terminate = True


_WATCHDOG = _DeadlineWatchdog()


class LoadedModel:
    """An ONNX model loaded into an ONNX Runtime session, ready to predict once warm.

    Build it with `LoadedModel.load(path, device=...)`. `provider` is the execution
    provider the session really got, which is CPU when a GPU was asked for and CUDA
    could not be used. `predict` is thread-safe; inputs must already be validated
    against `signature` (see `inference.runtime.codec`).
    """

    def __init__(
        self,
        *,
        session: Any,
        signature: Signature,
        path: str,
        device_requested: Device,
        name: str = "",
        version: str = "",
        sha256: str = "",
        load_ms: float = 0.0,
    ) -> None:
        self._session: Any = session
        self.signature = signature
        self.path = path
        self.device_requested: Device = device_requested
        self.provider: str = session.get_providers()[0]
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.load_ms = load_ms
        self.warm_ms = 0.0
        self._warm = False
        self._output_names = list(signature.output_names)

    @classmethod
    def load(
        cls,
        path: str,
        *,
        device: Device = "cpu",
        intra_op_threads: int | None = None,
        name: str = "",
        version: str = "",
        sha256: str = "",
    ) -> LoadedModel:
        """Load `path` on `device` ("cpu" or "gpu"); ModelLoadError if ORT refuses it."""
        if device not in _PROVIDERS:
            raise ValueError(f'device must be "cpu" or "gpu", got "{device}"')
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        label = _label(name, version, path)
        started = time.perf_counter()
        try:
            session = ort.InferenceSession(path, options, providers=_PROVIDERS[device])
            signature = signature_from_session(session)
        except UnsupportedTypeError as exc:
            raise ModelLoadError(f"{label}: {exc}") from exc
        except Exception as exc:
            raise ModelLoadError(f"{label}: cannot load: {ort_error_text(exc)}") from exc
        load_ms = (time.perf_counter() - started) * 1000.0
        model = cls(
            session=session,
            signature=signature,
            path=path,
            device_requested=device,
            name=name,
            version=version,
            sha256=sha256,
            load_ms=load_ms,
        )
        if device == "gpu" and model.provider != "CUDAExecutionProvider":
            logger.warning(
                "%s: GPU requested but ONNX Runtime gave %s (CUDA unavailable); serving on CPU",
                label,
                model.provider,
            )
        return model

    @property
    def label(self) -> str:
        return _label(self.name, self.version, self.path)

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def is_warm(self) -> bool:
        return self._warm

    @property
    def ready(self) -> bool:
        """Loaded and warmed: safe to route traffic to."""
        return self._session is not None and self._warm

    def warm(self, runs: int = 3) -> None:
        """Run generated inputs `runs` times so first requests do not pay for lazy init."""
        started = time.perf_counter()
        feeds = example_inputs(self.signature)
        for _ in range(runs):
            try:
                self.predict(feeds)
            except ModelExecutionError as exc:
                raise ModelLoadError(f"{self.label}: warm-up run failed: {exc}") from exc
        self.warm_ms = (time.perf_counter() - started) * 1000.0
        self._warm = True

    def predict(
        self,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model; DeadlineExceeded stops the run once `timeout_s` has passed."""
        session = self._session
        if session is None:
            raise ModelNotReady(f"{self.label} is not loaded")
        names = self._output_names if outputs is None else list(outputs)
        feeds = inputs if isinstance(inputs, dict) else dict(inputs)
        if timeout_s is None:
            try:
                results = session.run(names, feeds)
            except Exception as exc:
                raise self._run_error(exc) from exc
            return dict(zip(names, results, strict=True))
        if timeout_s <= 0:
            raise DeadlineExceeded(f"{self.label}: deadline passed before the run started")
        run_options = ort.RunOptions()
        watch = _WATCHDOG.watch(time.monotonic() + timeout_s, run_options)
        try:
            results = session.run(names, feeds, run_options)
        except Exception as exc:
            if watch.fired:
                raise DeadlineExceeded(
                    f"{self.label}: inference ran past its deadline of {timeout_s * 1000:.0f} ms and was stopped"
                ) from exc
            raise self._run_error(exc) from exc
        finally:
            _WATCHDOG.release(watch)
        return dict(zip(names, results, strict=True))

    def _run_error(self, exc: Exception) -> Exception:
        # ORT's InvalidArgument means the feeds did not fit (a caller skipped the codec);
        # anything else is the model failing on valid input.
        if type(exc).__name__ == "InvalidArgument":
            return InputError(f"{self.label}: {ort_error_text(exc)}")
        return ModelExecutionError(f"{self.label}: inference failed: {ort_error_text(exc)}")

    def unload(self) -> None:
        """Drop the session; its memory goes once running predictions finish."""
        self._session = None
        self._warm = False

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("loaded" if self.loaded else "unloaded")
        return f"<LoadedModel {self.label} on {self.provider} {state}>"


def _label(name: str, version: str, path: str) -> str:
    if name:
        return f'model "{name}"' + (f" version {version}" if version else "")
    return f'model "{path}"'
