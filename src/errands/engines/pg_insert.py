"""PostgreSQL inserts: plain batches, unique jobs and cron slots.

Plain batches take the cheapest statement for their size: one job a
single-row INSERT (``insert_one.sql``), a few an ``unnest`` INSERT of arrays
(``insert.sql``), many a binary COPY (:mod:`errands.engines.pg_copy`). Each
returns only ids, states and times; the jobs are built here from what was
sent (:mod:`errands.engines.inserted`).

Unique jobs: one ``INSERT ... ON CONFLICT DO NOTHING`` statement per batch
(``insert_unique.sql``), then, only when some were duplicates, one statement
that applies their ``replace`` and returns the jobs holding their keys
(``insert_unique_conflicts.sql``). The second statement has a snapshot of its
own, so it sees a holder another transaction committed meanwhile. Both run in
one transaction (the caller's, for a transactional enqueue).

Cron: the slot rows and the jobs of the new slots go in one transaction.

Example::

    jobs = insert_on(engine, conn, new_jobs)
    jobs = insert_unique(engine, new_jobs, conn=None)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from errands.engines.base import CronSlot
from errands.engines.inserted import inserted_job, unix_seconds
from errands.engines.pg_connect import check_storable, dict_cursor, driver_connection
from errands.engines.pg_copy import COPY_MIN, copy_insert, copyable
from errands.engines.pg_inspect import job_from_pg_row
from errands.job import Job, JobState, NewJob
from errands.unique import conflict_params, insert_resolving

if TYPE_CHECKING:
    from errands.engines.postgres import PostgresEngine

__all__ = ["insert_cron", "insert_on", "insert_unique", "insert_unique_on"]

#: Jobs per ``unnest`` statement; bigger batches are split, inside one transaction.
CHUNK = 10_000

_STATES = {state.value: state for state in JobState}

#: A tuple-row cursor per pooled connection, kept between single inserts: a new
#: cursor looks up its parameter dumpers and column loaders again, which cost
#: about a tenth of a single enqueue's client CPU. Only the engine's own
#: connections keep one (the pool lends each to one thread at a time).
_CURSORS: dict[psycopg.Connection[Any], psycopg.Cursor[tuple[Any, ...]]] = {}
_CURSORS_LOCK = threading.Lock()


def _column(jobs: Sequence[NewJob], name: str) -> list[Any]:
    return [getattr(job, name) for job in jobs]


def _job(new: NewJob, row: tuple[Any, ...]) -> Job:
    """The job ``new`` became, from a row of ``(id, state, inserted_us, scheduled_us)``."""
    job_id, state, inserted_us, scheduled_us = row
    return inserted_job(
        new, job_id, _STATES[state], unix_seconds(inserted_us), unix_seconds(scheduled_us)
    )


def _kept_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[tuple[Any, ...]]:
    """The tuple-row cursor kept for one of the engine's pooled connections."""
    cur = _CURSORS.get(conn)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=tuple_row)
        with _CURSORS_LOCK:
            # A cursor holds its connection: forget those of connections the pool closed.
            for closed in [known for known in _CURSORS if known.closed]:
                del _CURSORS[closed]
            _CURSORS[conn] = cur
    return cur


def _insert_one(
    engine: PostgresEngine, conn: psycopg.Connection[Any], job: NewJob, *, own: bool
) -> Job:
    params = {
        "queue": job.queue,
        "worker": job.worker,
        "args": job.args_json.decode(),
        "meta": job.meta_json.decode(),
        "tags": job.tags_json.decode(),
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "scheduled_at": job.scheduled_at,
        "channel": engine._channel,
    }
    if own:
        cur = _kept_cursor(conn)
        cur.execute(engine._q("insert_one"), params)
        row = cur.fetchone()
    else:
        # Tuple rows whatever the caller's connection prefers (a transactional enqueue).
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(engine._q("insert_one"), params)
            row = cur.fetchone()
    assert row is not None
    return _job(job, row)


