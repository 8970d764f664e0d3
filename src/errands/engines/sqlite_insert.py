"""SQLite inserts beyond the plain batch: unique jobs and cron slots.

Both run on a connection already inside a write transaction (the engine's own
``BEGIN IMMEDIATE``, or the caller's for a transactional enqueue), so a batch
of unique jobs, or a cron slot and its job, commit or vanish together.

Example::

    with engine._write("inserting jobs") as conn:
        jobs = insert_unique_on(conn, new_jobs, time.time())
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import orjson

from errands.engines.base import CronSlot, job_from_row
from errands.engines.sqlite_util import dict_rows, sql
from errands.job import Job, NewJob
from errands.unique import conflict_params, insert_resolving

__all__ = ["insert_cron_on", "insert_payload", "insert_unique_on"]

#: Jobs per statement, as for plain inserts.
CHUNK = 2_000


def insert_payload(jobs: Sequence[NewJob]) -> str:
    """The JSON array ``insert.sql`` and ``insert_unique.sql`` read with ``json_each``."""
    return orjson.dumps(
        [
            {
                "worker": job.worker,
                "queue": job.queue,
                "args": orjson.Fragment(job.args_json),
                "meta": orjson.Fragment(job.meta_json),
                "tags": orjson.Fragment(job.tags_json),
                "priority": job.priority,
                "max_attempts": job.max_attempts,
                "timeout": job.timeout,
                "scheduled_at": job.scheduled_at,
                "unique_hash": job.unique_hash,
                "unique_states": job.unique_states,
            }
            for job in jobs
        ]
    ).decode()


def insert_unique_on(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
    """Insert a batch holding unique jobs; duplicates come back as the existing jobs.

    Returns one job per input, in input order; a duplicate (of a stored job or
    of an earlier job in the batch) is the job holding its key, with
    ``conflict=True``, its ``replace`` fields applied if it was still waiting.
    """

    def insert(batch: Sequence[NewJob]) -> dict[int, Job]:
        base = int(conn.execute(sql("id_high_water")).fetchone()[0])
        params = {"jobs": insert_payload(batch), "now": now, "base": base}
        rows = dict_rows(conn.execute(sql("insert_unique"), params))
        return {row["id"] - base - 1: job_from_row(row) for row in rows}

    def existing(batch: Sequence[NewJob]) -> dict[str, Job]:
        conflicts = conflict_params(batch)
        params = {"conflicts": orjson.dumps(conflicts).decode(), "now": now}
        found = {
            row["unique_key"]: job_from_row(row)
            for row in dict_rows(conn.execute(sql("insert_unique_conflicts"), params))
        }
        rest = [row["key"] for row in conflicts if row["key"] not in found]
        if rest:
            keys = {"keys": orjson.dumps(rest).decode()}
            for row in dict_rows(conn.execute(sql("insert_unique_existing"), keys)):
                found[row["unique_key"]] = job_from_row(row)
        return found

    result: list[Job] = []
    for start in range(0, len(jobs), CHUNK):
        result.extend(insert_resolving(jobs[start : start + CHUNK], insert, existing))
    return result


def insert_cron_on(
    conn: sqlite3.Connection,
    slots: Sequence[CronSlot],
    now: float,
    insert_jobs: Callable[[sqlite3.Connection, Sequence[NewJob]], list[Job]],
) -> list[Job]:
    """Claim each slot; insert the jobs of the slots that were new (same transaction)."""
    new: list[NewJob] = []
    for slot in slots:
        params = {"name": slot.name, "slot": slot.at, "now": now}
        if conn.execute(sql("insert_cron_slot"), params).fetchone() is not None:
            new.append(slot.job)
    return insert_jobs(conn, new) if new else []
