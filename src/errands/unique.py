"""Unique jobs: at most one job per key among the jobs in a set of states.

A job enqueued with ``unique=errands.Unique(...)`` carries a key: a SHA-256
hash of the fields it names (worker, queue, args, meta, restricted to some
keys if asked), plus a time bucket when a ``period`` is given. The database
keeps that key in a generated column that is set only while the job's state is
in the unique ``states``, under a partial UNIQUE index; so uniqueness holds
under races and in bulk, with no read-then-write. A duplicate enqueue inserts
nothing and returns the existing job with ``job.conflict = True``.

A ``period`` is a window aligned to multiples of ``period`` seconds since the
Unix epoch (``floor(now / period)``), not a sliding window: with
``period=3600``, a job enqueued at 10:59 and another at 11:01 are in different
windows, so both are inserted.

Example::

    @app.job(unique=errands.Unique(period=3600, keys=["account_id"]))
    def sync_account(account_id: int, reason: str) -> None: ...

    first = sync_account.enqueue(account_id=7, reason="signup")
    again = sync_account.enqueue(account_id=7, reason="login")   # same hour, same account
    assert again.conflict and again.id == first.id
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from errands.errors import DatabaseError, InvalidJobError

if TYPE_CHECKING:
    from errands.job import Job, NewJob

__all__ = [
    "FIELDS",
    "INCOMPLETE_STATES",
    "REPLACEABLE",
    "STATE_BITS",
    "Unique",
    "check_replace",
    "conflict_params",
    "insert_resolving",
    "resolving",
    "state_mask",
    "unique_columns",
    "unique_hash",
]

#: What a unique key may be made of.
FIELDS = ("worker", "queue", "args", "meta")
#: The states a job moves between on its own: a unique state set holds all of them.
INCOMPLETE_STATES = ("scheduled", "available", "executing", "retryable")
#: One bit per state, as stored in ``unique_states`` (the migration's CASE uses the same bits).
STATE_BITS = {
    "scheduled": 1,
    "available": 2,
    "executing": 4,
    "retryable": 8,
    "completed": 16,
    "cancelled": 32,
    "discarded": 64,
}
#: Fields ``replace=`` may update on the existing job of a duplicate enqueue.
REPLACEABLE = ("scheduled_at", "priority", "args", "meta", "max_attempts")


def _names(option: str, value: Any, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    """``value`` as a tuple of distinct strings (from a list/tuple), or InvalidJobError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidJobError(f"{option} must be a list of strings, got {value!r}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidJobError(f"{option} must be a list of strings, got {value!r}")
        if allowed is not None and item not in allowed:
            raise InvalidJobError(
                f"{option} must name only {', '.join(allowed)}; got unknown {item!r}"
            )
        if item not in names:
            names.append(item)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Unique:
    """How to recognise a duplicate job.

    Args:
        period: seconds, or ``None`` for "forever" (while the job is in
            ``states``). A period is a window aligned to multiples of
            ``period`` since the epoch: ``floor(now / period)`` is part of the key.
        fields: what makes two jobs the same; any of ``"worker"``,
            ``"queue"``, ``"args"``, ``"meta"``.
        keys: only these keys of args (and of meta) count; ``None``: all keys.
        states: the states in which a job blocks its duplicates. It holds
            every state a job moves through on its own (``scheduled``,
            ``available``, ``executing``, ``retryable``) and may add
            ``completed``, ``cancelled`` and ``discarded``.

    Example::

        errands.Unique(period=60, keys=["user_id"])          # one per user per minute
        errands.Unique(states=("scheduled", "available", "executing", "retryable",
                               "completed"))                 # never again, once done
    """

    period: float | None = None
    fields: tuple[str, ...] = ("worker", "queue", "args")
    keys: tuple[str, ...] | None = None
    states: tuple[str, ...] = INCOMPLETE_STATES

    def __post_init__(self) -> None:
        period = self.period
        if period is not None and (
            isinstance(period, bool)
            or not isinstance(period, (int, float))
            or not math.isfinite(period)
            or period <= 0
        ):
            raise InvalidJobError(
                f"Unique period must be a number of seconds > 0 or None, got {period!r}"
            )
        fields = _names("Unique fields", self.fields, FIELDS)
        if not fields:
            raise InvalidJobError(f"Unique fields must name at least one of {', '.join(FIELDS)}")
        keys = None if self.keys is None else _names("Unique keys", self.keys, None)
        if keys is not None and "args" not in fields and "meta" not in fields:
            raise InvalidJobError(
                f"Unique keys={list(keys)!r} select args or meta keys, but fields "
                f"{list(fields)!r} has neither 'args' nor 'meta'"
            )
        states = _names("Unique states", self.states, tuple(STATE_BITS))
        missing = [state for state in INCOMPLETE_STATES if state not in states]
        if missing:
            raise InvalidJobError(
                f"Unique states must include {', '.join(INCOMPLETE_STATES)} (a job moves "
                f"between them on its own), got {list(states)!r}: missing {missing[0]!r}"
            )
        object.__setattr__(self, "period", None if period is None else float(period))
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "states", states)


