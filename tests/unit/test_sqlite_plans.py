"""SQLite query plans that keep the hot and rare paths off the finished history."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from errands.engines.base import load_sql
from errands.engines.sqlite import SQLiteEngine


@pytest.mark.parametrize("statement", ["rescue", "rescue_producer"])
def test_lookups_of_executing_jobs_use_the_executing_index(tmp_path: Path, statement: str) -> None:
    """Schema v5 dropped the (attempted_by) index: these scan the small executing one."""
    path = tmp_path / "plans.db"
    engine = SQLiteEngine(str(path))
    engine.migrate()
    engine.close()
    text = load_sql("sqlite", statement)
    params = dict.fromkeys(re.findall(r":(\w+)", text), 1)
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "errands_jobs_executing" not in names
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text, params))
    assert "SCAN errands_jobs USING INDEX errands_jobs_executing_queue" in plan, plan
