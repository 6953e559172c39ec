"""Cost of one bandit decision (inference.bandits), in one thread, without a model.

    REDIS_URL=redis://127.0.0.1:6379/6 DATABASE_URL=postgres://.../db python bench/bandit_decide.py [N]

(a migrated database: a router's first read looks for a snapshot there).

For each policy (two arms, the default refresh of MODELHUB_BANDIT_REFRESH_S = 1 s) it
times N decisions twice: `choose()` (the decision alone: the cached shares, one random
draw; the statistics are re-read from Redis once a second and that read is included) and
`decide()` (the same plus the ledger entry: with Redis and MODELHUB_BANDIT_LEDGER_FLUSH_MS
> 0 (the default) handed to the process's background writer, inference/bandits/ledger.py;
with MODELHUB_BANDIT_LEDGER_FLUSH_MS=0 one Lua call to Redis in the call, as before).
Prints p50/p90/p99 in microseconds, and first a plain Redis PING for the round trip under
the write; with the writer, the entries it dropped (a tight loop outruns it) and the cost
per entry of one pipelined flush of 5,000. The router keys are "bench:<policy>" and are
deleted afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

POLICIES = ("epsilon_greedy", "thompson_bernoulli", "thompson_gaussian", "ucb1")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6  # noqa: E731
    return f"p50 {at(0.5):7.1f} us   p90 {at(0.9):7.1f} us   p99 {at(0.99):7.1f} us"


def main() -> None:
    import django

    django.setup()
    from django.conf import settings

    from inference.bandits import decide, ledger, router
    from inference.bandits.feedback import feedback
    from inference.bandits.store import PREFIX, store

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"store: {'Redis ' + settings.REDIS_URL if settings.REDIS_URL else 'database (embedded)'}; N={n}")
    backend = store()
    if settings.REDIS_URL:  # the floor under any write: one round trip to this Redis
        client = backend.client  # type: ignore[union-attr]
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            client.ping()
            samples.append(time.perf_counter() - started)
        print(f"{'redis PING':38s} {percentiles(samples)}")
    for policy in POLICIES:
        key = f"bench:{policy}"
        config = {"policy": policy, "arms": ["a", "b"], "floor": 0.05}
        for i in range(200):  # some statistics, so that every policy has a posterior
            decision = decide(key, ["a", "b"], config, f"{key}:warm:{i}", endpoint="bench")
            feedback("bench", f"{key}:warm:{i}", [float(decision.arm == "b")])
        for label, call in (
            ("choose (no write)", lambda i, key=key, config=config: router.choose(key, ["a", "b"], config, "bench")),
            (
                "decide (+ ledger)",
                lambda i, key=key, config=config: decide(key, ["a", "b"], config, f"{key}:{i}", endpoint="bench"),
            ),
        ):
            samples = []
            for i in range(n):
                started = time.perf_counter()
                call(i)
                samples.append(time.perf_counter() - started)
            print(f"{policy:19s} {label:18s} {percentiles(samples)}")
        if ledger.buffering():  # what the background writer did with this policy's decisions
            writer = ledger.writer()
            writer.flush()
            print(f"{'':19s} {'ledger':18s} dropped so far {writer.dropped}")
        if settings.REDIS_URL:
            client = backend.client  # type: ignore[union-attr]
            for pattern in (f"{PREFIX}*{key}*", f"{PREFIX}ledger:{key}:*"):
                for found in client.scan_iter(pattern, count=1000):
                    client.delete(found)
            client.srem(PREFIX + "routers", key)


def flush_cost(n: int) -> None:
    """The background writer's cost per entry: n buffered decisions written by one flush."""
    from inference.bandits import ledger, router
    from inference.bandits.store import PREFIX, LedgerEntry, store

    if not ledger.buffering():
        return
    key = "bench:flush"
    writer = ledger.LedgerWriter(capacity=n, interval_s=3600.0)
    writer.add(f"{key}:first", LedgerEntry(key, "a", 0.5, time.time(), "bench", True, False))
    writer.flush()  # the router's hash exists, as for a router in use
    for i in range(n):
        decision = router.choose(key, ["a", "b"], {"arms": ["a", "b"]}, "bench")
        writer.add(f"{key}:{i}", LedgerEntry(key, decision.arm, decision.propensity, time.time(), "bench", True, False))
    started = time.perf_counter()
    writer.flush()
    took = time.perf_counter() - started
    writer.close()
    print(f"{'flush of ' + str(n):38s} {took * 1e3:7.1f} ms, {took / n * 1e6:5.1f} us per entry (off the request path)")
    client = store().client  # type: ignore[union-attr]
    for found in client.scan_iter(f"{PREFIX}*{key}*", count=1000):
        client.delete(found)
    client.srem(PREFIX + "routers", key)


if __name__ == "__main__":
    main()
    flush_cost(5000)
