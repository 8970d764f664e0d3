"""Global, rate and partitioned limits of a queue, and their validation.

``limit`` (see :mod:`errands.config`) caps how many jobs of a queue one process
runs at once. The options here apply across every node, and are enforced in
the claim itself, in SQL, so no node can exceed them:

- ``global_limit=n``: at most ``n`` jobs of the queue execute at once, all
  nodes together;
- ``rate_limit=(n, per_seconds)``: at most ``n`` jobs of the queue start in
  any window of ``per_seconds`` (a sliding window over each job's latest
  start, ``attempted_at``);
- ``partition={"by": "worker"}`` or ``{"by": "args", "keys": ["account_id"]}``:
  both caps above apply per worker name, or per value of those args, instead
  of to the whole queue.

Example::

    app = errands.App(queues={
        "mail": {"limit": 10, "global_limit": 20, "rate_limit": (100, 60)},
        "sync": {"global_limit": 2, "partition": {"by": "args", "keys": ["account_id"]}},
    })
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from errands.errors import ConfigError

if TYPE_CHECKING:
    from errands.job import Job

__all__ = [
    "MAX_KEYS",
    "PARTITION_BY",
    "LimitedClaim",
    "Partition",
    "QueueLimits",
    "RateLimit",
    "claim_params",
    "parse_global_limit",
    "parse_limits",
    "parse_partition",
    "parse_rate_limit",
]

#: What a partition can be keyed by.
PARTITION_BY = ("worker", "args")
#: An args key a partition may name: a Python identifier (job args are keyword arguments).
_ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: How many args keys a partition may name: fetch_limited.sql takes that many parameters.
MAX_KEYS = 8
#: How many waiting jobs a partitioned claim looks at per free slot.
_SCAN_PER_SLOT = 20
_MIN_SCAN = 200


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` starts in any window of ``per`` seconds.

    Example: ``RateLimit(100, 60.0)`` -- a hundred jobs a minute.
    """

    count: int
    per: float


@dataclass(frozen=True, slots=True)
class Partition:
    """Apply the queue's global and rate limits per worker, or per value of some args.

    Example: ``Partition("args", ("account_id",))``
    """

    by: str
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The cross-node limits a claim enforces for one queue (what ``engine.fetch`` takes).

    Example::

        QueueLimits(global_limit=3, partition=Partition("worker"))
    """

    global_limit: int | None = None
    rate_limit: RateLimit | None = None
    partition: Partition | None = None

    @property
    def room(self) -> int | None:
        """How many jobs one partition may claim when nothing of it runs or ran lately."""
        caps = [c for c in (self.global_limit, self.rate_limit and self.rate_limit.count) if c]
        return min(caps) if caps else None

    def scan(self, demand: int) -> int:
        """How many waiting jobs a claim of ``demand`` looks at (more when partitioned).

        Example: ``QueueLimits(global_limit=3).scan(5) == 5``
        """
        if self.partition is None:
            return demand
        return max(demand * _SCAN_PER_SLOT, _MIN_SCAN)


def parse_global_limit(queue: str, value: Any) -> int | None:
    """``None`` or an int >= 1; else :class:`ConfigError` naming the queue and value.

    Example: ``parse_global_limit("mail", 20) == 20``
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"queue {queue!r} global_limit must be an int >= 1, got {value!r}")
    return value


