"""PostgreSQL inserts beyond the plain batch: unique jobs and cron slots.

Unique jobs: one ``INSERT ... ON CONFLICT DO NOTHING`` statement per batch
(``insert_unique.sql``), then, only when some were duplicates, one statement
that applies their ``replace`` and returns the jobs holding their keys
(``insert_unique_conflicts.sql``). The second statement has a snapshot of its
own, so it sees a holder another transaction committed meanwhile. Both run in
one transaction (the caller's, for a transactional enqueue).

Cron: the slot rows and the jobs of the new slots go in one transaction.

Example::

    jobs = insert_unique(engine, new_jobs, conn=None)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from errands.engines.base import CronSlot
from errands.engines.pg_connect import check_storable, dict_cursor, driver_connection
from errands.engines.pg_inspect import job_from_pg_row
from errands.job import Job, NewJob
from errands.unique import conflict_params, insert_resolving

if TYPE_CHECKING:
    from errands.engines.postgres import PostgresEngine

__all__ = ["insert_cron", "insert_unique", "insert_unique_on"]

#: Jobs per statement, as for plain inserts.
CHUNK = 10_000


def _column(jobs: Sequence[NewJob], name: str) -> list[Any]:
    return [getattr(job, name) for job in jobs]


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
        return [job_from_pg_row(row) for row in engine._insert_on(conn, jobs)]
