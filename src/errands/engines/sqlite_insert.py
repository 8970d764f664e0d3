"""SQLite inserts: plain batches, unique jobs and cron slots.

All run on a connection already inside a write transaction (the engine's own
``BEGIN IMMEDIATE``, or the caller's for a transactional enqueue), so a batch
of jobs, or a cron slot and its job, commit or vanish together.

A plain batch goes in multi-row INSERTs of up to :data:`ROWS` jobs with plain
parameters (``insert.sql``): SQLite then opens the table and its six indexes
once per statement instead of once per row (what ``executemany`` costs), and
parses no JSON beyond the columns' ``json_valid`` checks (what reading the
batch from a JSON document with ``json_each`` cost). Ids are read from
``lastrowid``, and the returned jobs are built from what was sent
(:mod:`errands.engines.inserted`).

Example::

    with engine._write("inserting jobs") as conn:
        jobs = insert_on(conn, new_jobs, time.time())
        jobs = insert_unique_on(conn, new_jobs, time.time())
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import orjson

from errands.engines.base import CronSlot
from errands.engines.inserted import inserted_job, paused_gc
from errands.engines.rows import job_from_row
from errands.engines.sqlite_util import dict_rows, sql
from errands.job import Job, JobState, NewJob
from errands.unique import conflict_params, insert_resolving

__all__ = ["insert_cron_on", "insert_on", "insert_payload", "insert_unique_on"]

#: Jobs per unique-insert statement.
CHUNK = 2_000
#: Most rows per plain INSERT statement (a power of two: see :func:`_pieces`).
ROWS = 512
_PARAMS = 11  # per row of insert.sql
_STATEMENTS: dict[int, str] = {}
AVAILABLE, SCHEDULED = JobState.AVAILABLE, JobState.SCHEDULED
_STATE_TEXT = {AVAILABLE: AVAILABLE.value, SCHEDULED: SCHEDULED.value}


def _statement(rows: int) -> str:
    """``insert.sql`` with its VALUES row repeated ``rows`` times."""
    text = _STATEMENTS.get(rows)
    if text is None:
        head, row = sql("insert").rsplit("VALUES", 1)
        text = _STATEMENTS[rows] = head + "VALUES " + ", ".join([row.strip()] * rows)
    return text


def _pieces(total: int, most: int) -> list[int]:
    """Statement sizes for ``total`` rows: full chunks of ``most``, then powers of two.

    Powers of two keep the set of statement texts small (SQLite prepares each
    once per connection, in the sqlite3 module's statement cache).
    """
    pieces = [most] * (total // most)
    rest = total % most
    size = most
    while rest:
        size //= 2
        if rest >= size:
            pieces.append(size)
            rest -= size
    return pieces


def _most_rows(conn: sqlite3.Connection) -> int:
    """:data:`ROWS`, or fewer where SQLite allows fewer parameters per statement."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _PARAMS
    most = ROWS
    while most > max(limit, 1):
        most //= 2
    return most


def insert_on(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
    """Insert jobs without unique keys; one job per input, in input order.

    Several statements run under a savepoint, so a failing one (a CHECK, bad
    JSON) leaves nothing of the batch behind, even in a caller's transaction
    that goes on.
    """
    pieces = _pieces(len(jobs), _most_rows(conn))
    if len(pieces) == 1:
        return _insert_piece(conn, jobs, now)
    result: list[Job] = []
    conn.execute(sql("insert_savepoint"))
    try:
        with paused_gc():
            start = 0
            for size in pieces:
                result.extend(_insert_piece(conn, jobs[start : start + size], now))
                start += size
    except BaseException:
        conn.execute(sql("insert_rollback"))
        raise
    finally:
        conn.execute(sql("insert_release"))
    return result


def _insert_piece(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
    params: list[object] = []
    inserted: list[Job] = []
    for job in jobs:
        at = job.scheduled_at
        if at is None:
            state, at = AVAILABLE, now
        else:
            at = float(at)
            state = SCHEDULED if at > now else AVAILABLE
        params += (
            _STATE_TEXT[state],
            job.queue,
            job.worker,
            job.args_json.decode(),
            job.meta_json.decode(),
            job.tags_json.decode(),
            job.priority,
            job.max_attempts,
            job.timeout,
            now,
            at,
        )
        inserted.append(inserted_job(job, 0, state, now, at))
    last = conn.execute(_statement(len(jobs)), params).lastrowid
    assert last is not None
    # AUTOINCREMENT ids are consecutive within one statement, in row order.
    for job_id, stored in enumerate(inserted, last - len(jobs) + 1):
        stored.id = job_id
    return inserted


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
