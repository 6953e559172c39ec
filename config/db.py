"""Database helpers shared by the hot writers.

On the embedded default several web processes write one SQLite file. WAL mode, a busy
timeout and `BEGIN IMMEDIATE` (config/settings.py) make a writer wait its turn instead
of failing, but a write can still lose the race (a busy timeout that runs out under a
burst, a checkpoint): `retry_if_locked` runs the whole transaction again then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOCKED = ("database is locked", "database table is locked")


def retry_if_locked(write: Callable[[], T], *, attempts: int = 6, first_wait_s: float = 0.05) -> T:
    """Run `write` (one whole transaction) again, with back-off, while SQLite reports the
    database locked. Inside an outer transaction nothing is retried: that transaction is
    already broken and its owner must start over."""
    for attempt in range(attempts):
        try:
            return write()
        except OperationalError as exc:
            if not any(text in str(exc) for text in _LOCKED) or connection.in_atomic_block or attempt == attempts - 1:
                raise
            wait_s = first_wait_s * 2**attempt
            log.warning("database locked, retrying the write in %.2f s (attempt %d)", wait_s, attempt + 1)
            time.sleep(wait_s)
    raise AssertionError("unreachable")
