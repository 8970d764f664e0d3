"""Small helpers every SQLite engine module shares: query text, rows, JSON lists.

Example: ``conn.execute(sql("get_job"), {"id": 1})``
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from errands.engines.base import load_sql
from errands.job import STATES_BY_VALUE, Job

__all__ = ["claim_rows", "dict_rows", "job_from_claim", "json_list", "sql"]


_SQL: dict[str, str] = {}


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


def claim_rows(
    conn: sqlite3.Connection, query: str, params: Mapping[str, Any]
) -> list[sqlite3.Row]:
    """The rows of a claim (``_claimed_row.sql``), readable by position and by name."""
    cursor = conn.execute(query, params)  # conn.execute: what the bench's counter sees
    cursor.row_factory = sqlite3.Row  # applies to the rows fetched from here on
    return cursor.fetchall()


def job_from_claim(row: Sequence[Any]) -> Job:
    """A :class:`Job` from one claimed row (raises if it cannot be decoded).

    Example: ``job_from_claim(claim_rows(conn, sql("fetch"), params)[0])``
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
