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


def test_the_rate_window_reads_only_rate_limited_starts(tmp_path: Path) -> None:
    """Schema v6: the rate count searches (queue, rate_started_at), set by limited claims only."""
    path = tmp_path / "plans.db"
    engine = SQLiteEngine(str(path))
    engine.migrate()
    engine.close()
    text = load_sql("sqlite", "fetch_limited")
    params: dict[str, object] = dict.fromkeys(re.findall(r":(\w+)", text), 1)
    params.update(by="none", workers='["w"]')
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "errands_jobs_attempted" not in names
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text, params))
    assert "USING INDEX errands_jobs_rate_started (queue=? AND rate_started_at>?)" in plan, plan
