"""Where bandit state lives: Redis on the full stack, the database on the embedded default.

Redis (one instance; the keys of a request are touched by one Lua script, so every update
is atomic across web processes and workers):

    modelhub:bandit:routers              set of router keys
    modelhub:bandit:meta:<router>        hash: config (JSON)
    modelhub:bandit:endpoints:<router>   set of the endpoints it decided for
    modelhub:bandit:arms:<router>        hash: "<arm>|pulls" (int), "<arm>|n", "<arm>|s", "<arm>|ss" (floats)
    modelhub:bandit:ledger:<request id>  hash: <router> -> [arm, propensity, time, endpoint, learn, bernoulli];
                                         "_reward" once fed back; expires after the retention
    modelhub:bandit:log:<router>         stream of decisions (q, a, p) and rewards (q, r, c);
                                         trimmed to the retention by the sweep, and to LOG_MAX entries
    modelhub:bandit:ledger_dropped       hash: reason -> decisions the ledger writers dropped
                                         (buffer_full, store_unreachable), summed over processes

The sweep (beat) copies every router's statistics to the database (`BanditRouter`,
`BanditArm`); when a router's Redis hash is gone (a flush, a Redis without persistence
restarted) the next read restores it from that snapshot. The ledger and the decision log
are not snapshotted: after a Redis flush, feedback for earlier decisions is a 404.

Database (embedded default): the same statistics in `BanditArm`, the ledger and the
decision log in `BanditDecision`, its retention enforced by the same sweep, the ledger
writers' drops in `BanditLedgerDropped`. A flush (`record_many`) is one transaction: pulls
added per arm, the decisions bulk-inserted, run again with back-off while SQLite reports
the database locked (config.db.retry_if_locked).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F

from config.db import retry_if_locked
from inference.bandits.policies import ArmStats

log = logging.getLogger(__name__)

PREFIX = "modelhub:bandit:"
ROUTERS = PREFIX + "routers"
LOG_MAX = 200_000  # entries per router's decision log, whatever the retention
LEDGER_DROPPED = PREFIX + "ledger_dropped"  # hash: reason -> decisions not recorded, all processes

# KEYS: arms, ledger, log. ARGV: arm, router, ledger value, TTL, log max, request id,
# propensity, force. Returns 0 without writing when the arms hash is missing and force is
# "0" (a flushed Redis: the caller restores the snapshot first, then forces).
_DECIDE = """
if ARGV[8] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|pulls', 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'q', ARGV[6], 'a', ARGV[1], 'p', ARGV[7])
return 1
"""

# KEYS[1] ledger; ARGV: request id, reward sum, count, sum of squares, log max, then per
# router: arms key, arm, log key, learn ("1"/"0"). Returns {1} accepted, {0} unknown,
# {2, first reward} duplicate.
_FEEDBACK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local first = redis.call('HGET', KEYS[1], '_reward')
if first then return {2, first} end
redis.call('HSET', KEYS[1], '_reward', ARGV[2] .. '|' .. ARGV[3])
for i = 6, #ARGV, 4 do
  if ARGV[i + 3] == '1' then
    redis.call('HINCRBYFLOAT', ARGV[i], ARGV[i + 1] .. '|n', ARGV[3])
    redis.call('HINCRBYFLOAT', ARGV[i], ARGV[i + 1] .. '|s', ARGV[2])
    redis.call('HINCRBYFLOAT', ARGV[i], ARGV[i + 1] .. '|ss', ARGV[4])
  end
  redis.call('XADD', ARGV[i + 2], 'MAXLEN', '~', ARGV[5], '*', 'q', ARGV[1], 'r', ARGV[2], 'c', ARGV[3])
end
return {1}
"""

_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    router_key: str
    arm: str
    propensity: float
    at: float  # unix seconds
    endpoint: str
    learn: bool
    bernoulli: bool


@dataclass(frozen=True, slots=True)
class Feedback:
    """What a feedback call did: `status` "accepted", "duplicate" or "unknown"."""

    status: str
    entries: tuple[LedgerEntry, ...] = ()
    reward: float | None = None
    count: int = 0


