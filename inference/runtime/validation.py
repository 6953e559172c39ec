"""Upload validation of ONNX files, run in a child process with memory and time limits.

A model of a few hundred bytes can expand to gigabytes when ONNX Runtime loads it (a
sparse initializer with a huge dense shape is densified at load), and a model can
take arbitrarily long to run. So `validate_model_file` never loads the file in the
calling process: `python -m inference.runtime.validate_child` does, under
`RLIMIT_AS`, with one thread, and is killed after `timeout_s`. The child streams one
JSON line per event, so even a child killed mid-way yields a report that names the
check it was in. Nothing from the file is unpickled or executed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from inference.runtime.signature import Signature

# Keep ORT, OpenMP and BLAS to one thread and glibc to few malloc arenas: a validation
# must not compete with serving, and per-thread arenas would eat the address-space limit.
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
    "PYTHONDONTWRITEBYTECODE": "1",
}

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_DEATH_SIGNALS = {signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS}


@dataclass(frozen=True)
class Check:
    """One validation step: its name, outcome, what it found and how long it took."""

    name: str
    ok: bool
    detail: str
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 3),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(
            name=str(data["name"]),
            ok=bool(data["ok"]),
            detail=str(data.get("detail", "")),
            duration_ms=float(data.get("duration_ms", 0.0)),
        )


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one model file; `error` repeats the failed check's detail."""

    ok: bool
    checks: tuple[Check, ...]
    signature: Signature | None = None
    opset: dict[str, int] = field(default_factory=dict)
    producer: str = ""
    ir_version: int | None = None
    error: str = ""

    @property
    def failure(self) -> Check | None:
        """The check that failed, if any."""
        return next((c for c in self.checks if not c.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "signature": self.signature.to_dict() if self.signature else None,
            "opset": dict(self.opset),
            "producer": self.producer,
            "ir_version": self.ir_version,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        signature = data.get("signature")
        return cls(
            ok=bool(data["ok"]),
            checks=tuple(Check.from_dict(c) for c in data.get("checks", ())),
            signature=Signature.from_dict(signature) if signature else None,
            opset={str(k): int(v) for k, v in (data.get("opset") or {}).items()},
            producer=str(data.get("producer", "")),
            ir_version=data.get("ir_version"),
            error=str(data.get("error", "")),
        )


def bytes_text(n: int) -> str:
    """1073741824 -> "1 GiB", 805306368 -> "768 MiB"."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def validate_model_file(
    path: str | os.PathLike[str],
    *,
    memory_limit_bytes: int = 2 * 1024**3,
    timeout_s: float = 60.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ValidationReport:
    """Validate an uploaded ONNX file in a limited child process; never raises for a bad file.

    Checks, in order, stopping at the first failure: parse, external_data,
    operator_domains, ir_version, onnx_checker, ort_load, signature, smoke_inference.
    """
    absolute = os.path.abspath(os.fspath(path))
    command = [
        sys.executable,
        "-m",
        "inference.runtime.validate_child",
        "--memory-limit-bytes",
        str(memory_limit_bytes),
        "--cpu-seconds",
        str(int(timeout_s) + 5),
        absolute,
    ]
    pythonpath = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": pythonpath}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    # The child's events are read as they come (not at exit) so that `on_event` sees each
    # check start and finish: the validation task reports the running check with them.
    out_lines: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=_read_events, args=(proc.stdout, out_lines, on_event), daemon=True),
        threading.Thread(target=_read_all, args=(proc.stderr, err_chunks), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        proc.wait()
    for reader in readers:
        reader.join(10)
    stdout, stderr = b"".join(out_lines), b"".join(err_chunks)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    report = _report_from_events(
        stdout,
        stderr,
        returncode=proc.returncode,
        timed_out=timed_out,
        timeout_s=timeout_s,
        memory_limit_bytes=memory_limit_bytes,
        elapsed_ms=elapsed_ms,
    )
    return _without_paths(report, absolute)


def _read_events(
    stream: IO[bytes] | None, lines: list[bytes], on_event: Callable[[dict[str, Any]], None] | None
) -> None:
    if stream is None:
        return
    for line in stream:
        lines.append(line)
        if on_event is None:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            try:
                on_event(event)
            except Exception:  # a progress callback must never lose the report
                pass


def _read_all(stream: IO[bytes] | None, chunks: list[bytes]) -> None:
    if stream is not None:
        chunks.append(stream.read())


def _without_paths(report: ValidationReport, path: str) -> ValidationReport:
    """Reports are shown to users: ONNX Runtime's messages name the file it loaded
    ("Load model from /srv/store/sha256/ab/... failed"), which is the server's business.
    The path becomes "<model>", and anything else in its folder just its file name."""
    folder = os.path.dirname(path) + os.sep

    def clean(text: str) -> str:
        return text.replace(path, "<model>").replace(folder, "")

    checks = tuple(replace(c, detail=clean(c.detail)) for c in report.checks)
    return replace(report, checks=checks, error=clean(report.error))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _report_from_events(
    stdout: bytes,
    stderr: bytes,
    *,
    returncode: int,
    timed_out: bool,
    timeout_s: float,
    memory_limit_bytes: int,
    elapsed_ms: float,
) -> ValidationReport:
    checks: list[Check] = []
    signature: Signature | None = None
    opset: dict[str, int] = {}
    producer = ""
    ir_version: int | None = None
    running = "start"
    done = False
    for line in stdout.splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        kind = event.get("event")
        if kind == "running":
            running = str(event["name"])
        elif kind == "check":
            checks.append(Check.from_dict(event["check"]))
        elif kind == "model":
            opset = {str(k): int(v) for k, v in event["opset"].items()}
            producer = str(event["producer"])
            ir_version = event["ir_version"]
        elif kind == "signature":
            signature = Signature.from_dict(event["signature"])
        elif kind == "done":
            done = True

    if not done:
        detail = _death_detail(returncode, stderr, timed_out, timeout_s, memory_limit_bytes)
        spent = sum(c.duration_ms for c in checks)
        checks.append(Check(running, False, f"{detail} (during {running})", elapsed_ms - spent))
    failure = next((c for c in checks if not c.ok), None)
    return ValidationReport(
        ok=failure is None,
        checks=tuple(checks),
        signature=signature,
        opset=opset,
        producer=producer,
        ir_version=ir_version,
        error=failure.detail if failure else "",
    )


def _death_detail(returncode: int, stderr: bytes, timed_out: bool, timeout_s: float, memory_limit_bytes: int) -> str:
    if timed_out:
        return f"validation took longer than {timeout_s:g} s"
    tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    tail_text = f": {' / '.join(tail)}" if tail else ""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in _DEATH_SIGNALS:
            return (
                f"validation process was killed by {sig.name}, most likely on the memory "
                f"limit of {bytes_text(memory_limit_bytes)}{tail_text}"
            )
        return f"validation process was killed by {sig.name}{tail_text}"
    if "MemoryError" in "".join(tail) or "bad_alloc" in "".join(tail):
        return f"exceeded the memory limit of {bytes_text(memory_limit_bytes)}{tail_text}"
    return f"validation process failed with exit status {returncode}{tail_text}"
