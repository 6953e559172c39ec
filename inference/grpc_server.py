"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`): a thin front.

    python -m inference.grpc_server --port 8001      # or MODELHUB_GRPC_PORT with config.serve

Like the other fronts (inference/asgi.py, inference/wsgi.py, inference/views.py) this one
only translates: each RPC becomes the `PredictRequest` the REST path would have sent and
goes through `inference.dataplane.DATAPLANE.handle_async()`, so keys, routing (splits,
sticky header, version pins), codec checks, batching, deadlines, metrics and limits are
the REST ones, decided in one place. The reply is translated back:

- ModelInfer -> POST /v2/models/{name}[/versions/{version}]/infer as a V2 binary-tensor
  body: `raw_input_contents` (or the typed `contents`, packed the same way) become the
  binary section, every output is asked for as binary and comes back in
  `raw_output_contents`. The gRPC deadline becomes the request's `timeout` parameter
  (the edge takes the smaller of it and the endpoint's timeout).
- ModelMetadata, ModelReady, ServerLive, ServerReady, ServerMetadata -> their GET routes.
- gRPC metadata are the headers: `authorization: Bearer mh_app_...` or `x-api-key`,
  `x-model-version`, an endpoint's sticky header.
- A refusal's HTTP status becomes a gRPC status (`STATUS_CODES`) with the same message;
  a 503's Retry-After goes into the message and the `retry-after` trailing metadata.
  Messages over MODELHUB_MAX_PREDICT_BYTES are refused by gRPC itself with
  RESOURCE_EXHAUSTED before the handler runs.

The message classes and the servicer base are the generated ones that tritonclient ships
(`tritonclient.grpc.service_pb2`, `service_pb2_grpc`, from Triton's grpc_service.proto,
which is KServe's V2 service plus Triton's extensions; those extensions answer
UNIMPLEMENTED). ALLOWED_HOSTS is not checked: it guards HTTP's Host header against forged
URLs and DNS rebinding, which do not reach a gRPC service (docs/serving.md, "gRPC").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from common.http import PredictRequest, Reply
from inference.dataplane import DATAPLANE
from inference.edge import max_body_bytes
from inference.runtime.codec import HEADER_LENGTH_HEADER
from inference.runtime.errors import InputError
from inference.runtime.signature import UnsupportedTypeError, numpy_dtype

log = logging.getLogger("modelhub.grpc")

# HTTP status of a refusal -> gRPC status (the REST error's message is kept).
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Which typed field of InferTensorContents holds each datatype (FP16/BF16: raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class Refused(Exception):
    """A reply other than 200, as a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


# ------------------------------------------------------------------ translation


def headers_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """gRPC metadata as the lower-case header dict the data plane reads (binary `-bin` keys skipped)."""
    headers: dict[str, str] = {}
    for key, value in metadata or ():
        if key.endswith("-bin") or not isinstance(value, str):
            continue
        name = key.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _parameter(param: pb.InferParameter) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None


def _set_parameter(target: Any, name: str, value: Any) -> None:
    param = target[name]
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    elif isinstance(value, str):
        param.string_param = value
    else:  # objects (the outlier scores): as JSON text
        param.string_param = orjson.dumps(value).decode()


def _typed_bytes(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """An input sent in `contents` packed as the V2 binary section would hold it."""
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in ("FP16", "BF16"):
            raise InputError(f'input "{tensor.name}": {tensor.datatype} tensors must be sent in raw_input_contents')
        return b""  # an unknown datatype: the codec refuses it by name
    values = getattr(tensor.contents, field)
    expected = math.prod(tensor.shape)
    if len(values) != expected:
        raise InputError(
            f'input "{tensor.name}": shape {list(tensor.shape)} needs {expected} values, '
            f"got {len(values)} in contents.{field}"
        )
    if tensor.datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    try:
        dtype = numpy_dtype(tensor.datatype)
        return np.asarray(values, dtype=dtype.newbyteorder("<")).tobytes()
    except (OverflowError, ValueError, UnsupportedTypeError) as exc:
        raise InputError(f'input "{tensor.name}": contents.{field} do not fit {tensor.datatype}: {exc}') from None


def infer_body(request: pb.ModelInferRequest, deadline_s: float | None) -> tuple[bytes, int]:
    """A ModelInferRequest as a V2 REST body with binary tensors, and its JSON header's length."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs")
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for i, tensor in enumerate(request.inputs):
        data = raw[i] if raw else _typed_bytes(tensor)
        params = {name: _parameter(p) for name, p in tensor.parameters.items()}
        params["binary_data_size"] = len(data)
        tensors.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "parameters": params}
        )
        chunks.append(data)
    parameters = {name: _parameter(p) for name, p in request.parameters.items()}
    parameters["binary_data_output"] = True
    if deadline_s is not None:
        deadline_us = max(1, int(deadline_s * 1e6))
        asked = parameters.get("timeout")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            deadline_us = min(asked, deadline_us)
        parameters["timeout"] = deadline_us
    header: dict[str, Any] = {"inputs": tensors, "parameters": parameters}
    if request.id:
        header["id"] = request.id
    if request.outputs:
        header["outputs"] = [{"name": out.name, "parameters": {"binary_data": True}} for out in request.outputs]
    head = orjson.dumps(header)
    return b"".join([head, *chunks]), len(head)


