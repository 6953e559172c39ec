from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from config.errors import PayloadTooLarge


def read_limited(stream: Any, limit: int) -> bytes:
    """Read a request body, refusing more than `limit` bytes whatever Content-Length says."""
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    return data


def parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses documents nested deeper than 1024 levels, so a hostile body
        # gets this 400 instead of a RecursionError.
        raise ParseError(f"malformed JSON: {exc}") from None


class JsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return parse_json(read_limited(stream, settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
