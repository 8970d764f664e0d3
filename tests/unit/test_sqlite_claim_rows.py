"""SQLite claims read plain columns plus one JSON array (``_claimed_row.sql``).

The claimed job must be exactly what ``get_job`` reads: every JSON column, and
times to the last bit (SQLite's JSON functions would round a REAL to 15 digits,
which is why numbers stay columns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import errands
from errands.engines import sqlite as sqlite_engine
from errands.engines.rows import job_from_row
from errands.engines.sqlite_util import dict_rows, job_from_claim, read_claimed


def _stored_row(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        cursor = conn.execute(
            "INSERT INTO errands_jobs (state, attempt, queue, worker, args, meta, tags, errors, "
            "result, timeout, inserted_at, scheduled_at, attempted_at, finished_at, attempted_by) "
            "VALUES ('executing', 1, 'q', 'w', ?, ?, ?, ?, ?, 2.5, ?, ?, ?, NULL, 'old/q/1')",
            (
                '{"n": 1, "s": "é\\u2028", "deep": [1, {"x": null}]}',
                '{"trace": "abc"}',
                '["a", "b"]',
                '[{"type": "ValueError", "attempt": 1}]',
                '{"ok": true}',
                1764360000.1234567,  # 17 significant digits
                0.30000000000000004,
                1764360000.9876543,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


@pytest.fixture
def work_app(tmp_path: Path) -> Iterator[tuple[errands.App, Any]]:
    """An app on ``claim.db`` with one worker, ``t.work(n)``, and its schema."""
    app = errands.App(f"sqlite:///{tmp_path / 'claim.db'}")

    @app.job(name="t.work")
    def work(n: int) -> None: ...

    app.migrate()
    yield app, work
    app.close()


def test_a_claimed_row_decodes_to_the_stored_job(tmp_path: Path) -> None:
    path = tmp_path / "claim.db"
    app = errands.App(f"sqlite:///{path}")
    app.migrate()
    job_id = _stored_row(path)
    with sqlite3.connect(path) as conn:
        [row] = read_claimed(conn, [(job_id, 1)], "old/q/1")
        [plain] = dict_rows(conn.execute("SELECT * FROM errands_jobs WHERE id = ?", (job_id,)))
    job = job_from_claim(row)
    assert job == job_from_row(plain)
    assert job.inserted_at == 1764360000.1234567 and job.scheduled_at == 0.30000000000000004
    assert job.args == {"n": 1, "s": "é\u2028", "deep": [1, {"x": None}]}
    assert job.result == {"ok": True} and job.errors == [{"type": "ValueError", "attempt": 1}]
    assert row["id"] == job_id, "rows are readable by name too (for discarding bad ones)"
    app.close()


def test_a_claim_returns_what_get_job_reads(work_app: tuple[errands.App, Any]) -> None:
    app, work = work_app
    stored = app.enqueue_many([work.new(n=i) for i in range(3)])
    claimed = app.engine.fetch("default", 10, "node/default/1", ["t.work"])
    assert [job.id for job in claimed] == [job.id for job in stored]
    assert claimed == [app.get_job(job.id) for job in stored]


def test_only_the_producers_executing_attempts_are_read_back(
    work_app: tuple[errands.App, Any], tmp_path: Path
) -> None:
    """A job cancelled between the claim's commit and the read is not started."""
    app, work = work_app
    first, second, third = app.enqueue_many([work.new(n=i) for i in range(3)])
    with sqlite3.connect(tmp_path / "claim.db") as conn:
        conn.execute(
            "UPDATE errands_jobs SET state = 'executing', attempt = 1, attempted_by = 'p1'"
        )
        conn.execute("UPDATE errands_jobs SET state = 'cancelled' WHERE id = ?", (second.id,))
        conn.execute("UPDATE errands_jobs SET attempted_by = 'p2' WHERE id = ?", (third.id,))
        claimed = [(first.id, 1), (second.id, 1), (third.id, 1)]
        rows = read_claimed(conn, claimed, "p1")
    assert [row["id"] for row in rows] == [first.id]


def test_claimed_jobs_come_back_in_priority_order(
    work_app: tuple[errands.App, Any], tmp_path: Path
) -> None:
    app, work = work_app
    stored = app.enqueue_many([app.new_job(work, {"n": i}, priority=9 - i) for i in range(5)])
    claimed = app.engine.fetch("default", 10, "node/default/1", ["t.work"])
    assert [job.id for job in claimed] == [job.id for job in reversed(stored)]
    with sqlite3.connect(tmp_path / "claim.db") as conn:
        # Whatever order the ids arrive in: the read sorts them as the claim picked them.
        rows = read_claimed(conn, [(job.id, 1) for job in stored], "node/default/1")
    assert [row["id"] for row in rows] == [job.id for job in reversed(stored)]


def test_a_failed_read_hands_the_claim_back(
    work_app: tuple[errands.App, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs claimed but never read must not wait in ``executing`` for the producer to stop."""
    app, work = work_app
    stored = app.enqueue_many([work.new(n=i) for i in range(3)])

    def failing_read(*args: object) -> list[sqlite3.Row]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_engine, "read_claimed", failing_read)
    with pytest.raises(errands.DatabaseError, match="reading claimed jobs failed: disk I/O"):
        app.engine.fetch("default", 10, "node/default/1", ["t.work"])
    for job in stored:
        after = app.get_job(job.id)
        assert after is not None
        assert (after.state, after.attempt, after.attempted_by) == (
            errands.JobState.AVAILABLE,
            0,
            None,
        )
    monkeypatch.undo()
    assert len(app.engine.fetch("default", 10, "node/default/1", ["t.work"])) == 3