def infer_response(reply: Reply) -> pb.ModelInferResponse:
    """A V2 REST infer answer (all outputs binary) as a ModelInferResponse with raw_output_contents."""
    body = reply.body
    length = next((int(v) for k, v in reply.headers if k.lower() == HEADER_LENGTH_HEADER.lower()), len(body))
    head = orjson.loads(body[:length])
    response = pb.ModelInferResponse(
        model_name=head.get("model_name", ""), model_version=head.get("model_version", ""), id=head.get("id", "")
    )
    for name, value in (head.get("parameters") or {}).items():
        _set_parameter(response.parameters, name, value)
    offset = length
    view = memoryview(body)
    for out in head["outputs"]:
        response.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        size = int(out["parameters"]["binary_data_size"])  # every output was asked for as binary
        response.raw_output_contents.append(bytes(view[offset : offset + size]))
        offset += size
    return response


def refusal(reply: Reply) -> Refused:
    """A non-200 reply of the data plane as a gRPC status and message."""
    try:
        body = orjson.loads(reply.body)
        message = str(body.get("error") or body) if isinstance(body, dict) else str(body)
        code = str(body.get("code", "")) if isinstance(body, dict) else ""
    except orjson.JSONDecodeError:
        message, code = reply.body.decode("utf-8", "replace")[:500], ""
    status = STATUS_CODES.get(
        reply.status, grpc.StatusCode.INTERNAL if reply.status >= 500 else grpc.StatusCode.UNKNOWN
    )
    trailers: list[tuple[str, str]] = [("modelhub-error-code", code)] if code else []
    retry = next((v for k, v in reply.headers if k.lower() == "retry-after"), None)
    if retry is not None:
        message = f"{message} (retry after {retry} s)"
        trailers.append(("retry-after", retry))
    return Refused(status, message, tuple(trailers))


# ------------------------------------------------------------------ the service


def _model_path(name: str, version: str) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The V2 gRPC methods, each one data-plane request; Triton's extensions stay UNIMPLEMENTED."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def _call(
        self, context: grpc.aio.ServicerContext, method: str, path: str, body: bytes = b"", header_length: int = 0
    ) -> Reply:
        headers = headers_from(context.invocation_metadata())
        if body:
            headers["content-length"] = str(len(body))
            headers[HEADER_LENGTH_HEADER.lower()] = str(header_length)
            headers.pop("content-type", None)  # gRPC's own; the body is V2's binary layout

        async def read(limit: int) -> bytes:
            return body

        return await DATAPLANE.handle_async(PredictRequest(method, path, headers), read, self.executor)

    async def _ok(self, context: grpc.aio.ServicerContext, reply: Reply) -> dict[str, Any]:
        if reply.status != 200:
            refused = refusal(reply)
            await context.abort(refused.code, refused.message, trailing_metadata=refused.trailers)
        return dict(orjson.loads(reply.body))

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        reply = await self._call(context, "GET", "/v2/health/live")
        return pb.ServerLiveResponse(live=reply.status == 200)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        reply = await self._call(context, "GET", "/v2/health/ready")
        return pb.ServerReadyResponse(ready=reply.status == 200)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        body = await self._ok(context, await self._call(context, "GET", "/v2"))
        return pb.ServerMetadataResponse(name=body["name"], version=body["version"], extensions=body["extensions"])

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        reply = await self._call(context, "GET", _model_path(request.name, request.version) + "/ready")
        if reply.status in (401, 403):  # a key problem is an error, as over REST; anything else is "not ready"
            await self._ok(context, reply)
        return pb.ModelReadyResponse(ready=reply.status == 200)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        body = await self._ok(context, await self._call(context, "GET", _model_path(request.name, request.version)))
        tensors = [
            [pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in body[side]]
            for side in ("inputs", "outputs")
        ]
        return pb.ModelMetadataResponse(
            name=body["name"],
            versions=body["versions"],
            platform=body["platform"],
            inputs=tensors[0],
            outputs=tensors[1],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            body, header_length = infer_body(request, context.time_remaining())
        except InputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        path = _model_path(request.model_name, request.model_version) + "/infer"
        reply = await self._call(context, "POST", path, body, header_length)
        if reply.status != 200:
            await self._ok(context, reply)
        return infer_response(reply)


# ------------------------------------------------------------------ the server


def server_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_body_bytes()),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1),
    ]


async def serve(host: str, port: int, threads: int) -> None:
    """Serve until SIGTERM/SIGINT (then finish the calls in flight, up to 10 s)."""
    executor = ThreadPoolExecutor(threads, thread_name_prefix="grpc")
    server = grpc.aio.server(options=server_options())
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(executor), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC inference service on %s", address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=10)
    executor.shutdown(wait=False, cancel_futures=True)


def run(host: str, port: int) -> None:
    """Set Django up, warm this process's in-process deployments, serve (config.serve starts this too)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    from config import heap  # after django.setup()
    from inference.asgi import allow_orm_on_the_event_loop  # after django.setup()
    from inference.dataplane import server_started, warm_in_process_deployments  # after django.setup()

    allow_orm_on_the_event_loop()  # the edge cache's rare miss reads the database on the loop, as under uvicorn
    server_started()
    try:
        warm_in_process_deployments()
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("warming in-process deployments failed")
    heap.settle()
    asyncio.run(serve(host, port, settings.ASGI_THREADS))


def main(argv: list[str] | None = None) -> int:
    from config import serving  # read Django's settings: on use
    from config.env import log_level  # read Django's settings: on use

    host, _ = serving.bind_address()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=host, help="default: MODELHUB_BIND's host")
    parser.add_argument(
        "--port", type=int, default=serving.grpc_port() or 8001, help="default: MODELHUB_GRPC_PORT or 8001"
    )
    parser.add_argument("--log-level", default=log_level())
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
