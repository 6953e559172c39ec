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

Version 3 added frames that carry many requests (a web process coalesces the requests
for one deployment that arrive while its previous frame is in flight): `g` lists each
request's tensor count (its tensors follow one another in the one table) and `d` each
request's deadline, while `dl` is the latest of them and `r` the one reply key. The
reply is one frame with the same `g`, plus `e` (per request: null, or [status, code,
message]) and `x` (per request: [rows in its ONNX Runtime call, queue ms, model ms], or
null). A frame without `g` is one request, as in version 2.
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
- `mh:direct`               hash: worker id -> JSON {"a": "host:port", "t": token} of the worker's direct socket

The direct socket (a worker's `--direct` listener; docs/serving-workers.md, "The direct
socket"): an event-loop web process sends its frames for a deployment straight to a worker
that holds it warm, and reads the reply on the same connection, instead of through the
deployment's Redis list (two Redis hops and a wake-up of the Redis process fewer per frame).
Redis stays the membership, the readiness and the fallback queue. A connection opens with
DIRECT_HELLO + the direct protocol version (u8) + the worker's token (the one it publishes
in `mh:direct`, so the socket is open to exactly who can read that Redis), answered by one
byte, DIRECT_OK. Then each message either way is `<u32 frame length><u64 call id><frame>`:
a request frame (with `k`, the deployment key, in its header), and the reply to that call id
(replies may come in any order). A worker that does not hold the deployment ready answers
`{"ok": 0, "c": "not_here"}`, and the web process sends those requests through Redis.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

PREFIX = "mh:"
# The wire format's version: 1 was the unversioned layout, 2 one request per frame; see the module doc.
FRAME_VERSION = 3
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
# Hash: worker id -> JSON {"a": "host:port", "t": token}: where its direct socket listens.
DIRECT_KEY = f"{PREFIX}direct"
# The direct socket's handshake and message envelope (module doc).
DIRECT_HELLO = b"MHDS"
DIRECT_VERSION = 1
DIRECT_TOKEN_BYTES = 32  # hex characters of the token
DIRECT_OK = b"\x01"
DIRECT_ENVELOPE = struct.Struct("<IQ")
# The error code of a worker's reply to a direct frame for a deployment it does not hold ready.
NOT_HERE = "not_here"


class FrameError(ValueError):
    """A frame that does not parse: a bug or a foreign writer on our keys."""


class FrameVersionMismatch(FrameError):
    """A frame from a peer of another frame version (another release): never read past its envelope."""

    def __init__(self, version: int, header: dict[str, Any] | None) -> None:
        self.version = version
        self.header = header or {}  # the envelope header when it parsed (`r`, `dl`, for a refusal)
        super().__init__(f"frame version {version}, this process speaks {FRAME_VERSION}")


def encode_frame(header: dict[str, Any], tensors: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One frame: the header (plus the tensor table) as JSON, then each tensor's raw bytes."""
    table: list[list[Any]] = []
    chunks: list[bytes | memoryview] = []
    _add_tensors(tensors or {}, table, chunks)
    head = orjson.dumps({**header, "t": table})
    return b"".join([_ENVELOPE.pack(_MAGIC, FRAME_VERSION, len(head)), head, *chunks])


def encode_many(header: dict[str, Any], groups: Sequence[Mapping[str, np.ndarray]]) -> bytes:
    """One frame carrying several requests (or their replies): `g` in the header counts each
    one's tensors, which follow in order in one tensor table (read back with `decode_many`)."""
    table: list[list[Any]] = []
    chunks: list[bytes | memoryview] = []
    counts = [_add_tensors(tensors, table, chunks) for tensors in groups]
    head = orjson.dumps({**header, "g": counts, "t": table})
    return b"".join([_ENVELOPE.pack(_MAGIC, FRAME_VERSION, len(head)), head, *chunks])


def _add_tensors(tensors: Mapping[str, np.ndarray], table: list[list[Any]], chunks: list[bytes | memoryview]) -> int:
    for name, arr in tensors.items():
        if arr.dtype.kind in "OUS":
            table.append([name, "json", list(arr.shape), [_text(v) for v in arr.ravel().tolist()]])
            continue
        contiguous = np.ascontiguousarray(arr)
        table.append([name, contiguous.dtype.str, list(contiguous.shape)])
        chunks.append(memoryview(contiguous.reshape(-1).view(np.uint8)))
    return len(tensors)


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
    header, entries, offset = _open(frame)
    tensors: dict[str, np.ndarray] = {}
    for entry in entries:
        name, array, offset = _tensor(frame, entry, offset)
        tensors[name] = array
    return header, tensors


def decode_many(frame: bytes) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """The header and each request's tensors of a frame written by `encode_many`; a frame
    written by `encode_frame` (no `g`) is one request."""
    header, entries, offset = _open(frame)
    counts = header.get("g")
    if counts is None:
        counts = [len(entries)]
    elif not isinstance(counts, list) or sum(counts) != len(entries):
        raise FrameError(f"frame groups {counts!r} do not add up to its {len(entries)} tensors")
    groups: list[dict[str, np.ndarray]] = []
    index = 0
    for count in counts:
        tensors: dict[str, np.ndarray] = {}
        for entry in entries[index : index + count]:
            name, array, offset = _tensor(frame, entry, offset)
            tensors[name] = array
        index += count
        groups.append(tensors)
    return header, groups


def _open(frame: bytes) -> tuple[dict[str, Any], list[Any], int]:
    """(header without its tensor table, the tensor table, where the tensor bytes start)."""
    version, start, end = _envelope(frame)
    try:
        header = orjson.loads(memoryview(frame)[start:end])
    except orjson.JSONDecodeError as exc:
        if version != FRAME_VERSION:
            raise FrameVersionMismatch(version, None) from None
        raise FrameError(f"frame header is not JSON: {exc}") from None
    if version != FRAME_VERSION:
        raise FrameVersionMismatch(version, header if isinstance(header, dict) else None)
    if not isinstance(header, dict):
        raise FrameError("frame header is not a JSON object")
    return header, header.pop("t", []), end


def _tensor(frame: bytes, entry: list[Any], offset: int) -> tuple[str, np.ndarray, int]:
    name, dtype, shape = entry[0], entry[1], tuple(entry[2])
    if dtype == "json":
        return name, np.array(entry[3], dtype=object).reshape(shape), offset
    dt = np.dtype(dtype)
    count = math.prod(shape)  # not np.prod: on a small tuple that costs ~20 us, most of a decode
    nbytes = count * dt.itemsize
    if offset + nbytes > len(frame):
        raise FrameError(f'tensor "{name}" needs {nbytes} bytes, {len(frame) - offset} remain')
    return name, np.frombuffer(frame, dtype=dt, count=count, offset=offset).reshape(shape), offset + nbytes


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
