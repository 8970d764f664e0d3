"""A database that cannot be used gives errands.DatabaseError naming the path, and is not harmed."""

from __future__ import annotations

import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import errands
from errands import DatabaseError, SchemaError

GARBAGE = b"this is definitely not a SQLite database\x00\xff" * 200


def _app_with_job(url: str) -> tuple[errands.App, errands.JobFunction[..., object]]:
    app = errands.App(url)

    @app.job(name="w")
    def work(n: int) -> int:
        return n

    return app, work


def test_corrupt_file_gives_database_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(GARBAGE)
    app, work = _app_with_job(f"sqlite:///{path}")
    with pytest.raises(DatabaseError) as info:
        work.enqueue(n=1)
    message = str(info.value)
    assert str(path) in message
    assert "not a database" in message or "corrupt" in message
    for call in (lambda: app.get_job(1), app.list_jobs, app.queue_counts, app.drain):
        with pytest.raises(DatabaseError):
            call()
    app.close()
    # the user's file is left exactly as it was
    assert path.read_bytes() == GARBAGE


def test_missing_folder_gives_unable_to_open(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "jobs.db"
    _, work = _app_with_job(f"sqlite:///{path}")
    with pytest.raises(DatabaseError) as info:
        work.enqueue(n=1)
    assert str(path) in str(info.value)
    assert "unable to open" in str(info.value)
    assert not path.parent.exists()


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    _, work = _app_with_job(f"sqlite:///{tmp_path}")
    with pytest.raises(DatabaseError) as info:
        work.enqueue(n=1)
    assert str(tmp_path) in str(info.value)


def test_missing_schema_without_auto_migrate(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    app = errands.App(f"sqlite:///{path}", auto_migrate=False)
    with pytest.raises(SchemaError) as info:
        app.get_job(1)
    assert "errands migrate" in str(info.value)
    assert isinstance(info.value, DatabaseError)
    assert app.migrate() >= 1
    assert app.get_job(1) is None
    app.close()


def _populated(path: Path) -> int:
    app, work = _app_with_job(f"sqlite:///{path}")
    job = work.enqueue(n=1)
    app.close()
    return job.id


def test_read_only_mode_reads_but_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    job_id = _populated(path)
    app, work = _app_with_job(f"sqlite:///{path}?mode=ro")
    stored = app.get_job(job_id)
    assert stored is not None and stored.args == {"n": 1}
    with pytest.raises(DatabaseError) as info:
        work.enqueue(n=2)
    assert str(path) in str(info.value)
    assert "read-only" in str(info.value) or "readonly" in str(info.value)
    with pytest.raises(DatabaseError):
        app.cancel_job(job_id)
    app.close()
    rw, _ = _app_with_job(f"sqlite:///{path}")
    assert [j.id for j in rw.list_jobs()] == [job_id]
    rw.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is 0700 under root)."""
    folder = Path(tempfile.mkdtemp(prefix="errands-ro-"))
    folder.chmod(0o755)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def _as_unprivileged(fn: Callable[[], str]) -> str:
    """Run ``fn`` where file permissions apply; as root, in a forked child as ``nobody``.

    Root ignores file permissions, so a chmod-ed file is only read-only for another
    user. The child inherits the already imported modules, so it needs no access
    to the interpreter's files.
    """
    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            outcome = fn()
        except BaseException as exc:
            outcome = f"child failed: {type(exc).__name__}: {exc}"
            code = 1
        try:
            os.write(write, outcome.encode("utf-8", "replace"))
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], 0.1)
            if ready:
                chunk = os.read(read, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the unprivileged child hung")
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


# The forked child only opens a database and exits (os._exit): no thread of the
# parent's is needed there, which is what Python 3.12+ warns about.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_read_only_file_and_folder_give_a_clear_error(shared_dir: Path) -> None:
    import errands.engines.sqlite  # noqa: F401 - imported before a fork drops privileges

    path = shared_dir / "jobs.db"
    job_id = _populated(path)
    for leftover in shared_dir.glob("jobs.db-*"):
        leftover.unlink()
    path.chmod(0o444)
    shared_dir.chmod(0o555)

    def attempt() -> str:
        app, work = _app_with_job(f"sqlite:///{path}")
        try:
            work.enqueue(n=2)
        except DatabaseError as exc:
            return f"DatabaseError: {exc}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            app.close()
        return "no error: the write went through"

    outcome = _as_unprivileged(attempt)
    assert outcome.startswith("DatabaseError: "), outcome
    assert str(path) in outcome
    assert "read-only" in outcome or "readonly" in outcome or "unable to open" in outcome

    shared_dir.chmod(0o755)
    path.chmod(0o644)
    app, _ = _app_with_job(f"sqlite:///{path}")
    assert [j.id for j in app.list_jobs()] == [job_id], "the read-only attempt changed the table"
    app.close()


def test_a_sqlite_too_old_for_the_queries_is_named_before_any_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python linked against SQLite 3.31 (no RETURNING) fails at the first call, saying why."""
    import sqlite3

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    path = tmp_path / "jobs.db"
    _app, work = _app_with_job(f"sqlite:///{path}")
    expected = r"needs SQLite 3\.35\.0 or newer .* uses SQLite 3\.31\.1"
    with pytest.raises(DatabaseError, match=expected):
        work.enqueue(n=1)
    assert not path.exists()  # nothing was created or written
