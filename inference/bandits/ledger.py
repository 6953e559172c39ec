"""The feedback ledger's writes off the request path (both stores).

`decide()` hands each decision's ledger entry to this process's `LedgerWriter` (an append
under a lock) instead of writing it in the request. A background thread flushes the
buffer every MODELHUB_BANDIT_LEDGER_FLUSH_MS (default 50), or as soon as a batch of
`WAKE_AT` entries is waiting, with the store's `record_many`: on Redis one pipelined
round trip (the same Lua call per entry: pulls + 1, the ledger hash with its TTL, the
decision log); on the database (the embedded default) one transaction (pulls added per
arm, the decisions bulk-inserted), run again with back-off while SQLite reports the
database locked. One flusher thread per process writes (and a feedback call's flush,
which takes the same lock), so a process never has two ledger writes racing each other.

- Bounded: at most MODELHUB_BANDIT_LEDGER_BUFFER entries wait; a decision that finds the
  buffer full is still served, but not recorded (feedback for it is a 404), and counted
  (`buffer_full`). A flush that cannot write (Redis unreachable, the database away or
  locked past the retries) loses its entries, counted too (`store_unreachable`). The
  counts are added to the store's shared counters (a Redis hash, or `BanditLedgerDropped`)
  with the next flush that gets through, so /metrics (`modelhub_bandit_ledger_dropped_total`)
  shows every process's drops (this process's not yet published ones added).
- Feedback that arrives before the flush: the feedback call flushes this process's buffer
  first (and waits for a flush in progress), so feedback handled by the process that
  decided always finds its entry. Handled by another process, an entry can be up to one
  flush interval (plus the write) away: a feedback that finds nothing waits two intervals
  and reads the ledger once more before answering 404.
- A crash (SIGKILL) loses the decisions of the last interval; a clean exit flushes them
  (atexit). With MODELHUB_BANDIT_LEDGER_FLUSH_MS=0 every entry is written in its request,
  as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

WAKE_AT = 256  # entries waiting that wake the flusher before its interval
REASONS = ("buffer_full", "store_unreachable")


class LedgerWriter:
    """One per process: a bounded buffer of (request id, LedgerEntry) and its flusher thread."""

    def __init__(self, *, capacity: int, interval_s: float, backend: Any = None) -> None:
        self.capacity = capacity
        self.interval_s = interval_s
        self._backend = backend  # None: inference.bandits.store.store() at each flush
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread, or a feedback call
        self._pending: list[tuple[str, Any]] = []
        self._wake = threading.Event()
        self._pid = 0
        self.dropped = dict.fromkeys(REASONS, 0)  # since this process started
        self._unpublished = dict.fromkeys(REASONS, 0)  # not yet added to the shared counters
        self._warned_at = 0.0
        self._closed = False

    # -- the request path
    def add(self, request_id: str, entry: Any) -> bool:
        """Buffer one entry (never blocks on Redis); False when the buffer was full."""
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            if len(self._pending) >= self.capacity:
                self.dropped["buffer_full"] += 1
                self._unpublished["buffer_full"] += 1
                return False
            self._pending.append((request_id, entry))
            waiting = len(self._pending)
        if waiting == WAKE_AT:
            self._wake.set()
        return True

    def pending(self) -> int:
        return len(self._pending)

    # -- the flush
    def flush(self) -> int:
        """Write every buffered entry now (one Redis round trip, or one database
        transaction); returns how many. Waits for a flush in progress, so that what it
        took is written when this returns."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                dropped, self._unpublished = self._unpublished, dict.fromkeys(REASONS, 0)
            if not batch and not any(dropped.values()):
                return 0
            try:
                self._store().record_many(batch, dropped=dropped)
            except Exception as exc:  # noqa: BLE001 - a flush never raises into its caller
                with self._lock:
                    for reason, count in dropped.items():
                        self._unpublished[reason] += count
                    self.dropped["store_unreachable"] += len(batch)
                    self._unpublished["store_unreachable"] += len(batch)
                self._warn(len(batch), exc)
                return 0
            return len(batch)

    def _store(self) -> Any:
        if self._backend is not None:
            return self._backend
        from inference.bandits.store import store  # the store module imports Django's ORM models lazily too

        return store()

    def _warn(self, lost: int, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10.0:
            self._warned_at = now
            log.warning("bandit ledger: %d decisions could not be written (%s); feedback for them is a 404", lost, exc)

    def _start(self) -> None:
        """The flusher thread of this process, started by its first entry."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        thread = threading.Thread(target=self._run, name="bandit-ledger", daemon=True)
        thread.start()

    def after_fork(self) -> None:
        """In a forked child (gunicorn's workers): fresh locks (one may have been held at the
        fork), no thread yet, and none of the parent's entries (the parent writes them)."""
        self._lock, self._flush_lock, self._wake = threading.Lock(), threading.Lock(), threading.Event()
        self._pending, self._pid = [], 0
        self._unpublished = dict.fromkeys(REASONS, 0)

    def close(self) -> None:
        """Flush and stop the thread (tests swap writers; a process exits through atexit)."""
        self._closed = True
        self._wake.set()
        self.flush()

    def _run(self) -> None:
        pid = self._pid
        while pid == os.getpid():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._closed:
                return  # close() flushes in its caller's thread
            self.flush()
            _close_db_connection()  # this thread's own (the database store), past its age or broken


def _close_db_connection() -> None:
    try:
        from django.db import close_old_connections

        close_old_connections()
    except Exception:  # noqa: BLE001 - the flusher never dies of it
        pass


_writer: LedgerWriter | None = None
_writer_lock = threading.Lock()


def buffering() -> bool:
    """Whether ledger entries are buffered: with a flush interval (either store)."""
    return float(settings.BANDIT_LEDGER_FLUSH_MS) > 0


def writer() -> LedgerWriter:
    """This process's writer (settings read once)."""
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = LedgerWriter(
                    capacity=int(settings.BANDIT_LEDGER_BUFFER),
                    interval_s=float(settings.BANDIT_LEDGER_FLUSH_MS) / 1000.0,
                )
                atexit.register(_writer.flush)
                os.register_at_fork(after_in_child=_writer.after_fork)
    return _writer


def flush_pending() -> None:
    """Write this process's buffered entries now (the feedback path calls it first)."""
    if _writer is not None:
        _writer.flush()


def dropped_totals() -> dict[str, int]:
    """Decisions dropped from the ledger by every process (shared counters, plus this
    process's not yet published), by reason; for /metrics."""
    from inference.bandits.store import store  # as in _store

    totals = dict.fromkeys(REASONS, 0)
    try:
        for reason, count in store().ledger_dropped().items():
            totals[reason] = totals.get(reason, 0) + count
    except Exception:  # noqa: BLE001 - /metrics shows what it has
        pass
    if _writer is not None:
        for reason, count in _writer._unpublished.items():
            totals[reason] += count
    return totals
