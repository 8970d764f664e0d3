"""The embedded engine: one SQLite file, one host, any number of processes.

WAL lets readers run beside the one writer; every write is a short
``BEGIN IMMEDIATE`` transaction so two processes never deadlock upgrading a
read lock, and ``busy_timeout`` makes a writer wait its turn instead of failing
with "database is locked". Each process keeps one connection behind a lock.
Cross-process wake-ups come from ``PRAGMA data_version``, which changes when
another connection commits: a cheap read polled every few milliseconds.

Example::

    engine = SQLiteEngine("jobs.db")
    engine.migrate()
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import orjson

from errands.engines.base import (
    Ack,
    CronSlot,
    ProducerInfo,
    RescueCounts,
    WakeUp,
    job_from_row,
    load_sql,
)
from errands.engines.migrations import latest_version, migrations
from errands.engines.sqlite_control import SQLiteControl
from errands.engines.sqlite_insert import insert_cron_on, insert_unique_on
from errands.errors import DatabaseError, SchemaError
from errands.job import Job, JobState, NewJob
from errands.limits import LimitedClaim, QueueLimits

__all__ = ["SQLiteEngine"]

_SQL: dict[str, str] = {}
_INSERT_CHUNK = 2_000


def _sql(name: str) -> str:
    text = _SQL.get(name)
    if text is None:
        text = _SQL[name] = load_sql("sqlite", name)
    return text


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _json_list(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _driver_connection(conn: Any) -> sqlite3.Connection:
    """The sqlite3 connection behind ``conn`` (itself, or a SQLAlchemy Connection/Session)."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session, scoped_session

        if isinstance(conn, (Session, scoped_session)):
            conn = conn.connection()  # joins (or begins) the session's transaction
        if isinstance(conn, SAConnection):
            if not conn.in_transaction():
                conn.begin()
            driver = conn.connection.driver_connection
            if isinstance(driver, sqlite3.Connection):
                return driver
    raise TypeError(
        "conn must be a sqlite3.Connection or a SQLAlchemy Connection/Session on sqlite, "
        f"got {module}.{type(conn).__qualname__}"
    )