def _models() -> Any:
    # The ORM models need Django's app registry; the prediction fronts import this package
    # (through the pipelines' router step) before Django has set up.
    from inference.bandits import models

    return models


def retention_s() -> float:
    return float(settings.BANDIT_LEDGER_RETENTION_S)


def _stats(raw: dict[str, float], arms: Any) -> dict[str, ArmStats]:
    out = {}
    for arm in arms:
        out[arm] = ArmStats(
            pulls=int(raw.get(f"{arm}|pulls", 0)),
            n=float(raw.get(f"{arm}|n", 0.0)),
            s=float(raw.get(f"{arm}|s", 0.0)),
            ss=float(raw.get(f"{arm}|ss", 0.0)),
        )
    return out


def _arm_names(raw: dict[str, Any]) -> list[str]:
    return sorted({field.rpartition("|")[0] for field in raw})


# ------------------------------------------------------------------ Redis


def _decide_call(request_id: str, entry: LedgerEntry, retention: int) -> tuple[list[str], list[Any]]:
    """The _DECIDE script's keys and arguments for one entry (without the force flag)."""
    value = json.dumps([entry.arm, entry.propensity, entry.at, entry.endpoint, entry.learn, entry.bernoulli])
    keys = [PREFIX + "arms:" + entry.router_key, PREFIX + "ledger:" + request_id, PREFIX + "log:" + entry.router_key]
    return keys, [entry.arm, entry.router_key, value, retention, LOG_MAX, request_id, entry.propensity]


