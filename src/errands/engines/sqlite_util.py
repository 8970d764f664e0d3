"""Small helpers every SQLite engine module shares: query text, rows, JSON lists.

Example: ``conn.execute(sql("get_job"), {"id": 1})``
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from errands.engines.base import Ack, load_sql
from errands.errors import DatabaseError
from errands.job import STATES_BY_VALUE, Job, JobState

__all__ = [
    "MIN_SQLITE",
    "Claimed",
    "apply_acks",
    "claim",
    "dict_rows",
    "job_from_claim",
    "json_list",
    "queues_with_available_jobs",
    "read_claimed",
    "require_sqlite",
    "sql",
]


_SQL: dict[str, str] = {}

#: One job a claim took: ``(id, attempt)``.
Claimed = tuple[int, int]

#: The oldest SQLite the queries run on: claims use ``UPDATE ... RETURNING`` (3.35).
MIN_SQLITE = (3, 35, 0)


def require_sqlite() -> None:
    """Fail clearly, before any query, when Python's SQLite is older than ``MIN_SQLITE``.

    Example: ``require_sqlite()  # raises DatabaseError on SQLite 3.31``
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        needed = ".".join(map(str, MIN_SQLITE))
        raise DatabaseError(
            f"errands needs SQLite {needed} or newer (for UPDATE ... RETURNING), but this "
            f"Python's sqlite3 module uses SQLite {sqlite3.sqlite_version}: use a Python "
            "built against a newer SQLite, or PostgreSQL"
        )


def sql(name: str) -> str:
    """The text of ``engines/sql/sqlite/<name>.sql``, read once."""
    text = _SQL.get(name)
    if text is None:
        text = _SQL[name] = load_sql("sqlite", name)
    return text


def dict_rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """The cursor's remaining rows as ``{column: value}`` dicts."""
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def json_list(values: Sequence[Any]) -> str:
    """``values`` as a JSON array, for ``json_each(?)``."""
    return orjson.dumps(list(values)).decode()


def claim(conn: sqlite3.Connection, query: str, params: Mapping[str, Any]) -> list[Claimed]:
    """Run a claim (``fetch.sql``, ``fetch_limited.sql``) in the open write transaction.

    Returns the ``(id, attempt)`` of each job it took; read the jobs themselves
    with :func:`read_claimed` once the transaction has committed.
    """
    return conn.execute(query, params).fetchall()  # conn.execute: what the bench's counter sees


def read_claimed(
    conn: sqlite3.Connection, claimed: Sequence[Claimed], producer: str
) -> list[sqlite3.Row]:
    """The rows (``_claimed_row.sql``) of the jobs a claim took, in claim order.

    Only ``producer``'s executing attempts: a job cancelled since the claim is
    left out. Rows are readable by position and by name.

    Example::

        claimed = claim(conn, sql("fetch"), params)  # inside BEGIN IMMEDIATE
        conn.execute("COMMIT")
        rows = read_claimed(conn, claimed, params["producer"])
    """
    ids = orjson.dumps([job_id for job_id, _ in claimed]).decode()
    cursor = conn.execute(sql("claimed_jobs"), {"ids": ids, "producer": producer})
    cursor.row_factory = sqlite3.Row  # applies to the rows fetched from here on
    return cursor.fetchall()


def queues_with_available_jobs(conn: sqlite3.Connection) -> list[str]:
    """The queues that have jobs available now, by name (``available_queues.sql``).

    Example: ``queues_with_available_jobs(sqlite3.connect("jobs.db"))``
    """
    return [row[0] for row in conn.execute(sql("available_queues")).fetchall()]


def job_from_claim(row: Sequence[Any]) -> Job:
    """A :class:`Job` from one claimed row (raises if it cannot be decoded).

    Example: ``job_from_claim(read_claimed(conn, claimed, "p1")[0])``
    """
    (job_id, attempt, worker, queue, state, priority, max_attempts, timeout, inserted_at,
     scheduled_at, attempted_at, finished_at, attempted_by, data) = row  # fmt: skip
    args, meta, tags, errors, result = orjson.loads(data)
    # Positional, in the order of inserted.POSITIONAL (checked at import).
    return Job(
        job_id, worker, queue, args, STATES_BY_VALUE[state], priority, attempt, max_attempts, meta,
        tags, errors, result, timeout, inserted_at, scheduled_at, attempted_at, finished_at,
        attempted_by,
    )  # fmt: skip


def apply_acks(conn: sqlite3.Connection, acks: Sequence[Ack]) -> int:
    """Apply outcomes in the open write transaction; returns how many were not stale.

    Plain completions go through ``ack_completed.sql``, one statement for
    all of them, cheaper than the general ``ack.sql`` that takes every
    other outcome one at a time.
    """
    now = time.time()
    completed: list[tuple[int, int, str, str | None]] = []
    others: list[dict[str, Any]] = []
    for ack in acks:
        result = None if ack.result is None else ack.result.decode()
        if (
            ack.state is JobState.COMPLETED
            and ack.error is None
            and ack.scheduled_at is None
            and not ack.snoozed
        ):
            completed.append((ack.id, ack.attempt, ack.producer, result))
            continue
        others.append(
            {
                "id": ack.id,
                "attempt": ack.attempt,
                "producer": ack.producer,
                "result": result,
                "now": now,
                "state": ack.state.value,
                "error": None if ack.error is None else orjson.dumps(ack.error).decode(),
                "scheduled_at": ack.scheduled_at,
                "snoozed": 1 if ack.snoozed else 0,
            }
        )
    applied = 0
    if completed:
        batch = orjson.dumps(completed).decode()
        applied = conn.execute(sql("ack_completed"), {"batch": batch, "now": now}).rowcount
    if others:
        applied += conn.executemany(sql("ack"), others).rowcount
    return applied
