"""The gRPC front's translation, without a server: ModelInferRequest -> V2 binary body,
V2 answer -> ModelInferResponse, refusal -> gRPC status (tests/inference/test_tritonclient_grpc.py
runs the real client against a real server)."""

from __future__ import annotations

import grpc
import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb

from common.http import Reply
from inference.grpc_server import infer_body, infer_response, refusal
from inference.runtime import codec


def request_with(**parameters: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="X", datatype="INT64", shape=[2])
    tensor.contents.int64_contents.extend([7, -3])
    for name, value in parameters.items():
        request.parameters[name].int64_param = value
    return request


def header_of(body: bytes, length: int) -> dict:
    return dict(orjson.loads(body[:length]))


def test_the_grpc_deadline_becomes_the_v2_timeout_unless_the_request_asks_for_less() -> None:
    body, length = infer_body(request_with(), 0.5)
    assert header_of(body, length)["parameters"]["timeout"] == 500_000
    body, length = infer_body(request_with(timeout=200_000), 0.5)
    assert header_of(body, length)["parameters"]["timeout"] == 200_000
    body, length = infer_body(request_with(timeout=9_000_000), 0.5)
    assert header_of(body, length)["parameters"]["timeout"] == 500_000
    body, length = infer_body(request_with(), None)
    assert "timeout" not in header_of(body, length)["parameters"]


def test_typed_contents_are_packed_as_v2_binary_tensors() -> None:
    body, length = infer_body(request_with(), None)
    header = header_of(body, length)
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[length:], dtype="<i8").tolist() == [7, -3]
    words = pb.ModelInferRequest(model_name="m")
    tensor = words.inputs.add(name="s", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"ab", b""])
    body, length = infer_body(words, None)
    assert body[length:] == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


def test_a_v2_answer_becomes_raw_output_contents_and_parameters() -> None:
    outputs = {"label": np.array([0, 2], dtype=np.int64), "p": np.ones((2, 3), dtype=np.float32)}
    info = codec.V2RequestInfo("r1", ("label", "p"), frozenset({"label", "p"}))
    payload, headers = codec.encode_v2_response("iris", "1", outputs, info, {"outliers": [{"score": 1.5}]})
    response = infer_response(Reply(200, payload, list(headers.items())))
    assert (response.model_name, response.model_version, response.id) == ("iris", "1", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [2]),
        ("p", "FP32", [2, 3]),
    ]
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() == [0, 2]
    assert np.frombuffer(response.raw_output_contents[1], dtype="<f4").tolist() == [1.0] * 6
    assert orjson.loads(response.parameters["outliers"].string_param) == [{"score": 1.5}]


def test_a_503_becomes_unavailable_with_the_retry_hint() -> None:
    body = orjson.dumps({"error": "nothing ready", "code": "no_ready_deployment"})
    refused = refusal(Reply(503, body, [("Retry-After", "2")]))
    assert refused.code is grpc.StatusCode.UNAVAILABLE
    assert refused.message == "nothing ready (retry after 2 s)"
    assert ("retry-after", "2") in refused.trailers
    assert ("modelhub-error-code", "no_ready_deployment") in refused.trailers
