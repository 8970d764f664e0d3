"""The SQLite engine's multi-row inserts: statement sizes, parameter limits, savepoints."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from errands import codec
from errands.engines import sqlite_insert
from errands.engines.sqlite import SQLiteEngine
from errands.errors import DatabaseError
from errands.job import NewJob


def _new(i: int, **fields: object) -> NewJob:
    values: dict[str, object] = {
        "worker": "w",
        "queue": "default",
        "args": {"i": i},
        "args_json": codec.encode({"i": i}, "args"),
        "meta_json": b"{}",
        "tags_json": b"[]",
        "priority": 0,
        "max_attempts": 20,
        "scheduled_at": None,
        "timeout": None,
    }
    values.update(fields)
    return NewJob(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("total", [0, 1, 2, 3, 511, 512, 513, 1023, 1024, 1500, 5000])
def test_pieces_cover_the_batch_with_few_statement_sizes(total: int) -> None:
    pieces = sqlite_insert._pieces(total, 512)
    assert sum(pieces) == total
    assert all(size & (size - 1) == 0 for size in pieces), "powers of two"
    assert pieces == sorted(pieces, reverse=True)
    assert len(pieces) <= total // 512 + 9


@pytest.fixture
def engine(tmp_path: Path) -> SQLiteEngine:
    engine = SQLiteEngine(str(tmp_path / "jobs.db"))
    engine.migrate()
    return engine


def test_a_low_parameter_limit_makes_smaller_statements(engine: SQLiteEngine) -> None:
    with engine._write("limiting") as conn:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite before 3.32
        assert sqlite_insert._most_rows(conn) == 64
    jobs = engine.insert([_new(i) for i in range(700)])
    assert [job.args["i"] for job in jobs] == list(range(700))
    assert all(engine.get_job(job.id) == job for job in jobs)


def test_a_failing_statement_undoes_the_earlier_ones_in_the_callers_transaction(
    engine: SQLiteEngine,
) -> None:
    conn = sqlite3.connect(engine.path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (1)")
        batch = [_new(i) for i in range(1200)]
        batch[1100] = _new(1100, priority=12)  # fails the CHECK in the third statement
        with pytest.raises(DatabaseError, match="CHECK constraint failed"):
            engine.insert(batch, conn=conn)
        assert conn.in_transaction, "the caller's transaction goes on"
        assert conn.execute("SELECT count(*) FROM errands_jobs").fetchone() == (0,)
        engine.insert(batch[:3], conn=conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert engine.queue_counts() == {"default": {"available": 3}}
    with contextlib.closing(sqlite3.connect(engine.path)) as reader:
        assert reader.execute("SELECT id FROM orders").fetchall() == [(1,)]
