"""Child process of `validate_model_file`: `python -m inference.runtime.validate_child PATH`.

It limits its own address space, CPU time and threads, then runs the checks and
writes one JSON line per event to the stdout it started with (library chatter is
sent to stderr instead). Only the standard library is imported before the limits.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})

CHECKS = (
    "parse",
    "external_data",
    "operator_domains",
    "ir_version",
    "onnx_checker",
    "ort_load",
    "signature",
    "smoke_inference",
)

_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_MEMORY_MARKERS = ("bad_alloc", "Failed to allocate memory", "MemoryError", "Cannot allocate")


class CheckFailed(Exception):
    """An expected failure; its message is the check's detail."""


@functools.cache
def max_supported_ir_version() -> int:
    """The newest ONNX IR version this onnxruntime loads, found by probing a tiny model."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.log_severity_level = 4
    for ir_version in range(onnx.IR_VERSION + 2, 6, -1):
        model.ir_version = ir_version
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S112 - a refusal is the answer we probe for
            continue
        return ir_version
    return 13


class _Validation:
    def __init__(self, path: str, memory_limit_bytes: int, emit: Callable[[dict[str, Any]], None]):
        self.path = path
        self.memory_limit_bytes = memory_limit_bytes
        self.emit = emit
        self.model: Any = None
        self.session: Any = None
        self.signature: Any = None

    def run(self) -> None:
        for name in CHECKS:
            if not self._check(name, getattr(self, f"_{name}")):
                return

    def _check(self, name: str, step: Callable[[], str]) -> bool:
        self.emit({"event": "running", "name": name})
        started = time.perf_counter()
        ok = True
        try:
            detail = step()
        except CheckFailed as exc:
            ok, detail = False, str(exc)
        except MemoryError:
            ok, detail = False, self._memory_text("MemoryError")
        except Exception as exc:  # noqa: BLE001 - every failure becomes the check's detail
            ok, detail = False, self._describe(name, exc)
        duration_ms = (time.perf_counter() - started) * 1000.0
        check = {"name": name, "ok": ok, "detail": detail, "duration_ms": duration_ms}
        self.emit({"event": "check", "check": check})
        return ok

    def _memory_text(self, reason: str) -> str:
        from inference.runtime.validation import bytes_text  # after the limits

        return f"exceeded the memory limit of {bytes_text(self.memory_limit_bytes)} ({reason})"

    def _describe(self, name: str, exc: Exception) -> str:
        from inference.runtime.session import ort_error_text  # after the limits

        text = ort_error_text(exc)
        if any(marker in text for marker in _MEMORY_MARKERS):
            return self._memory_text(text[-300:])
        prefix = {
            "onnx_checker": "ONNX checker",
            "ort_load": "ONNX Runtime cannot load the model",
            "smoke_inference": "inference on generated input failed",
        }.get(name, name)
        return f"{prefix}: {text}"

    def _parse(self) -> str:
        import onnx

        try:
            model = onnx.load(self.path, format="protobuf", load_external_data=False)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - DecodeError, OSError, ...: all mean "not ONNX"
            raise CheckFailed(f"not a valid ONNX model: {exc}") from exc
        if not model.ir_version or not model.HasField("graph"):
            raise CheckFailed("not a valid ONNX model: no IR version or no graph")
        self.model = model
        opset = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
        producer = f"{model.producer_name} {model.producer_version}".strip()
        self.emit({"event": "model", "opset": opset, "producer": producer, "ir_version": model.ir_version})
        size = os.path.getsize(self.path)
        return f"ONNX model of {size} bytes with {len(model.graph.node)} top-level nodes"

    def _external_data(self) -> str:
        from onnx import TensorProto

        for where, tensor in _all_tensors(self.model):
            if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
                entries = {e.key: e.value for e in tensor.external_data}
                location = entries.get("location", "?")
                raise CheckFailed(
                    f'{where} "{tensor.name}" refers to external data at "{location}"; '
                    "only self-contained models are accepted"
                )
        return "self-contained: no external data"

    def _operator_domains(self) -> str:
        local = {(f.domain, f.name) for f in self.model.functions}
        seen: set[str] = set()
        for node in _all_nodes(self.model):
            if node.domain in KNOWN_DOMAINS or (node.domain, node.op_type) in local:
                seen.add(node.domain or "ai.onnx")
                continue
            known = ", ".join(sorted(d or '""' for d in KNOWN_DOMAINS))
            raise CheckFailed(
                f'operator domain "{node.domain}" (op {node.op_type}) is not supported; known domains: {known}'
            )
        return "domains: " + (", ".join(sorted(seen)) or "none")

    def _ir_version(self) -> str:
        import onnxruntime as ort

        newest = max_supported_ir_version()
        version = int(self.model.ir_version)
        if version > newest:
            raise CheckFailed(
                f"IR version {version} is newer than onnxruntime {ort.__version__} reads "
                f"(at most {newest}); export with an older IR version"
            )
        return f"IR version {version} (onnxruntime {ort.__version__} reads up to {newest})"

    def _onnx_checker(self) -> str:
        import onnx

        onnx.checker.check_model(self.model)
        return "passed"

    def _ort_load(self) -> str:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.model = None  # the session holds its own copy; free ours first
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        return f"loaded on {self.session.get_providers()[0]}"

    def _signature(self) -> str:
        from inference.runtime.signature import UnsupportedTypeError, signature_from_session  # after the limits

        try:
            self.signature = signature_from_session(self.session)
        except UnsupportedTypeError as exc:
            raise CheckFailed(str(exc)) from exc
        self.emit({"event": "signature", "signature": self.signature.to_dict()})
        ins = ", ".join(f"{s.name} {s.describe()}" for s in self.signature.inputs)
        outs = ", ".join(f"{s.name} {s.describe()}" for s in self.signature.outputs)
        return f"inputs: {ins or 'none'}; outputs: {outs or 'none'}"

    def _smoke_inference(self) -> str:
        from inference.runtime.inputs import example_inputs  # after the limits
        from inference.runtime.signature import shape_text  # after the limits

        feeds = example_inputs(self.signature)
        names = list(self.signature.output_names)
        results = self.session.run(names, feeds)
        shapes = ", ".join(f"{name} {shape_text(r.shape)}" for name, r in zip(names, results, strict=True))
        return f"ran on generated input; outputs: {shapes}"


def _all_nodes(model: Any) -> Iterator[Any]:
    for graph in _all_graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for attr in node.attribute:
                for sub in _attr_graphs(attr):
                    for graph in _all_graphs(sub):
                        yield from graph.node


def _attr_graphs(attr: Any) -> Iterator[Any]:
    if attr.HasField("g"):
        yield attr.g
    yield from attr.graphs


def _all_graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in _attr_graphs(attr):
                yield from _all_graphs(sub)


def _all_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    nodes: list[Any] = []
    for graph in _all_graphs(model.graph):
        for tensor in graph.initializer:
            yield "initializer", tensor
        for sparse in graph.sparse_initializer:
            yield "sparse initializer", sparse.values
            yield "sparse initializer indices", sparse.indices
        nodes.extend(graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    for node in nodes:
        where = f'attribute of node "{node.name or node.op_type}"'
        for attr in node.attribute:
            if attr.HasField("t"):
                yield where, attr.t
            for tensor in attr.tensors:
                yield where, tensor
            sparse_tensors = list(attr.sparse_tensors)
            if attr.HasField("sparse_tensor"):
                sparse_tensors.append(attr.sparse_tensor)
            for sparse in sparse_tensors:
                yield where, sparse.values
                yield where, sparse.indices


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.runtime.validate_child")
    parser.add_argument("path")
    parser.add_argument("--memory-limit-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--cpu-seconds", type=int, default=65)
    args = parser.parse_args(argv)

    os.environ.update(_THREAD_ENV)
    report: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def emit(event: dict[str, Any]) -> None:
        import orjson

        report.write(orjson.dumps(event).decode() + "\n")

    # Heavy imports first: the limit is for what the file makes us allocate, and a
    # failed import would be a confusing report. Nothing from the file is read yet.
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, args.cpu_seconds)
    _limit(resource.RLIMIT_AS, args.memory_limit_bytes)

    _Validation(args.path, args.memory_limit_bytes, emit).run()
    emit({"event": "done"})
    report.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