def parse_rate_limit(queue: str, value: Any) -> RateLimit | None:
    """``None`` or ``(count, per_seconds)`` as a tuple, list or :class:`RateLimit`.

    Example: ``parse_rate_limit("api", (100, 60)) == RateLimit(100, 60.0)``
    """
    if value is None or isinstance(value, RateLimit):
        return value
    bad = ConfigError(
        f"queue {queue!r} rate_limit must be (count, per_seconds) with an int count >= 1 "
        f"and seconds > 0, like (100, 60), got {value!r}"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise bad
    count, per = value
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise bad
    if (
        isinstance(per, bool)
        or not isinstance(per, (int, float))
        or not math.isfinite(per)
        or per <= 0
    ):
        raise bad
    return RateLimit(count, float(per))


def parse_partition(queue: str, value: Any) -> Partition | None:
    """``None``, ``{"by": "worker"}`` or ``{"by": "args", "keys": [...]}``.

    Example: ``parse_partition("sync", {"by": "args", "keys": ["account_id"]})``
    """
    if value is None or isinstance(value, Partition):
        return value
    option = f"queue {queue!r} partition"
    if not isinstance(value, Mapping):
        raise ConfigError(
            f'{option} must be {{"by": "worker"}} or {{"by": "args", "keys": [...]}}, got {value!r}'
        )
    unknown = sorted(set(value) - {"by", "keys"}, key=str)
    if unknown:
        raise ConfigError(f"{option}: unknown option {unknown[0]!r} (known: by, keys)")
    by = value.get("by")
    if by not in PARTITION_BY:
        raise ConfigError(f"{option} by must be one of {', '.join(PARTITION_BY)}, got {by!r}")
    keys = value.get("keys")
    if by == "worker":
        if keys is not None:
            raise ConfigError(f'{option}: keys go with "by": "args", not "by": "worker"')
        return Partition("worker")
    if (
        isinstance(keys, (str, bytes))
        or not isinstance(keys, Sequence)
        or not 1 <= len(keys) <= MAX_KEYS
    ):
        raise ConfigError(
            f"{option} keys must be a list of 1 to {MAX_KEYS} args names, got {keys!r}"
        )
    for key in keys:
        if not isinstance(key, str) or not _ARG_KEY.match(key):
            raise ConfigError(
                f"{option} keys must be args names (letters, digits and _, not starting "
                f"with a digit), got {key!r}"
            )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{option} keys must not repeat a name, got {list(keys)!r}")
    return Partition("args", tuple(keys))


def parse_limits(queue: str, options: Mapping[str, Any]) -> QueueLimits:
    """The cross-node limits among a queue's options (validated together).

    Example: ``parse_limits("mail", {"global_limit": 5}).global_limit == 5``
    """
    limits = QueueLimits(
        global_limit=parse_global_limit(queue, options.get("global_limit")),
        rate_limit=parse_rate_limit(queue, options.get("rate_limit")),
        partition=parse_partition(queue, options.get("partition")),
    )
    if limits.partition is not None and limits.room is None:
        raise ConfigError(
            f"queue {queue!r} partition applies to global_limit and rate_limit: "
            "give one of them too"
        )
    return limits


def claim_params(limits: QueueLimits, demand: int) -> dict[str, Any]:
    """The parameters both engines' ``fetch_limited.sql`` take.

    The partition's args keys come as ``key1`` ... ``key8`` (``None`` when unused),
    so the partition key is one flat expression, with no subquery per row.

    Example: ``claim_params(QueueLimits(global_limit=3), 10)["global_limit"] == 3``
    """
    rate = limits.rate_limit
    partition = limits.partition
    params: dict[str, Any] = {
        "global_limit": limits.global_limit,
        "rate_count": None if rate is None else rate.count,
        "rate_per": None if rate is None else rate.per,
        "by": "none" if partition is None else partition.by,
        "keys": [] if partition is None else list(partition.keys),
        **{f"key{i}": None for i in range(1, MAX_KEYS + 1)},
        "default_room": limits.room,
        "scan": limits.scan(demand),
    }
    for i, key in enumerate(params["keys"], 1):
        params[f"key{i}"] = key
    return params


class LimitedClaim(list["Job"]):
    """The jobs a limited claim took, and whether the queue's limits held others back.

    ``blocked`` is true when jobs were still available after claiming fewer
    than asked: the global or rate limit (of their partitions) is reached, so
    the producer waits for its poll interval, or for one of its own jobs to
    finish, before counting again instead of rescanning at every wake-up.

    Example: ``claim = LimitedClaim(jobs, blocked=True)``
    """

    def __init__(self, jobs: Iterable[Job] = (), *, blocked: bool = False) -> None:
        super().__init__(jobs)
        self.blocked = blocked