def _insert_arrays(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> list[Job]:
    result: list[Job] = []
    # One statement is atomic by itself; several chunks need a transaction
    # unless they already run in the caller's (autocommit off).
    several = len(jobs) > CHUNK and conn.autocommit
    with (
        conn.transaction() if several else nullcontext(),
        conn.cursor(row_factory=tuple_row) as cur,
    ):
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            cur.execute(engine._q("insert"), engine._insert_params(chunk))
            rows = sorted(cur.fetchall())  # by id: ids were drawn in input order
            result.extend(_job(new, row) for new, row in zip(chunk, rows, strict=True))
    return result


def insert_on(
    engine: PostgresEngine,
    conn: psycopg.Connection[Any],
    jobs: Sequence[NewJob],
    *,
    own: bool = False,
) -> list[Job]:
    """Insert checked jobs without unique keys on ``conn``; one job per input, in order.

    On an autocommit connection the batch commits as a whole; otherwise it joins
    the caller's open transaction, which is left open. ``own``: ``conn`` is one
    of the engine's pooled connections (a single insert then reuses a cursor).
    """
    if len(jobs) == 1:
        return [_insert_one(engine, conn, jobs[0], own=own)]
    if len(jobs) >= COPY_MIN and copyable(conn):
        return copy_insert(engine, conn, jobs)
    return _insert_arrays(engine, conn, jobs)


def insert_unique_on(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> list[Job]:
    """Insert a batch holding unique jobs on ``conn``; one job per input, in order.

    A duplicate (of a stored job, or of an earlier job in the batch) comes back
    as the job holding its key, with ``conflict=True`` and its ``replace``
    fields applied if that job was still scheduled or available.
    """
    table = sql.Identifier(engine.schema, "errands_jobs").as_string(None)

    def insert(batch: Sequence[NewJob]) -> dict[int, Job]:
        params = engine._insert_params(batch)
        params.update(
            unique_hash=_column(batch, "unique_hash"),
            unique_states=_column(batch, "unique_states"),
            table=table,
        )
        with dict_cursor(conn) as cur:
            cur.execute(engine._q("insert_unique"), params)
            rows = cur.fetchall()
        return {int(row.pop("ord")) - 1: job_from_pg_row(row) for row in rows}

    def existing(batch: Sequence[NewJob]) -> dict[str, Job]:
        conflicts = conflict_params(batch)
        params: dict[str, Any] = {name: [row[name] for row in conflicts] for name in conflicts[0]}
        params["channel"] = engine._channel
        with dict_cursor(conn) as cur:
            cur.execute(engine._q("insert_unique_conflicts"), params)
            rows = cur.fetchall()
        return {row["unique_key"]: job_from_pg_row(row) for row in rows}

    result: list[Job] = []
    with conn.transaction() if conn.autocommit else nullcontext():
        for start in range(0, len(jobs), CHUNK):
            result.extend(insert_resolving(jobs[start : start + CHUNK], insert, existing))
    return result


def insert_unique(engine: PostgresEngine, jobs: Sequence[NewJob], conn: Any) -> list[Job]:
    """Insert a batch holding unique jobs on a pooled connection, or in the caller's ``conn``."""
    if conn is None:
        with engine._pool.connection("inserting unique jobs") as own:
            return insert_unique_on(engine, own, jobs)
    raw = driver_connection(conn)
    try:
        return insert_unique_on(engine, raw, jobs)
    except psycopg.Error as exc:
        raise engine._pool.failed(exc, "inserting jobs on the caller's connection") from exc


def insert_cron(engine: PostgresEngine, slots: Sequence[CronSlot]) -> list[Job]:
    """Claim cron slots (``ON CONFLICT DO NOTHING``) and insert the new ones' jobs, atomically."""
    for slot in slots:
        check_storable(slot.job)
    params = {"name": [slot.name for slot in slots], "slot": [slot.at for slot in slots]}
    with (
        engine._pool.connection("inserting cron jobs") as conn,
        conn.transaction(),
    ):
        with dict_cursor(conn) as cur:
            cur.execute(engine._q("insert_cron_slots"), params)
            claimed = {(row["name"], float(row["slot"])) for row in cur.fetchall()}
        jobs = [slot.job for slot in slots if (slot.name, slot.at) in claimed]
        if not jobs:
            return []
        if any(job.unique_hash is not None for job in jobs):
            return insert_unique_on(engine, conn, jobs)
        return insert_on(engine, conn, jobs)
