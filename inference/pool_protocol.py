"""The worker pool's wire format and Redis key names, shared by web and worker processes.

No Django here: the inference worker imports it without settings.

A frame is `<magic b"\x89MHF"><u16 frame version><u32 header length><JSON header><raw tensor
bytes...>`. The header lists each tensor as `[name, numpy dtype string, shape]`; its bytes
follow in that order, C-contiguous.

The frame version (FRAME_VERSION) changes with any change of the layout or of what the
header means. The envelope is fixed for every version: magic, version, header length, a
JSON object header with `r` (reply key) and `dl` (deadline) in a request. So a peer of
another version is recognised, never misread: a worker answers such a request with a
refusal in its own version and logs an error; a web process that reads a reply of
another version answers 503 naming both. Frames of the releases before versioning
(`<u32 header length><JSON header>...`, version 1 here) are recognised too, and a worker
answers them in that old layout so that an old web process shows the refusal.
Tensors of strings (numpy object dtype) travel inside the header as a JSON list instead.
Floats never go through JSON: a [64, 256] FP32 tensor is 64 KiB of raw bytes, not 400 KB of text.

Redis keys (all prefixed `mh:`; documented in docs/serving-workers.md):

- `mh:q:{deployment key}`   list: request frames (RPUSH by web, LPOP/BLPOP by workers)
- `mh:r:{request id}`       list: the one reply frame (expires shortly after the deadline)
- `mh:assign:{device}`      hash: deployment key -> spec JSON, what every worker of a device class serves,
                            plus the field `_desired` that every writer sets: a hash without it
                            (Redis restarted empty) means "desired state unknown", and workers
                            keep what they serve until inference/reconcile.py writes it again
- `mh:hb:{worker id}`       string: the worker's heartbeat JSON, TTL HEARTBEAT_TTL_MS
- `mh:workers`              sorted set: worker id -> heartbeat expiry (epoch s)
- `mh:warm:{deployment key}` sorted set: worker id -> expiry (epoch s) of workers holding it warm
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import numpy as np
import orjson

PREFIX = "mh:"
# The wire format's version: 1 was the unversioned layout before it; see the module doc.
FRAME_VERSION = 2
_MAGIC = b"\x89MHF"
_ENVELOPE = struct.Struct("<4sHI")
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_MS = 6000
_U32 = struct.Struct("<I")


def queue_key(deployment_key: str) -> str:
    return f"{PREFIX}q:{deployment_key}"


def reply_key(request_id: str) -> str:
    return f"{PREFIX}r:{request_id}"


def assign_key(device: str) -> str:
    return f"{PREFIX}assign:{device}"


def heartbeat_key(worker_id: str) -> str:
    return f"{PREFIX}hb:{worker_id}"


WORKERS_KEY = f"{PREFIX}workers"
# Written into every `mh:assign:{device}` hash with the assignments; not a deployment.
ASSIGN_MARKER = "_desired"


def warm_key(deployment_key: str) -> str:
    return f"{PREFIX}warm:{deployment_key}"


def cold_key(deployment_key: str) -> str:
    """Workers that hold the deployment assigned but unloaded (memory budget): they load
    it when a request arrives. Sorted set like `warm_key`."""
    return f"{PREFIX}cold:{deployment_key}"


# Hash: deployment key -> the last load + warm-up time in ms a worker measured for it.
LOAD_MS_KEY = f"{PREFIX}loadms"


class FrameError(ValueError):
    """A frame that does not parse: a bug or a foreign writer on our keys."""


class FrameVersionMismatch(FrameError):
    """A frame from a peer of another frame version (another release): never read past its envelope."""

    def __init__(self, version: int, header: dict[str, Any] | None) -> None:
        self.version = version
        self.header = header or {}  # the envelope header when it parsed (`r`, `dl`, for a refusal)
        super().__init__(f"frame version {version}, this process speaks {FRAME_VERSION}")


def encode_frame(header: dict[str, Any], tensors: dict[str, np.ndarray] | None = None) -> bytes:
    """One frame: the header (plus the tensor table) as JSON, then each tensor's raw bytes."""
    table: list[list[Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, arr in (tensors or {}).items():
        if arr.dtype.kind in "OUS":
            table.append([name, "json", list(arr.shape), [_text(v) for v in arr.ravel().tolist()]])
            continue
        contiguous = np.ascontiguousarray(arr)
        table.append([name, contiguous.dtype.str, list(contiguous.shape)])
        chunks.append(memoryview(contiguous.reshape(-1).view(np.uint8)))
    head = orjson.dumps({**header, "t": table})
    return b"".join([_ENVELOPE.pack(_MAGIC, FRAME_VERSION, len(head)), head, *chunks])


def encode_legacy_refusal(header: dict[str, Any]) -> bytes:
    """A reply in the unversioned layout of version 1, for a web process of a release before versioning."""
    head = orjson.dumps({**header, "t": []})
    return _U32.pack(len(head)) + head


def _envelope(frame: bytes) -> tuple[int, int, int]:
    """(frame version, header start, header end) of any frame, or FrameError."""
    if len(frame) >= _ENVELOPE.size and frame[:4] == _MAGIC:
        _, version, size = _ENVELOPE.unpack_from(frame, 0)
        start = _ENVELOPE.size
    elif len(frame) >= 5 and frame[4:5] == b"{":  # version 1: <u32 length><JSON object>
        (size,) = _U32.unpack_from(frame, 0)
        version, start = 1, 4
    else:
        raise FrameError(f"not a Modelhub frame ({len(frame)} bytes starting {bytes(frame[:8])!r})")
    if start + size > len(frame):
        raise FrameError(f"frame header claims {size} bytes, frame has {len(frame) - start}")
    return version, start, start + size


def decode_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the tensors of a frame; the arrays are read-only views of `frame`.

    A frame of another version raises FrameVersionMismatch (with its header when that
    parses, so that a worker can still send the refusal to its reply key).
    """
    version, start, end = _envelope(frame)
    try:
        header = orjson.loads(memoryview(frame)[start:end])
    except orjson.JSONDecodeError as exc:
        if version != FRAME_VERSION:
            raise FrameVersionMismatch(version, None) from None
        raise FrameError(f"frame header is not JSON: {exc}") from None
    if version != FRAME_VERSION:
        raise FrameVersionMismatch(version, header if isinstance(header, dict) else None)
    tensors: dict[str, np.ndarray] = {}
    offset = end
    for entry in header.pop("t", []):
        name, dtype, shape = entry[0], entry[1], tuple(entry[2])
        if dtype == "json":
            tensors[name] = np.array(entry[3], dtype=object).reshape(shape)
            continue
        dt = np.dtype(dtype)
        count = math.prod(shape)  # not np.prod: on a small tuple that costs ~20 us, most of a decode
        nbytes = count * dt.itemsize
        if offset + nbytes > len(frame):
            raise FrameError(f'tensor "{name}" needs {nbytes} bytes, {len(frame) - offset} remain')
        tensors[name] = np.frombuffer(frame, dtype=dt, count=count, offset=offset).reshape(shape)
        offset += nbytes
    return header, tensors


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def spec_to_json(spec: Any) -> bytes:
    """A DeploymentSpec as JSON (the assignment a worker reads)."""
    return orjson.dumps(dataclasses.asdict(spec))


def spec_from_json(raw: bytes | str) -> Any:
    from inference.spec import DeploymentSpec  # on use, as the worker reads it

    data = orjson.loads(raw)
    fields = {f.name for f in dataclasses.fields(DeploymentSpec)}
    return DeploymentSpec(**{k: v for k, v in data.items() if k in fields})
