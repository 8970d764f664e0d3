"""The one interface every library adapter implements, and the storage helpers they share.

An adapter drives one library on one storage. The parent process (compare.py)
calls ``reset``, ``enqueue_many``, ``enqueue_single``, ``start_worker`` and
``done``; the worker process (worker.py) calls ``prepare_worker`` and then the
callable it returns. Every PostgreSQL library gets its own database
(``peers_<name>``), every Redis library its own Redis db number, every SQLite
library its own file, all dropped and recreated by ``reset``.

Example::

    adapter = load("oban")(Settings.default())
    adapter.reset()
    seconds = adapter.enqueue_many(20_000)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "QUEUE",
    "ROOT",
    "Adapter",
    "AsyncClient",
    "Settings",
    "recreate_pg_database",
    "stop_process",
]

T = TypeVar("T")

#: The repository root: workers run from here so ``benchmarks.peers`` imports.
ROOT = Path(__file__).resolve().parents[3]

#: The queue every library's no-op job goes to (each job's only argument is its index).
QUEUE = "bench"


@dataclass(frozen=True)
class Settings:
    """Where the storages are; passed to worker processes as JSON in ``PEERS_SETTINGS``."""

    pg_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379"
    workdir: str = "/tmp/errands-peers"

    def pg_database(self, name: str) -> str:
        """The URL of this benchmark's own database ``name`` on the same server."""
        parts = urlsplit(self.pg_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def redis_db(self, db: int) -> str:
        """The URL of Redis database number ``db``."""
        parts = urlsplit(self.redis_url)
        return urlunsplit(parts._replace(path=f"/{db}"))

    def file(self, name: str) -> Path:
        """A path in the work folder (SQLite files, worker logs)."""
        folder = Path(self.workdir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def to_env(self) -> str:
        """This object as JSON, for a child process's environment."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the parent process passed down."""
        return cls(**json.loads(os.environ["PEERS_SETTINGS"]))


def recreate_pg_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (closing its connections) and create it empty."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def unlink_sqlite(path: Path) -> None:
    """Delete a SQLite database file and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def stop_process(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the worker's process group (it and its children), SIGKILL after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Whether or not the leader is gone, no child (rq's forked workers) may outlive it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


class Adapter(ABC):
    """One library on one storage, behind the interface the comparison uses."""

    #: Row label, e.g. ``"huey-sqlite"``; also the registry key.
    name: ClassVar[str]
    #: Distribution name whose version is printed, e.g. ``"huey"``.
    library: ClassVar[str]
    #: ``"postgres"``, ``"sqlite"`` or ``"redis"``.
    storage: ClassVar[str]
    #: ``"async"`` (async enqueue API, ``async def`` job) or ``"sync"`` (``def`` job).
    style: ClassVar[str]
    #: The errands row this library's ratios are taken against.
    baseline: ClassVar[str] = ""
    #: How ``done`` decides that the drain is over (printed in the notes).
    done_method: ClassVar[str] = ""
    #: How concurrency 10 is obtained (printed in the notes).
    worker_method: ClassVar[str] = ""
    #: PostgreSQL libraries: the database of their own (``peers_<name>``).
    database: ClassVar[str] = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- parent side ------------------------------------------------------------------
    def check(self) -> None:
        """Raise (with a one-line reason) if this adapter cannot run here."""
        return None

    @abstractmethod
    def reset(self) -> None:
        """Close any client, wipe this library's storage and install its schema."""

    @abstractmethod
    def warm_up(self) -> None:
        """Enqueue one job (opens connections, prepares statements) outside any clock."""

    @abstractmethod
    def bulk(self, n: int) -> None:
        """Build ``n`` no-op jobs and insert them with the library's bulk API."""

    @abstractmethod
    def single(self, n: int) -> None:
        """Insert ``n`` no-op jobs, one enqueue call (one transaction) each."""

    def enqueue_many(self, n: int) -> float:
        """Seconds for :meth:`bulk` of ``n`` (job building included), after a warm-up."""
        self.warm_up()
        return timed(lambda: self.bulk(n))

    def enqueue_single(self, n: int) -> float:
        """Seconds for :meth:`single` of ``n``, after a warm-up."""
        self.warm_up()
        return timed(lambda: self.single(n))

    def insert(self, n: int) -> None:
        """Pre-insert exactly ``n`` no-op jobs for a drain (untimed)."""
        self.bulk(n)

    def settle(self) -> None:
        """After the untimed insert, do what autovacuum would soon do to a real table.

        PostgreSQL only: ``ANALYZE`` the library's database. A table created and
        filled a moment ago has no statistics, and a planner without them can pick
        a plan that no production table would get (procrastinate's fetch then
        sorts the whole backlog for every job: 69 ms instead of 0.04 ms at 20,000).
        """
        if self.storage == "postgres" and self.database:
            import psycopg

            with psycopg.connect(self.settings.pg_database(self.database), autocommit=True) as c:
                c.execute("ANALYZE")

    @abstractmethod
    def done(self, n: int) -> bool:
        """True once all ``n`` inserted jobs are finished, read from the library's storage."""

    def teardown(self) -> None:
        """Close clients (storage is left for inspection until the next reset)."""
        return None

    def start_worker(self, concurrency: int) -> subprocess.Popen[str]:
        """Start ``python -m benchmarks.peers.worker`` for this adapter; return once ready.

        The child imports everything and builds its objects, prints ``ready`` and
        waits for ``go`` on stdin (see :func:`go`), so interpreter start-up and
        imports are never timed; the library's own worker start-up is.
        """
        log = self.settings.file(f"{self.name}-worker.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.peers.worker", self.name, str(concurrency)],
            cwd=ROOT,
            env=dict(os.environ, PEERS_SETTINGS=self.settings.to_env()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,  # its own process group, so stop_process reaches children
        )
        log.close()
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            stop_process(proc)
            raise RuntimeError(
                f"{self.name} worker did not start (see {self.settings.file(self.name)}-worker.log)"
            )
        return proc

    # -- worker side ------------------------------------------------------------------
    @abstractmethod
    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        """Build the library's worker (no jobs run yet); return the blocking call running it."""


def go(proc: subprocess.Popen[str]) -> None:
    """Tell a ready worker process to start working."""
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


class AsyncClient:
    """A private event loop for adapters whose enqueue API is ``async``."""

    _runner: asyncio.Runner | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this adapter's loop (kept open so connections persist)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    def close_loop(self) -> None:
        """Close the loop (after the adapter closed its connections on it)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