class RedisStore:
    def __init__(self, url: str) -> None:
        timeout = float(getattr(settings, "REDIS_SOCKET_TIMEOUT", 2.0))
        self.client: Any = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._decide = self.client.register_script(_DECIDE)
        self._feedback = self.client.register_script(_FEEDBACK)
        self._restore = self.client.register_script(_RESTORE)

    # -- the router's reads and writes
    def load(self, router_key: str) -> dict[str, ArmStats]:
        raw = {k.decode(): float(v) for k, v in self.client.hgetall(PREFIX + "arms:" + router_key).items()}
        if not raw:
            raw = self._restore_from_snapshot(router_key)
        return _stats(raw, _arm_names(raw))

    def _restore_from_snapshot(self, router_key: str) -> dict[str, float]:
        raw: dict[str, float] = {}
        for arm in _models().BanditArm.objects.filter(router__key=router_key):
            raw.update(
                {f"{arm.arm}|pulls": arm.pulls, f"{arm.arm}|n": arm.n, f"{arm.arm}|s": arm.s, f"{arm.arm}|ss": arm.ss}
            )
        if raw:
            args = [
                x for pair in raw.items() for x in (pair[0], repr(pair[1]) if isinstance(pair[1], float) else pair[1])
            ]
            if self._restore(keys=[PREFIX + "arms:" + router_key], args=args):
                log.warning("bandit router %s: statistics restored from the database snapshot", router_key)
        return raw

    def touch(self, router_key: str, config: dict[str, Any], endpoint: str) -> None:
        pipe = self.client.pipeline()
        pipe.sadd(ROUTERS, router_key)
        pipe.hset(PREFIX + "meta:" + router_key, "config", json.dumps(config))
        if endpoint:
            pipe.sadd(PREFIX + "endpoints:" + router_key, endpoint)
        pipe.execute()

    def record(self, request_id: str, entry: LedgerEntry) -> None:
        """One Lua call; when the router's hash is missing (new, or flushed) the snapshot is
        restored first, so a decision never starts the statistics over from 1 pull. (Not
        record_many of one: a pipeline with a script checks it exists first, a second round trip.)"""
        keys, args = _decide_call(request_id, entry, max(int(retention_s()), 1))
        if not self._decide(keys=keys, args=[*args, "0"]):
            self._restore_from_snapshot(entry.router_key)
            self._decide(keys=keys, args=[*args, "1"])

    def record_many(self, entries: list[tuple[str, LedgerEntry]], *, dropped: dict[str, int] | None = None) -> None:
        """The same Lua call per entry, all in one pipelined round trip (the ledger writer's
        flush, inference/bandits/ledger.py); `dropped` counts are added to the shared drop
        counters in the same round trip. Entries whose router hash was missing are written
        again after the snapshot is restored."""
        retention = max(int(retention_s()), 1)
        calls: list[tuple[list[str], list[Any]]] = []
        pipe = self.client.pipeline(transaction=False)
        for request_id, entry in entries:
            keys, args = _decide_call(request_id, entry, retention)
            calls.append((keys, args))
            self._decide(keys=keys, args=[*args, "0"], client=pipe)
        for reason, count in (dropped or {}).items():
            if count:
                pipe.hincrby(LEDGER_DROPPED, reason, count)
        results = pipe.execute()
        missing = [(keys, args) for (keys, args), written in zip(calls, results, strict=False) if not written]
        if not missing:
            return
        # A router new or flushed: its snapshot restored once, then its entries forced, in one round trip.
        for router_key in dict.fromkeys(args[1] for _, args in missing):
            self._restore_from_snapshot(router_key)
        pipe = self.client.pipeline(transaction=False)
        for keys, args in missing:
            self._decide(keys=keys, args=[*args, "1"], client=pipe)
        pipe.execute()

    def ledger_dropped(self) -> dict[str, int]:
        """Decisions every process dropped from the ledger (shared counters), by reason."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(LEDGER_DROPPED).items()}

    # -- feedback
    def entries(self, request_id: str) -> tuple[list[LedgerEntry], bool]:
        raw = self.client.hgetall(PREFIX + "ledger:" + request_id)
        rewarded = b"_reward" in raw
        out = []
        for key, value in raw.items():
            if key == b"_reward":
                continue
            arm, p, at, endpoint, learn, bernoulli = json.loads(value)
            out.append(LedgerEntry(key.decode(), arm, p, at, endpoint, learn, bernoulli))
        return out, rewarded

    def apply(self, request_id: str, entries: list[LedgerEntry], rewards: list[float]) -> Feedback:
        total, count, squares = sum(rewards), len(rewards), sum(r * r for r in rewards)
        args: list[Any] = [request_id, repr(total), count, repr(squares), LOG_MAX]
        for e in entries:
            args += [PREFIX + "arms:" + e.router_key, e.arm, PREFIX + "log:" + e.router_key, "1" if e.learn else "0"]
        result = self._feedback(keys=[PREFIX + "ledger:" + request_id], args=args)
        if result[0] == 0:
            return Feedback("unknown")
        if result[0] == 2:
            first_sum, _, first_count = result[1].decode().partition("|")
            return Feedback("duplicate", tuple(entries), float(first_sum), int(first_count))
        return Feedback("accepted", tuple(entries), total, count)

    # -- reading back
    def routers(self) -> list[str]:
        return sorted(key.decode() for key in self.client.smembers(ROUTERS))

    def meta(self, router_key: str) -> tuple[dict[str, Any] | None, list[str]]:
        pipe = self.client.pipeline()
        pipe.hget(PREFIX + "meta:" + router_key, "config")
        pipe.smembers(PREFIX + "endpoints:" + router_key)
        config, endpoints = pipe.execute()
        if config is None:  # a flushed Redis: the last snapshot
            router = _models().BanditRouter.objects.filter(key=router_key).first()
            return (router.config, list(router.endpoints)) if router else (None, [])
        return json.loads(config), sorted(e.decode() for e in endpoints)

    def decisions(self, router_key: str) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for entry_id, fields in self.client.xrange(PREFIX + "log:" + router_key):
            request_id = fields[b"q"].decode()
            at = int(entry_id.decode().partition("-")[0]) / 1000.0
            if b"a" in fields:
                rows[request_id] = {
                    "request_id": request_id,
                    "time": at,
                    "arm": fields[b"a"].decode(),
                    "propensity": float(fields[b"p"]),
                    "reward": None,
                    "reward_count": 0,
                    "rewarded_at": None,
                }
            elif request_id in rows:
                rows[request_id].update(reward=float(fields[b"r"]), reward_count=int(fields[b"c"]), rewarded_at=at)
        return list(rows.values())

    # -- the sweep
    def sweep(self) -> dict[str, int]:
        cutoff_ms = int((time.time() - retention_s()) * 1000)
        trimmed = snapshotted = 0
        for router_key in self.routers():
            trimmed += int(self.client.xtrim(PREFIX + "log:" + router_key, minid=cutoff_ms, approximate=False))
            raw = {k.decode(): float(v) for k, v in self.client.hgetall(PREFIX + "arms:" + router_key).items()}
            config, endpoints = self.meta(router_key)
            with transaction.atomic():
                router, _ = _models().BanditRouter.objects.update_or_create(
                    key=router_key, defaults={"config": config or {}, "endpoints": endpoints}
                )
                for arm, stats in _stats(raw, _arm_names(raw)).items():
                    _models().BanditArm.objects.update_or_create(
                        router=router,
                        arm=arm,
                        defaults={"pulls": stats.pulls, "n": stats.n, "s": stats.s, "ss": stats.ss},
                    )
            snapshotted += 1
        return {"trimmed": trimmed, "snapshotted": snapshotted}


# ------------------------------------------------------------------ database (embedded)


def _now() -> datetime:
    return datetime.now(UTC)


class DatabaseStore:
    def load(self, router_key: str) -> dict[str, ArmStats]:
        return {
            a.arm: ArmStats(pulls=a.pulls, n=a.n, s=a.s, ss=a.ss)
            for a in _models().BanditArm.objects.filter(router__key=router_key)
        }

    def touch(self, router_key: str, config: dict[str, Any], endpoint: str) -> None:
        with transaction.atomic():
            router, _ = _models().BanditRouter.objects.select_for_update().get_or_create(key=router_key)
            router.config = config
            if endpoint and endpoint not in router.endpoints:
                router.endpoints = sorted([*router.endpoints, endpoint])
            router.save()

    def __init__(self) -> None:
        self._arm_ids: dict[tuple[str, str], int] = {}  # (router, arm) -> BanditArm id, per process

    def _arm_id(self, router_key: str, arm: str) -> int:
        found = self._arm_ids.get((router_key, arm))
        if found is None:
            router, _ = _models().BanditRouter.objects.get_or_create(key=router_key)
            found = _models().BanditArm.objects.get_or_create(router=router, arm=arm)[0].pk
            self._arm_ids[(router_key, arm)] = found
        return found

    def record(self, request_id: str, entry: LedgerEntry) -> None:
        """One entry, in its request (MODELHUB_BANDIT_LEDGER_FLUSH_MS=0)."""
        self.record_many([(request_id, entry)])

    def record_many(self, entries: list[tuple[str, LedgerEntry]], *, dropped: dict[str, int] | None = None) -> None:
        """The ledger writer's flush (inference/bandits/ledger.py) in one transaction: pulls
        added per arm (one UPDATE each), the decisions in one bulk INSERT (a request id
        decided again by the same router: the last decision), `dropped` added to the shared
        counters. Run again while SQLite reports the database locked."""
        retry_if_locked(lambda: self._record_many(entries, dropped or {}))

    def _record_many(self, entries: list[tuple[str, LedgerEntry]], dropped: dict[str, int]) -> None:
        models = _models()
        pulls = Counter((entry.router_key, entry.arm) for _, entry in entries)
        latest = {(request_id, entry.router_key): entry for request_id, entry in entries}
        rows = [
            models.BanditDecision(
                request_id=request_id,
                router_key=router_key,
                arm=entry.arm,
                propensity=entry.propensity,
                endpoint=entry.endpoint,
                learn=entry.learn,
                bernoulli=entry.bernoulli,
                decided_at=datetime.fromtimestamp(entry.at, UTC),
            )
            for (request_id, router_key), entry in latest.items()
        ]
        with transaction.atomic():
            for (router_key, arm), count in pulls.items():
                if not models.BanditArm.objects.filter(pk=self._arm_id(router_key, arm)).update(
                    pulls=F("pulls") + count
                ):
                    # The router was deleted meanwhile, or the write that created the arm was
                    # rolled back (a retry): create it again.
                    self._arm_ids.pop((router_key, arm), None)
                    models.BanditArm.objects.filter(pk=self._arm_id(router_key, arm)).update(pulls=F("pulls") + count)
            models.BanditDecision.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["request_id", "router_key"],
                update_fields=["arm", "propensity", "endpoint", "learn", "bernoulli", "decided_at"],
            )
            for reason, count in dropped.items():
                if count:
                    row = models.BanditLedgerDropped.objects.get_or_create(reason=reason)[0]
                    models.BanditLedgerDropped.objects.filter(pk=row.pk).update(count=F("count") + count)

    def ledger_dropped(self) -> dict[str, int]:
        """Decisions every process dropped from the ledger (shared counters), by reason."""
        return dict(_models().BanditLedgerDropped.objects.values_list("reason", "count"))

    def _live(self, request_id: str) -> Any:
        cutoff = _now() - timedelta(seconds=retention_s())
        return _models().BanditDecision.objects.filter(request_id=request_id, decided_at__gte=cutoff)

    def entries(self, request_id: str) -> tuple[list[LedgerEntry], bool]:
        rows = list(self._live(request_id))
        entries = [
            LedgerEntry(r.router_key, r.arm, r.propensity, r.decided_at.timestamp(), r.endpoint, r.learn, r.bernoulli)
            for r in rows
        ]
        return entries, any(r.rewarded_at is not None for r in rows)

    def apply(self, request_id: str, entries: list[LedgerEntry], rewards: list[float]) -> Feedback:
        total, count, squares = sum(rewards), len(rewards), sum(r * r for r in rewards)
        with transaction.atomic():
            rows = list(self._live(request_id).select_for_update())
            if not rows:
                return Feedback("unknown")
            done = next((r for r in rows if r.rewarded_at is not None), None)
            if done is not None:
                return Feedback("duplicate", tuple(entries), done.reward, done.reward_count)
            now = _now()
            for row in rows:
                row.reward, row.reward_count, row.rewarded_at = total, count, now
                row.save(update_fields=["reward", "reward_count", "rewarded_at"])
                if row.learn:
                    _models().BanditArm.objects.filter(router__key=row.router_key, arm=row.arm).update(
                        n=F("n") + count, s=F("s") + total, ss=F("ss") + squares
                    )
        return Feedback("accepted", tuple(entries), total, count)

    def routers(self) -> list[str]:
        return list(_models().BanditRouter.objects.values_list("key", flat=True))

    def meta(self, router_key: str) -> tuple[dict[str, Any] | None, list[str]]:
        router = _models().BanditRouter.objects.filter(key=router_key).first()
        return (router.config, list(router.endpoints)) if router else (None, [])

    def decisions(self, router_key: str) -> list[dict[str, Any]]:
        rows = _models().BanditDecision.objects.filter(router_key=router_key).order_by("decided_at", "pk")
        return [
            {
                "request_id": r.request_id,
                "time": r.decided_at.timestamp(),
                "arm": r.arm,
                "propensity": r.propensity,
                "reward": r.reward,
                "reward_count": r.reward_count,
                "rewarded_at": r.rewarded_at.timestamp() if r.rewarded_at else None,
            }
            for r in rows.iterator()
        ]

    def sweep(self) -> dict[str, int]:
        cutoff = _now() - timedelta(seconds=retention_s())
        deleted, _ = _models().BanditDecision.objects.filter(decided_at__lt=cutoff).delete()
        return {"trimmed": deleted, "snapshotted": 0}


_STORES: dict[str, RedisStore] = {}
_DATABASE = DatabaseStore()


def store() -> RedisStore | DatabaseStore:
    """Redis when REDIS_URL is set (one client per URL and process), else the database."""
    url = settings.REDIS_URL
    if not url:
        return _DATABASE
    found = _STORES.get(url)
    if found is None:
        found = _STORES[url] = RedisStore(url)
    return found