def state_mask(states: tuple[str, ...]) -> int:
    """The ``unique_states`` bitmask of ``states``: ``state_mask(("scheduled",)) == 1``."""
    mask = 0
    for state in states:
        mask |= STATE_BITS[state]
    return mask


def _picked(values: Mapping[str, Any], keys: tuple[str, ...] | None) -> dict[str, Any]:
    if keys is None:
        return dict(values)
    return {key: values[key] for key in keys if key in values}


def unique_hash(
    unique: Unique,
    *,
    worker: str,
    queue: str,
    args: Mapping[str, Any],
    meta: Mapping[str, Any],
    now: float | None = None,
) -> str:
    """The hex SHA-256 key of a job: canonical JSON (sorted keys) of the chosen fields.

    Example: ``unique_hash(Unique(), worker="w", queue="default", args={}, meta={})``
    """
    document: dict[str, Any] = {}
    if "worker" in unique.fields:
        document["worker"] = worker
    if "queue" in unique.fields:
        document["queue"] = queue
    if "args" in unique.fields:
        document["args"] = _picked(args, unique.keys)
    if "meta" in unique.fields:
        document["meta"] = _picked(meta, unique.keys)
    if unique.period is not None:
        at = time.time() if now is None else now
        document["period"] = unique.period
        document["bucket"] = math.floor(at / unique.period)
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def unique_columns(
    unique: Unique | bool | None,
    replace: tuple[str, ...] | None,
    *,
    worker: str,
    queue: str,
    args: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> tuple[str | None, int, tuple[str, ...]]:
    """``(unique_hash, unique_states, replace)`` of a new job; ``(None, 0, ())`` if not unique.

    Example: ``unique_columns(Unique(), None, worker="w", queue="q", args={}, meta={})``
    """
    if not isinstance(unique, Unique):
        if replace:
            raise InvalidJobError(
                f"replace={list(replace)!r} needs unique=errands.Unique(...): only a "
                "duplicate unique job has an existing job to update"
            )
        return None, 0, ()
    key = unique_hash(unique, worker=worker, queue=queue, args=args, meta=meta)
    return key, state_mask(unique.states), tuple(replace or ())


def check_replace(value: Any) -> tuple[str, ...]:
    """Validate ``replace=``: a list of names from :data:`REPLACEABLE`.

    Example: ``check_replace(["scheduled_at"]) == ("scheduled_at",)``
    """
    return _names("replace", value, REPLACEABLE)


#: Rounds of insert-then-fetch before giving up (a round repeats only when the job
#: holding a key left its unique states between the two statements).
MAX_ROUNDS = 5


def conflict_params(jobs: Sequence[NewJob]) -> list[dict[str, Any]]:
    """One row per distinct unique key of duplicate ``jobs``: what to replace on its job.

    When several duplicates of one key ask to replace a field, the last one wins
    (a debounce keeps pushing the due time back).

    Example: ``conflict_params([job])[0]["set_scheduled_at"]`` is True for a debounced job.
    """
    merged: dict[str, dict[str, Any]] = {}
    for job in jobs:
        assert job.unique_hash is not None
        row = merged.setdefault(
            job.unique_hash,
            {"key": job.unique_hash}
            | {f"set_{name}": False for name in REPLACEABLE}
            | dict.fromkeys(REPLACEABLE),
        )
        for name in job.replace:
            row[f"set_{name}"] = True
            if name == "args":
                row["args"] = job.args_json.decode()
            elif name == "meta":
                row["meta"] = job.meta_json.decode()
            else:
                row[name] = getattr(job, name)
    return list(merged.values())


T = TypeVar("T")


def resolving(
    jobs: Sequence[NewJob],
    insert: Callable[[Sequence[NewJob]], Generator[Any, Any, dict[int, Job]]],
    existing: Callable[[Sequence[NewJob]], Generator[Any, Any, dict[str, Job]]],
) -> Generator[Any, Any, list[Job]]:
    """Insert ``jobs`` and pair every skipped duplicate with the job holding its key.

    ``insert`` inserts a batch and returns ``{position: job}`` for the rows it
    inserted; ``existing`` returns ``{unique_key: job}`` for the keys of the
    skipped ones (applying their ``replace``). Both are generators of whatever
    requests their driver runs (PostgreSQL runs them on a sync or an async
    connection: :mod:`errands.engines.pg_plan`), and so is this. Returns one
    job per input, in input order, duplicates with ``conflict=True``.

    Example: ``jobs = yield from resolving(batch, insert_steps, holder_steps)``
    """
    result: list[Job | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    for _ in range(MAX_ROUNDS):
        inserted = yield from insert([jobs[i] for i in pending])
        skipped: list[int] = []
        for position, index in enumerate(pending):
            job = inserted.get(position)
            if job is not None:
                result[index] = job
            elif jobs[index].unique_hash is None:
                raise DatabaseError(f"job {position} of a batch was not inserted, nor unique")
            else:
                skipped.append(index)
        if not skipped:
            break
        holders = yield from existing([jobs[i] for i in skipped])
        pending = []
        for index in skipped:
            holder = holders.get(jobs[index].unique_hash or "")
            if holder is None:
                pending.append(index)  # its holder finished meanwhile: insert again
            else:
                result[index] = dataclasses.replace(holder, conflict=True)
        if not pending:
            break
    done = [job for job in result if job is not None]
    if len(done) != len(jobs):
        raise DatabaseError(
            f"could not insert or find {len(jobs) - len(done)} unique job(s) after "
            f"{MAX_ROUNDS} tries: their keys keep changing hands"
        )
    return done


def insert_resolving(
    jobs: Sequence[NewJob],
    insert: Callable[[Sequence[NewJob]], dict[int, Job]],
    existing: Callable[[Sequence[NewJob]], dict[str, Job]],
) -> list[Job]:
    """:func:`resolving` with plain functions that run their statements themselves.

    Example: ``insert_resolving(batch, insert_statement, fetch_holders)`` (SQLite engine).
    """
    steps = resolving(jobs, _at_once(insert), _at_once(existing))
    try:
        next(steps)
    except StopIteration as finished:
        return cast("list[Job]", finished.value)
    raise RuntimeError("insert_resolving: a plain function cannot yield requests")


def _at_once(
    function: Callable[[Sequence[NewJob]], T],
) -> Callable[[Sequence[NewJob]], Generator[Any, Any, T]]:
    """``function`` as a generator that requests nothing and returns its result."""

    def steps(batch: Sequence[NewJob]) -> Generator[Any, Any, T]:
        return function(batch)
        yield  # unreachable: makes this function a generator

    return steps