class _DataVersionListener:
    """Polls ``PRAGMA data_version`` on its own connection; wakes every queue on a change."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], wake_up: WakeUp, every: float):
        self._connect = connect
        self._wake_up = wake_up
        self._every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="errands-sqlite-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._connect()
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._stopped.wait(self._every):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if version != last:
                    last = version
                    self._wake_up("*")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


class SQLiteEngine(SQLiteControl):
    """Jobs in a SQLite file. Thread-safe; one writer connection per process."""

    dialect = "sqlite"
    default_poll_interval = 0.5

    def __init__(
        self,
        path: str,
        *,
        mode: str = "rwc",
        busy_timeout: float = 10.0,
        listen_interval: float = 0.005,
    ):
        self.path = path
        self.mode = mode
        self.busy_timeout = busy_timeout
        self.listen_interval = listen_interval
        self._lock = threading.RLock()
        self._backlogged: set[str] = set()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    # -- connections ---------------------------------------------------------
    def _error(self, exc: sqlite3.Error, doing: str) -> DatabaseError:
        message = str(exc)
        hint = ""
        if "readonly" in message or "read-only" in message:
            hint = " (the file or its folder is read-only: check permissions)"
        elif "not a database" in message or "malformed" in message:
            hint = " (the file is not an errands SQLite database, or it is corrupt)"
        elif "unable to open" in message:
            hint = " (check that the folder exists and is writable)"
        return DatabaseError(f"SQLite {self.path!r}: {doing} failed: {message}{hint}")

    def _open(self) -> sqlite3.Connection:
        try:
            memory = self.path == ":memory:"
            conn = sqlite3.connect(
                self.path if memory else f"file:{quote(self.path)}?mode={self.mode}",
                timeout=self.busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
                check_same_thread=False,
                uri=not memory,
            )
            if not memory and self.mode != "ro":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise self._error(exc, "opening the database") from None
        return conn

    def _connection(self) -> sqlite3.Connection:
        # A forked child must not share its parent's connection.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from None

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error(exc, doing) from None

    def close(self) -> None:
        """Close this process's connection; safe to call twice."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- schema ----------------------------------------------------------------
    def _stored_version(self, conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'errands_schema'"
        ).fetchone()
        if exists is None:
            return 0
        return int(
            conn.execute("SELECT coalesce(max(version), 0) FROM errands_schema").fetchone()[0]
        )

    def migrate(self) -> int:
        """Apply every migration above the stored version; return the version now stored."""
        with self._write("migrating") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS errands_schema "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = self._stored_version(conn)
            for version, name, sql in migrations(self.dialect):
                if version > current:
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO errands_schema (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, time.time()),
                    )
                    current = version
            return current

    def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless every migration is applied."""
        with self._read("reading the schema version") as conn:
            stored = self._stored_version(conn)
        expected = latest_version(self.dialect)
        if stored < expected:
            raise SchemaError(
                f"SQLite {self.path!r} has errands schema version {stored}, this code needs "
                f"{expected}: run `errands migrate --database-url sqlite:///{self.path}`"
            )

    # -- jobs ------------------------------------------------------------------
    def _insert_on(self, conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
        now = time.time()
        if any(job.unique_hash is not None for job in jobs):  # see sqlite_insert
            return insert_unique_on(conn, jobs, now)
        inserted: list[Job] = []
        for start in range(0, len(jobs), _INSERT_CHUNK):
            payload = orjson.dumps(
                [
                    {
                        "worker": job.worker,
                        "queue": job.queue,
                        "args": orjson.Fragment(job.args_json),
                        "meta": orjson.Fragment(job.meta_json),
                        "tags": orjson.Fragment(job.tags_json),
                        "priority": job.priority,
                        "max_attempts": job.max_attempts,
                        "timeout": job.timeout,
                        "scheduled_at": job.scheduled_at,
                    }
                    for job in jobs[start : start + _INSERT_CHUNK]
                ]
            ).decode()
            cursor = conn.execute(_sql("insert"), {"jobs": payload, "now": now})
            inserted.extend(job_from_row(row) for row in _rows(cursor))
        inserted.sort(key=lambda job: job.id)
        return inserted

    def insert(self, jobs: Sequence[NewJob], conn: Any = None) -> list[Job]:
        """Insert in one transaction, or inside the caller's ``sqlite3.Connection`` transaction."""
        if not jobs:
            return []
        if conn is not None:
            conn = _driver_connection(conn)
            try:
                return self._insert_on(conn, jobs)
            except sqlite3.Error as exc:
                raise self._error(exc, "inserting jobs on the caller's connection") from None
        with self._write("inserting jobs") as own:
            return self._insert_on(own, jobs)

    def fetch(
        self,
        queue: str,
        limit: int,
        producer: str,
        workers: Sequence[str],
        limits: QueueLimits | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs; a cheap read first keeps idle polls off the write lock.

        A queue with ``limits`` is claimed by ``fetch_limited`` (see ``sqlite_control``)
        and the result is a :class:`~errands.limits.LimitedClaim`.
        """
        params = {
            "queue": queue,
            "limit": limit,
            "producer": producer,
            "workers": _json_list(workers),
            "now": time.time(),
        }
        with self._lock:
            # After a full claim more jobs are likely waiting: skip the probe.
            if queue not in self._backlogged:
                with self._read("looking for jobs") as conn:
                    if conn.execute(_sql("has_available"), params).fetchone() is None:
                        return [] if limits is None else LimitedClaim()
            if limits is not None:
                return self._fetch_limited(params, limits)
            with self._write("claiming jobs") as conn:
                rows = _rows(conn.execute(_sql("fetch"), params))
            if len(rows) == limit:
                self._backlogged.add(queue)
            else:
                self._backlogged.discard(queue)
        jobs = [job_from_row(row) for row in rows]
        jobs.sort(key=lambda job: (job.priority, job.scheduled_at, job.id))
        return jobs

    def ack(self, acks: Sequence[Ack]) -> int:
        """Apply outcomes in one transaction; stale acks match no row."""
        if not acks:
            return 0
        now = time.time()
        params = [
            {
                "id": ack.id,
                "attempt": ack.attempt,
                "producer": ack.producer,
                "state": ack.state.value,
                "result": None if ack.result is None else ack.result.decode(),
                "error": None if ack.error is None else orjson.dumps(ack.error).decode(),
                "scheduled_at": ack.scheduled_at,
                "snoozed": 1 if ack.snoozed else 0,
                "now": now,
            }
            for ack in acks
        ]
        with self._write("recording job outcomes") as conn:
            return conn.executemany(_sql("ack"), params).rowcount

    def stage(self, limit: int) -> list[str]:
        """Make due jobs available; return the distinct queues touched."""
        with self._write("staging due jobs") as conn:
            rows = conn.execute(_sql("stage"), {"now": time.time(), "limit": limit}).fetchall()
        return sorted({row[0] for row in rows})

    def _rescued(self, rows: list[Any]) -> RescueCounts:
        states = [row[0] for row in rows]
        return RescueCounts(
            available=states.count(JobState.AVAILABLE.value),
            discarded=states.count(JobState.DISCARDED.value),
        )

    def rescue(self, rescue_after: float) -> RescueCounts:
        """Rescue jobs of silent producers, then forget long-dead producers."""
        now = time.time()
        with self._write("rescuing orphaned jobs") as conn:
            rows = conn.execute(
                _sql("rescue"), {"now": now, "cutoff": now - rescue_after}
            ).fetchall()
            conn.execute(_sql("delete_dead_producers"), {"cutoff": now - 10 * rescue_after})
        return self._rescued(rows)

    def rescue_producer(self, producer: str) -> RescueCounts:
        """Return a stopping producer's unfinished jobs now."""
        with self._write("returning a stopping producer's jobs") as conn:
            rows = conn.execute(
                _sql("rescue_producer"), {"now": time.time(), "producer": producer}
            ).fetchall()
        return self._rescued(rows)

    def prune(self, older_than: float, limit: int) -> int:
        """Delete a bounded batch of finished jobs."""
        with self._write("pruning finished jobs") as conn:
            return conn.execute(
                _sql("prune"), {"cutoff": time.time() - older_than, "limit": limit}
            ).rowcount

    def insert_cron(self, slots: Sequence[CronSlot]) -> list[Job]:
        """Claim cron slots and insert the jobs of the new ones, in one transaction."""
        with self._write("inserting cron jobs") as conn:
            return insert_cron_on(conn, slots, time.time(), self._insert_on)

    def prune_cron_slots(self, before: float) -> int:
        """Forget cron slots older than ``before`` (but each entry's latest)."""
        with self._write("pruning cron slots") as conn:
            return conn.execute(_sql("prune_cron_slots"), {"before": before}).rowcount

    def cron_history(self, names: Sequence[str]) -> dict[str, float]:
        """The latest slot inserted per cron entry."""
        with self._read("reading cron slots") as conn:
            rows = conn.execute(_sql("cron_history"), {"names": _json_list(names)}).fetchall()
        return {name: float(slot) for name, slot in rows}

    # -- liveness ----------------------------------------------------------------
    def register_producer(self, producer: ProducerInfo) -> None:
        """Record ``producer`` as alive now."""
        params = {
            "id": producer.id,
            "node": producer.node,
            "queue": producer.queue,
            "pid": producer.pid,
            "now": time.time(),
        }
        with self._write("registering a producer") as conn:
            conn.execute(_sql("register_producer"), params)

    def heartbeat(self, producers: Sequence[str]) -> None:
        """Mark ``producers`` alive now."""
        with self._write("recording a heartbeat") as conn:
            conn.execute(
                _sql("heartbeat"), {"now": time.time(), "producers": _json_list(producers)}
            )

    def unregister_producers(self, producers: Sequence[str]) -> None:
        """Forget ``producers``."""
        with self._write("unregistering producers") as conn:
            conn.execute(_sql("unregister_producers"), {"producers": _json_list(producers)})

    def acquire_leader(self, node: str, ttl: float) -> bool:
        """Take or renew the lease; True if ``node`` now leads."""
        now = time.time()
        with self._write("electing a leader") as conn:
            row = conn.execute(
                _sql("acquire_leader"), {"node": node, "now": now, "expires_at": now + ttl}
            ).fetchone()
        return row is not None and row[0] == node

    def release_leader(self, node: str) -> None:
        """Give the lease up if ``node`` holds it."""
        with self._write("releasing leadership") as conn:
            conn.execute(_sql("release_leader"), {"node": node})

    # -- inspection and control ----------------------------------------------------
    def _one(self, name: str, params: dict[str, Any], doing: str, *, write: bool) -> Job | None:
        context = self._write(doing) if write else self._read(doing)
        with context as conn:
            rows = _rows(conn.execute(_sql(name), params))
        return job_from_row(rows[0]) if rows else None

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""
        return self._one("get_job", {"id": job_id}, "reading a job", write=False)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs matching the filters, newest first."""
        params = {"state": state, "queue": queue, "worker": worker, "limit": limit}
        with self._read("listing jobs") as conn:
            return [job_from_row(row) for row in _rows(conn.execute(_sql("list_jobs"), params))]

    def retry_job(self, job_id: int) -> Job | None:
        """Make a finished or retryable job available now."""
        params = {"id": job_id, "now": time.time()}
        return self._one("retry_job", params, "retrying a job", write=True)

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished."""
        params = {"id": job_id, "now": time.time()}
        return self._one("cancel_job", params, "cancelling a job", write=True)

    def delete_job(self, job_id: int) -> bool:
        """Delete a job unless it is executing."""
        with self._write("deleting a job") as conn:
            return conn.execute(_sql("delete_job"), {"id": job_id}).rowcount > 0

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``."""
        counts: dict[str, dict[str, int]] = {}
        with self._read("counting jobs") as conn:
            for queue, state, n in conn.execute(_sql("queue_counts")).fetchall():
                counts.setdefault(queue, {})[state] = n
        return counts

    def unknown_workers(self, queue: str, workers: Sequence[str]) -> list[str]:
        """Names of available jobs' workers in ``queue`` that this node does not know."""
        params = {"queue": queue, "workers": _json_list(workers)}
        with self._read("looking for unknown workers") as conn:
            return [row[0] for row in conn.execute(_sql("unknown_workers"), params).fetchall()]

    def listen(self, wake_up: WakeUp) -> _DataVersionListener | None:
        """Wake producers when another connection commits (``PRAGMA data_version``)."""
        if self.path == ":memory:":
            return None
        return _DataVersionListener(self._open, wake_up, self.listen_interval)
