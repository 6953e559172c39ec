"""A DynamicBatcher whose thread runs at the worst moment, every time: each wake-up of the
batcher's thread lets it take what is queued before the submitting thread goes on.

The real scheduler does this only now and then (the GIL usually lets a submitter queue a
whole frame before the woken thread runs), so a test of "a frame's requests run in one call"
would pass by luck; with this batcher, a frame queued request by request runs in two calls
or more, every time. The inference worker tests load it into a real worker process
(`EAGER_WORKER`, an entry that swaps it into the repository before the worker starts)."""

from __future__ import annotations

import time

from inference.runtime import batcher as batcher_module


class EagerBatcher(batcher_module.DynamicBatcher):
    def _wake_locked(self) -> None:
        waiting = self._state == batcher_module._WAITING_FOR_WORK
        super()._wake_locked()
        deadline = time.monotonic() + 10
        while waiting and self._queue and time.monotonic() < deadline:
            self._cond.wait(0.001)  # releases the lock: the woken thread takes the queue now


EAGER_WORKER = (
    "import inference.runtime.repository as r, tests.runtime.eager_batcher as e, workers.inference_worker as m\n"
    "r.DynamicBatcher = e.EagerBatcher\n"
    "m.main()"
)
