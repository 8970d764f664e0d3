"""The PostgreSQL engine's hot path: claim jobs, record outcomes, or both at once.

``ack_fetch.sql`` records a batch of outcomes and claims the next jobs in
one statement, one round trip; with no outcomes to record, the leaner
``claim.sql`` claims alone. What keeps them cheap:

- **One round trip, one plan**: data-modifying CTEs instead of a transaction
  of several statements; psycopg prepares it after a few runs.
- **One parameter** for a batch of outcomes: a JSON array that
  ``json_to_recordset`` unpacks on the server, instead of eight arrays that
  psycopg would adapt element by element in Python.
- **One JSON array per claimed job**, decoded by orjson in one call instead
  of eighteen columns through psycopg's loaders.
- **Asynchronous commit** for claims and outcomes (``synchronous_commit`` set
  off for that one statement): the server answers before its WAL reaches
  disk. A *database* crash can then forget the last fraction of a second of
  claims and outcomes: a forgotten claim makes its job available again, a
  forgotten outcome leaves its job executing until the lifeline rescues it —
  either way the job runs again, which at-least-once delivery already allows
  (as when a worker dies with an unflushed batch of acks). Inserts are never
  affected: an enqueued job is durable when ``enqueue`` returns.
  ``PostgresEngine(..., synchronous_acks=True)`` keeps every commit synchronous.

Example::

    applied, jobs = engine.ack_fetch(acks, "default", 10, producer_id, ["app.send"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from errands.engines.base import Ack
from errands.engines.inserted import POSITIONAL
from errands.engines.pg_connect import Row, storable_json, storable_time
from errands.engines.pg_inspect import job_from_pg_row
from errands.engines.pg_pool import PgPool
from errands.engines.rows import claimed_jobs
from errands.job import STATES_BY_VALUE, Job, JobState
from errands.limits import LimitedClaim, QueueLimits

__all__ = ["PgClaim", "ack_params", "ack_payload", "id_array", "job_from_claim"]

#: A claimed row's JSON array (_claimed_job_json.sql): Job's leading fields, in order.
_CLAIMED_FIELDS = len(POSITIONAL)
_STATE = POSITIONAL.index("state")


def ack_params(acks: Sequence[Ack]) -> dict[str, Any]:
    """The parameters of a batch of outcomes in ``ack.sql`` and ``ack_fetch.sql``.

    ``acks``: the outcomes, one JSON array (:func:`ack_payload`); ``ids``: their
    jobs' ids (:func:`id_array`), by which the statements find and lock the rows.
    """
    return {"acks": ack_payload(acks), "ids": id_array(ack.id for ack in acks)}


def id_array(ids: Iterable[int]) -> str:
    """Job ids as a PostgreSQL array literal, for an ``%(ids)s::int8[]`` parameter.

    psycopg dumps a list element by element in Python: ~95 µs for a batch of
    100 ids, against ~18 µs for this one string.

    Example: ``id_array([3, 5]) == "{3,5}"``
    """
    return "{" + ",".join(map(str, ids)) + "}"


def ack_payload(acks: Sequence[Ack]) -> str:
    """A batch of outcomes as the JSON array ``ack.sql`` and ``ack_fetch.sql`` unpack.

    A field left at its default (no result, no error, no due time, not snoozed)
    is left out: ``json_to_recordset`` reads a missing key as NULL, which the
    statements take as that default. A plain completion is then half the text to
    build, send and parse.
    """
    return orjson.dumps([_ack_object(ack) for ack in acks]).decode()


def _ack_object(ack: Ack) -> dict[str, Any]:
    state = ack.state
    fields: dict[str, Any] = {
        "id": ack.id,
        "attempt": ack.attempt,
        "producer": ack.producer,
        "state": state.value if type(state) is JobState else JobState(state).value,
    }
    if ack.result is not None:
        fields["result"] = storable_json(ack.result, f"job {ack.id}'s result")
    if ack.error is not None:
        error = orjson.dumps(dict(ack.error), default=str)
        fields["error"] = storable_json(error, f"job {ack.id}'s error")
    scheduled_at = storable_time(ack.scheduled_at)
    if scheduled_at is not None:
        fields["scheduled_at"] = scheduled_at
    if ack.snoozed:
        fields["snoozed"] = True
    return fields


def job_from_claim(row: Row) -> Job:
    """A :class:`Job` from one claimed row's JSON array (raises if it cannot be decoded).

    Fields of the wrong type (a time PostgreSQL printed as "Infinity") pass through:
    :func:`~errands.engines.rows.claimed_jobs` discards such a job.
    """
    fields = orjson.loads(row["job"])
    if len(fields) != _CLAIMED_FIELDS:
        raise ValueError(f"a claimed row has {len(fields)} fields, not {_CLAIMED_FIELDS}")
    # In the order of inserted.POSITIONAL (checked at import), the state looked up in
    # a dict rather than through JobState(...).
    fields[_STATE] = STATES_BY_VALUE[fields[_STATE]]
    return Job(*fields)


class PgClaim:
    """Claims and outcomes for :class:`~errands.engines.postgres.PostgresEngine`."""

    #: Pending acks a producer hands to its next claim: none. The claim's rows come
    #: back only once every ack in its statement is written, while the completer
    #: writes them on another connection in parallel, which the server runs on
    #: another core: on loopback that drains 10-15 % faster (docs/benchmarks-history.md).
    #: ``ack_fetch`` stays for callers that want one round trip (a distant server).
    piggyback_max: int | None = 0

    if TYPE_CHECKING:
        _pool: PgPool
        synchronous_acks: bool

        def _q(self, name: str) -> bytes: ...

        def _claim_limited(
            self, params: Mapping[str, Any], limits: QueueLimits
        ) -> tuple[list[Row], bool]: ...

    def _ack_fetch(
        self, acks: Sequence[Ack], queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> tuple[int, list[Ack], list[Row]]:
        params = self._fetch_params(queue, limit, producer, workers)
        params["commit"] = self._commit_mode
        if not acks:
            with self._pool.connection("claiming jobs") as conn:
                rows = conn.execute(self._q("claim"), params).fetchall()
            return 0, [], [{"id": row[0], "attempt": row[1], "job": row[2]} for row in rows]
        params.update(ack_params(acks))
        with self._pool.connection("recording outcomes and claiming jobs") as conn:
            rows = conn.execute(self._q("ack_fetch"), params).fetchall()
        acked, skipped = int(rows[0][0]), set(rows[0][1])
        retry = [ack for ack in acks if ack.id in skipped] if skipped else []
        claimed = [
            {"id": row[2], "attempt": row[3], "job": row[4]} for row in rows if row[2] is not None
        ]
        return acked, retry, claimed

    @property
    def _commit_mode(self) -> str:
        return "on" if self.synchronous_acks else "off"

    def _fetch_params(
        self, queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> dict[str, Any]:
        return {"queue": queue, "limit": limit, "producer": producer, "workers": list(workers)}

    def fetch(
        self,
        queue: str,
        limit: int,
        producer: str,
        workers: Sequence[str],
        limits: QueueLimits | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs in one statement (``FOR UPDATE SKIP LOCKED``).

        A queue with ``limits`` is claimed under its lock (see ``pg_control``) and
        the result is a :class:`~errands.limits.LimitedClaim`.
        """
        if limit <= 0 or not workers:
            return []
        if limits is not None:
            params = self._fetch_params(queue, limit, producer, workers)
            rows, blocked = self._claim_limited(params, limits)
            return LimitedClaim(self._runnable(rows, producer, job_from_pg_row), blocked=blocked)
        return self._runnable(self._ack_fetch((), queue, limit, producer, workers)[2], producer)

    def _runnable(
        self, rows: list[Row], producer: str, convert: Callable[[Row], Job] = job_from_claim
    ) -> list[Job]:
        """The claimed rows' jobs; a row that cannot run is discarded (see ``claimed_jobs``)."""
        jobs, rejects = claimed_jobs(rows, producer, convert)
        if rejects:
            self.ack(rejects)
        return jobs

    def ack(self, acks: Sequence[Ack]) -> int:
        """Apply a batch of outcomes in one statement; return how many were not stale."""
        if not acks:
            return 0
        params = {"commit": self._commit_mode, **ack_params(acks)}
        with self._pool.connection("recording job outcomes") as conn:
            row = conn.execute(self._q("ack"), params).fetchone()
        return 0 if row is None else int(row[0])

    def release(self, jobs: Sequence[Job], producer: str) -> int:
        """Make claimed jobs that never started available again (see ``Engine.release``)."""
        if not jobs:
            return 0
        payload = orjson.dumps([{"id": job.id, "attempt": job.attempt} for job in jobs])
        params = {
            "jobs": payload.decode(),
            "ids": id_array(job.id for job in jobs),
            "producer": producer,
        }
        with self._pool.connection("handing back claimed jobs") as conn:
            return conn.execute(self._q("release"), params).rowcount

    def ack_fetch(
        self, acks: Sequence[Ack], queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> tuple[int, list[Job], list[Ack]]:
        """Apply ``acks`` and claim up to ``limit`` jobs in one statement, one round trip.

        Returns (acks applied, jobs claimed, acks to retry): an outcome whose
        row another transaction holds locked is skipped rather than waited
        for, so a lock never stalls the claim; the caller retries it later.
        """
        if limit <= 0 or not workers:
            return self.ack(acks), [], []
        applied, retry, rows = self._ack_fetch(acks, queue, limit, producer, workers)
        return applied, self._runnable(rows, producer), retry
