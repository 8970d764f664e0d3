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

Each path is a :class:`~errands.engines.pg_plan.Plan` (the statements it needs,
and what it builds from their rows), so a sync and an async connection run the
same code: :func:`insert_on` and :func:`ainsert_on`.

Example::

    jobs = insert_on(engine, conn, new_jobs)
    jobs = await ainsert_on(engine, async_conn, new_jobs)
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from errands.engines.base import CronSlot
from errands.engines.inserted import inserted_job, unix_seconds
from errands.engines.pg_connect import check_storable, dict_cursor
from errands.engines.pg_copy import COPY_MIN, copy_plan, copyable
from errands.engines.pg_inspect import job_from_pg_row
from errands.engines.pg_plan import Plan, Statement, Steps, arun_plan, run_plan
from errands.job import STATES_BY_VALUE, Job, NewJob
from errands.unique import conflict_params, resolving

if TYPE_CHECKING:
    from errands.engines.postgres import PostgresEngine

__all__ = ["ainsert_on", "insert_cron", "insert_on", "insert_own", "insert_plan"]

#: Jobs per ``unnest`` statement; bigger batches are split, inside one transaction.
CHUNK = 10_000


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
        new, job_id, STATES_BY_VALUE[state], unix_seconds(inserted_us), unix_seconds(scheduled_us)
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


def insert_plan(engine: PostgresEngine, jobs: Sequence[NewJob], *, copy_ok: bool) -> Plan:
    """The cheapest insert of checked ``jobs``: unique ones, one, a few, or a COPY.

    ``copy_ok``: the connection can take a COPY (:func:`~errands.engines.pg_copy.copyable`).
    """
    single = _single_plain(jobs)
    if single is not None:
        return Plan(_one_steps(engine, single), atomic=False)
    if any(job.unique_hash is not None for job in jobs):
        return Plan(_unique_steps(engine, jobs), atomic=True)
    if len(jobs) >= COPY_MIN and copy_ok:
        return copy_plan(engine, jobs)
    # One statement is atomic by itself; several chunks must commit together.
    return Plan(_array_steps(engine, jobs), atomic=len(jobs) > CHUNK)


def _one_params(engine: PostgresEngine, job: NewJob) -> dict[str, Any]:
    return {
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


def _one_steps(engine: PostgresEngine, job: NewJob) -> Steps:
    [row] = yield Statement(engine._q("insert_one"), _one_params(engine, job))
    return [_job(job, row)]


def _single_plain(jobs: Sequence[NewJob]) -> NewJob | None:
    """The job, when ``jobs`` is one job without a unique key: one ``insert_one``."""
    return jobs[0] if len(jobs) == 1 and jobs[0].unique_hash is None else None


def insert_own(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> list[Job]:
    """Insert checked jobs on one of the engine's own pooled connections (autocommit).

    A single plain job gets the statement :func:`insert_plan` would pick, sent
    directly on a kept cursor: a single enqueue is one round trip, and the
    plan's generator and context managers cost a few percent of it. Anything
    else runs its plan (:func:`insert_on`).
    """
    single = _single_plain(jobs)
    if single is None:
        return insert_on(engine, conn, jobs)
    cur = _kept_cursor(conn)
    cur.execute(engine._q("insert_one"), _one_params(engine, single))
    row = cur.fetchone()
    assert row is not None  # INSERT ... RETURNING one row
    return [_job(single, row)]


def _array_steps(engine: PostgresEngine, jobs: Sequence[NewJob]) -> Steps:
    result: list[Job] = []
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start : start + CHUNK]
        rows = yield Statement(engine._q("insert"), engine._insert_params(chunk))
        rows = sorted(rows)  # by id: ids were drawn in input order
        result.extend(_job(new, row) for new, row in zip(chunk, rows, strict=True))
    return result


def _unique_steps(engine: PostgresEngine, jobs: Sequence[NewJob]) -> Steps:
    """Unique jobs; a duplicate (of a stored job, or of an earlier job in the batch)
    comes back as the job holding its key, with ``conflict=True`` and its
    ``replace`` fields applied if that job was still scheduled or available.
    """
    table = sql.Identifier(engine.schema, "errands_jobs").as_string(None)

    def insert(batch: Sequence[NewJob]) -> Generator[Statement, list[Any], dict[int, Job]]:
        params = engine._insert_params(batch)
        params.update(
            unique_hash=_column(batch, "unique_hash"),
            unique_states=_column(batch, "unique_states"),
            table=table,
        )
        rows = yield Statement(engine._q("insert_unique"), params, dicts=True)
        return {int(row.pop("ord")) - 1: job_from_pg_row(row) for row in rows}

    def existing(batch: Sequence[NewJob]) -> Generator[Statement, list[Any], dict[str, Job]]:
        conflicts = conflict_params(batch)
        params: dict[str, Any] = {name: [row[name] for row in conflicts] for name in conflicts[0]}
        params["channel"] = engine._channel
        rows = yield Statement(engine._q("insert_unique_conflicts"), params, dicts=True)
        return {row["unique_key"]: job_from_pg_row(row) for row in rows}

    result: list[Job] = []
    for start in range(0, len(jobs), CHUNK):
        result.extend((yield from resolving(jobs[start : start + CHUNK], insert, existing)))
    return result


def insert_on(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> list[Job]:
    """Insert checked jobs on ``conn``; one job per input, in order.

    On an autocommit connection the batch commits as a whole; otherwise it joins
    the caller's open transaction, which is left open.
    """
    return run_plan(conn, insert_plan(engine, jobs, copy_ok=copyable(conn)))


async def ainsert_on(
    engine: PostgresEngine, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob]
) -> list[Job]:
    """:func:`insert_on` on an async connection (an ``aenqueue`` with ``conn=``)."""
    return await arun_plan(conn, insert_plan(engine, jobs, copy_ok=copyable(conn)))


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
        return insert_on(engine, conn, jobs) if jobs else []
