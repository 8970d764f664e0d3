"""SQLite query plans that keep the hot and rare paths off the finished history."""

from __future__ import annotations

import json
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


def _plan_beside_five_executing(
    tmp_path: Path, analyzed: bool, statement: str, **params: object
) -> str:
    """``statement``'s plan on 10 finished, 5 executing (ids 11-15) and 5 available jobs."""
    path = tmp_path / "plans.db"
    engine = SQLiteEngine(str(path))
    engine.migrate()
    engine.close()
    jobs = [("completed", 1.0)] * 10 + [("executing", None)] * 5 + [("available", None)] * 5
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO errands_jobs (state, queue, worker, inserted_at, scheduled_at,"
            " finished_at, attempt, attempted_by) VALUES (?, 'q', 'w', 0, 0, ?, 1, 'p')",
            jobs,
        )
        if analyzed:
            conn.execute("ANALYZE")
        text = load_sql("sqlite", statement)
        return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text, params))


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
def test_a_batch_of_completions_probes_each_job_by_rowid(tmp_path: Path, analyzed: bool) -> None:
    """ack_completed walks the batch and finds each job by id, even after ANALYZE.

    Statistics taken while few jobs ran (5 here) made SQLite drive the join by
    the partial index of executing jobs instead, walking the whole batch once
    per executing job: 2,000 executing and 500 acks took 389 ms instead of 2.4.
    """
    batch = json.dumps([[job_id, 1, "p", None] for job_id in range(11, 16)])
    plan = _plan_beside_five_executing(tmp_path, analyzed, "ack_completed", batch=batch, now=2.0)
    assert "SEARCH errands_jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    assert "SCAN errands_jobs" not in plan, plan


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
def test_the_queues_with_available_jobs_are_found_in_the_available_index(
    tmp_path: Path, analyzed: bool
) -> None:
    """app.drain() with no queue asks each round which queues have jobs ready: one
    search of the partial index of available jobs per queue, never the table."""
    path = tmp_path / "plans.db"
    engine = SQLiteEngine(str(path))
    engine.migrate()
    engine.close()
    jobs = [("completed", "q1")] * 20 + [("available", "q1"), ("available", "q2")]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO errands_jobs (state, queue, worker, inserted_at, scheduled_at)"
            " VALUES (?, ?, 'w', 0, 0)",
            jobs,
        )
        if analyzed:
            conn.execute("ANALYZE")
        text = load_sql("sqlite", "available_queues")
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text)]
        assert [row[0] for row in conn.execute(text)] == ["q1", "q2"]
    searches = [step for step in plan if "errands_jobs" in step or step.startswith("SEARCH j")]
    assert len(searches) == 2 and all("USING INDEX errands_jobs_fetch" in s for s in searches), plan
    assert not any(step.startswith("SCAN errands_jobs") for step in plan), plan


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
def test_claimed_jobs_are_read_back_by_rowid(tmp_path: Path, analyzed: bool) -> None:
    """claimed_jobs.sql probes each claimed id, not the queue's executing jobs.

    The read runs after every claim: walking the partial index of executing jobs
    instead would read every job the queue's nodes hold, for each claim.
    """
    ids = json.dumps(list(range(11, 16)))
    plan = _plan_beside_five_executing(tmp_path, analyzed, "claimed_jobs", ids=ids, producer="p")
    assert "SEARCH errands_jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    assert "errands_jobs_executing_queue" not in plan, plan
