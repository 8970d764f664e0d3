"""SQLite claims return plain columns plus one JSON array (``_claimed_row.sql``).

The claimed job must be exactly what ``get_job`` reads: every JSON column, and
times to the last bit (SQLite's JSON functions would round a REAL to 15 digits,
which is why numbers stay columns).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import errands
from errands.engines.base import load_sql
from errands.engines.rows import job_from_row
from errands.engines.sqlite_util import claim_rows, dict_rows, job_from_claim


def _stored_row(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        cursor = conn.execute(
            "INSERT INTO errands_jobs (queue, worker, args, meta, tags, errors, result, "
            "timeout, inserted_at, scheduled_at, attempted_at, finished_at, attempted_by) "
            "VALUES ('q', 'w', ?, ?, ?, ?, ?, 2.5, ?, ?, ?, NULL, 'old/q/1')",
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


def test_a_claimed_row_decodes_to_the_stored_job(tmp_path: Path) -> None:
    path = tmp_path / "claim.db"
    app = errands.App(f"sqlite:///{path}")
    app.migrate()
    job_id = _stored_row(path)
    select = "SELECT\n" + load_sql("sqlite", "_claimed_row") + "\nFROM errands_jobs WHERE id = ?"
    with sqlite3.connect(path) as conn:
        [row] = claim_rows(conn, select.replace("?", ":id"), {"id": job_id})
        [plain] = dict_rows(conn.execute("SELECT * FROM errands_jobs WHERE id = ?", (job_id,)))
    job = job_from_claim(row)
    assert job == job_from_row(plain)
    assert job.inserted_at == 1764360000.1234567 and job.scheduled_at == 0.30000000000000004
    assert job.args == {"n": 1, "s": "é\u2028", "deep": [1, {"x": None}]}
    assert job.result == {"ok": True} and job.errors == [{"type": "ValueError", "attempt": 1}]
    assert row["id"] == job_id, "rows are readable by name too (for discarding bad ones)"
    app.close()


def test_a_claim_returns_what_get_job_reads(tmp_path: Path) -> None:
    app = errands.App(f"sqlite:///{tmp_path / 'claim.db'}")

    @app.job(name="t.work")
    def work(n: int) -> None: ...

    app.migrate()
    stored = app.enqueue_many([work.new(n=i) for i in range(3)])
    claimed = app.engine.fetch("default", 10, "node/default/1", ["t.work"])
    assert [job.id for job in claimed] == [job.id for job in stored]
    assert claimed == [app.get_job(job.id) for job in stored]
    app.close()
