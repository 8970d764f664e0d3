"""Small helpers every SQLite engine module shares: query text, rows as dicts, JSON lists.

Example: ``conn.execute(sql("get_job"), {"id": 1})``
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from errands.engines.base import load_sql

__all__ = ["dict_rows", "json_list", "sql"]

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
