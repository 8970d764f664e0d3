"""The SQLite writers' turn-taking lock (engines/sqlite_writer.py), across real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from errands import codec
from errands.engines.sqlite import SQLiteEngine
from errands.job import NewJob

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def _job() -> NewJob:
    return NewJob(
        worker="w",
        queue="default",
        args={},
        args_json=codec.encode({}, "args"),
        meta_json=b"{}",
        tags_json=b"[]",
        priority=0,
        max_attempts=20,
        scheduled_at=None,
        timeout=None,
    )


def test_a_writer_waits_for_the_lock_another_process_holds(tmp_path: Path) -> None:
    engine = SQLiteEngine(str(tmp_path / "jobs.db"))
    engine.migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "jobs.db-errands.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        inserted = threading.Event()
        writer = threading.Thread(target=lambda: (engine.insert([_job()]), inserted.set()))
        writer.start()
        # Far longer than SQLite's busy handler would wait between tries: the
        # insert is held back by the lock file alone (SQLite's own lock is free).
        assert not inserted.wait(0.5)
        with sqlite3.connect(tmp_path / "jobs.db") as reader:  # WAL: reads are not blocked
            assert reader.execute("SELECT count(*) FROM errands_jobs").fetchone() == (0,)
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert inserted.wait(10)
        writer.join(10)
    finally:
        holder.kill()
        holder.wait()
    assert len(engine.list_jobs()) == 1
    engine.close()


def test_without_a_lock_file_writers_still_write(tmp_path: Path) -> None:
    """A lock path that cannot be opened (here a folder) leaves ordering to SQLite."""
    (tmp_path / "jobs.db-errands.lock").mkdir()
    engine = SQLiteEngine(str(tmp_path / "jobs.db"))
    engine.migrate()
    started = time.monotonic()
    engine.insert([_job(), _job()])
    assert len(engine.list_jobs()) == 2
    assert time.monotonic() - started < 5
    engine.close()
    memory = SQLiteEngine(":memory:")
    memory.migrate()
    memory.insert([_job()])
    assert len(memory.list_jobs()) == 1
    assert not list(Path.cwd().glob("*errands.lock"))
    memory.close()
