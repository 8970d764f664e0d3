"""The SQLite writers' turn-taking lock (engines/sqlite_writer.py), across real processes."""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.support import wait_for

import errands
from errands import codec
from errands.engines.sqlite import SQLiteEngine
from errands.engines.sqlite_writer import WriterLock, WriterLockTimeoutError
from errands.job import NewJob

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""

#: Holds the writer lock and SQLite's own write lock, as a writer stopped
#: mid-transaction does, until a line comes in; then lets both go.
HOLD_BOTH = """
import fcntl, os, sqlite3, sys
fd = os.open(sys.argv[1] + "-errands.lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
fcntl.flock(fd, fcntl.LOCK_UN)
print("released", flush=True)
sys.stdin.readline()
"""


def _holder(script: str, path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _tell(holder: subprocess.Popen[str], expect: str | None = None) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    if expect is not None:
        assert holder.stdout.readline() == expect


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


def test_a_lock_held_past_the_timeout_raises_database_is_locked(tmp_path: Path) -> None:
    lock_file = tmp_path / "jobs.db-errands.lock"
    holder = _holder(HOLD_LOCK, lock_file)
    lock = WriterLock(str(tmp_path / "jobs.db"), timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as info, lock:
            pytest.fail("took a lock another process holds")
        waited = time.monotonic() - started
        assert 0.3 <= waited < 5
        assert isinstance(info.value, WriterLockTimeoutError)
        assert info.value.sqlite_errorname == "SQLITE_BUSY"
        message = str(info.value)
        assert message.startswith("database is locked: another errands process held")
        assert str(lock_file) in message and "0.3 s" in message
        _tell(holder)
        holder.wait(10)
        with lock:  # the same lock works once the holder is gone
            pass
    finally:
        holder.kill()
        holder.wait()
        lock.close()


def test_a_writer_that_gave_up_does_not_keep_the_lock_once_it_frees(tmp_path: Path) -> None:
    """Its waiter thread still gets the lock later: it must let it go at once."""
    lock_file = tmp_path / "jobs.db-errands.lock"
    holder = _holder(HOLD_LOCK, lock_file)
    gave_up = WriterLock(str(tmp_path / "jobs.db"), timeout=0.2)
    other = WriterLock(str(tmp_path / "jobs.db"), timeout=30)  # its own descriptor
    try:
        with pytest.raises(WriterLockTimeoutError), gave_up:
            pytest.fail("took a lock another process holds")
        _tell(holder)
        holder.wait(10)
        started = time.monotonic()
        with other:  # would wait its whole 30 s if the abandoned wait kept the lock
            assert time.monotonic() - started < 5
        with gave_up:  # and the writer that gave up writes again, on a new descriptor
            pass
    finally:
        holder.kill()
        holder.wait()
        gave_up.close()
        other.close()


def test_writes_timing_out_again_and_again_hold_one_descriptor(tmp_path: Path) -> None:
    """A stopped holder must not cost a descriptor per timed-out write (a busy worker retries)."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    holder = _holder(HOLD_LOCK, tmp_path / "jobs.db-errands.lock")
    lock = WriterLock(str(tmp_path / "jobs.db"), timeout=0.05)
    try:
        with pytest.raises(WriterLockTimeoutError), lock:
            pass
        gc.collect()  # earlier tests' pipes, closed when collected, must not move the count
        after_first = open_fds()
        for _ in range(10):
            with pytest.raises(WriterLockTimeoutError), lock:
                pass
        assert open_fds() <= after_first
        _tell(holder)
        holder.wait(10)
        with lock:  # the turn it gave up, or a new descriptor: either way it writes
            pass
        lock.close()
        wait_for(lambda: open_fds() < after_first, timeout=10)
    finally:
        holder.kill()
        holder.wait()
        lock.close()


def test_a_waiting_writer_takes_the_lock_promptly_once_freed(tmp_path: Path) -> None:
    holder = _holder(HOLD_LOCK, tmp_path / "jobs.db-errands.lock")
    lock = WriterLock(str(tmp_path / "jobs.db"), timeout=30)
    taken: list[float] = []

    def write() -> None:
        with lock:
            taken.append(time.monotonic())

    try:
        writer = threading.Thread(target=write)
        started = time.monotonic()
        writer.start()
        time.sleep(0.1)
        assert not taken  # still waiting
        released = time.monotonic()
        _tell(holder)  # the holder exits, which lets the lock go
        writer.join(10)
        assert len(taken) == 1
        assert taken[0] - started < 1
        assert taken[0] - released < 0.5
    finally:
        holder.kill()
        holder.wait()
        lock.close()


def test_enqueue_fails_with_database_error_while_a_stopped_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    """A writer stopped mid-write (SIGSTOP) fails enqueue after busy_timeout, never hangs it."""
    path = tmp_path / "jobs.db"
    app = errands.App(f"sqlite:///{path}?busy_timeout=0.3")

    @app.job(name="w")
    def work(n: int) -> int:
        return n

    work.enqueue(n=1)  # migrates: the writes below are inserts alone
    holder = _holder(HOLD_BOTH, path)
    try:
        os.kill(holder.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(errands.DatabaseError) as info:
            work.enqueue(n=2)
        assert 0.3 <= time.monotonic() - started < 5
        assert "database is locked" in str(info.value)
        assert f"{path}-errands.lock" in str(info.value)
        assert "inserting jobs failed" in str(info.value)  # mapped like SQLite's own errors
        os.kill(holder.pid, signal.SIGCONT)
        _tell(holder, expect="released\n")
        work.enqueue(n=2)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()
    jobs = app.list_jobs()
    assert sorted(job.args["n"] for job in jobs) == [1, 2]
    assert len({job.id for job in jobs}) == 2
    app.close()


def test_the_lock_adds_up_how_long_it_was_held(tmp_path: Path) -> None:
    """``errands bench`` divides it by a drain's wall time: the single writer's share."""
    lock = WriterLock(str(tmp_path / "jobs.db"), timeout=1.0)
    assert lock.held_seconds == 0.0
    for _ in range(2):
        with lock:
            time.sleep(0.05)
    lock.release()  # not held: adds nothing
    assert 0.1 <= lock.held_seconds < 1.0
    waited = WriterLock(":memory:")  # no lock file: nothing is held, nothing counted
    with waited:
        time.sleep(0.01)
    assert waited.held_seconds == 0.0
    lock.close()
