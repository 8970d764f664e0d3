"""The embedded engine: one SQLite file, one host, any number of processes.

WAL lets readers run beside the one writer; every write is a short
``BEGIN IMMEDIATE`` transaction so two processes never deadlock upgrading a
read lock; writers take turns on a file lock (``sqlite_writer``), and
``busy_timeout`` covers any other writer. Each process keeps one connection
behind a lock.
Cross-process wake-ups come from ``PRAGMA data_version``, which changes when
another connection commits: a cheap read polled every few milliseconds, after
which only the queues with jobs available are woken (``sqlite_listen``).

Example::

    engine = SQLiteEngine("jobs.db")
    engine.migrate()
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from errands.engines.base import Ack, CronSlot, RescueCounts, WakeUp
from errands.engines.migrations import latest_version, migrations
from errands.engines.rows import claimed_jobs
from errands.engines.sqlite_control import SQLiteControl
from errands.engines.sqlite_insert import insert_cron_on, insert_on, insert_unique_on
from errands.engines.sqlite_inspect import SQLiteInspect
from errands.engines.sqlite_listen import DataVersionListener, driver_connection
from errands.engines.sqlite_liveness import SQLiteLiveness
from errands.engines.sqlite_util import (
    Claimed,
    apply_acks,
    claim,
    job_from_claim,
    json_list,
    read_claimed,
    require_sqlite,
    sql,
)
from errands.engines.sqlite_writer import WriterLock
from errands.errors import DatabaseError, SchemaError
from errands.job import Job, JobState, NewJob
from errands.limits import LimitedClaim, QueueLimits

__all__ = ["SQLiteEngine"]


class SQLiteEngine(SQLiteControl, SQLiteInspect, SQLiteLiveness):
    """Jobs in a SQLite file. Thread-safe; one writer connection per process."""

    dialect = "sqlite"
    #: How many pending acks a producer hands to its next claim (see :meth:`ack_fetch`):
    #: all of them, since the one writer would otherwise take them in turn anyway.
    piggyback_max: int | None = None
    default_poll_interval = 0.5

    def __init__(
        self,
        path: str,
        *,
        mode: str = "rwc",
        busy_timeout: float = 10.0,
        listen_interval: float = 0.005,
        notify: bool = True,
    ):
        require_sqlite()
        self.path = path
        self.mode = mode
        self.notify = notify
        self.busy_timeout = busy_timeout
        self.listen_interval = listen_interval
        self._lock = threading.RLock()
        self._backlogged: set[str] = set()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._writer = WriterLock(path, timeout=busy_timeout)

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
            try:
                self._writer.acquire()
            except sqlite3.Error as exc:  # another writer held it past busy_timeout
                raise self._error(exc, doing) from None
            try:
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
            finally:
                self._writer.release()

    def close(self) -> None:
        """Close this process's connection; safe to call twice."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._writer.close()

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
        return insert_on(conn, jobs, now)

    def insert(self, jobs: Sequence[NewJob], conn: Any = None) -> list[Job]:
        """Insert in one transaction, or inside the caller's ``sqlite3.Connection`` transaction."""
        if not jobs:
            return []
        if conn is not None:
            conn = driver_connection(conn)
            try:
                return self._insert_on(conn, jobs)
            except sqlite3.Error as exc:
                raise self._error(exc, "inserting jobs on the caller's connection") from None
        with self._write("inserting jobs") as own:
            return self._insert_on(own, jobs)

    async def ainsert(self, jobs: Sequence[NewJob], conn: Any) -> list[Job]:
        """:meth:`insert` on the caller's ``sqlite3.Connection``, on the calling thread.

        sqlite3 connections refuse other threads, and their statements do not
        wait on the network: there is nothing to await.
        """
        return self.insert(jobs, conn)

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
        params = self._claim_params(queue, limit, producer, workers)
        with self._lock:
            # After a full claim more jobs are likely waiting: skip the probe.
            if queue not in self._backlogged:
                with self._read("looking for jobs") as conn:
                    if conn.execute(sql("has_available"), params).fetchone() is None:
                        return [] if limits is None else LimitedClaim()
            if limits is not None:
                return self._fetch_limited(params, limits)
            with self._write("claiming jobs") as conn:
                claimed = claim(conn, sql("fetch"), params)
            if len(claimed) == limit:
                self._backlogged.add(queue)
            else:
                self._backlogged.discard(queue)
            return self._take(claimed, producer)

    def _claim_params(
        self, queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> dict[str, Any]:
        return {
            "queue": queue,
            "limit": limit,
            "producer": producer,
            "workers": json_list(workers),
            "now": time.time(),
        }

    def _take(self, claimed: Sequence[Claimed], producer: str) -> list[Job]:
        """The jobs a committed claim took, read outside the write lock (``claimed_jobs.sql``).

        A row that cannot run is discarded (see ``claimed_jobs``). If the read
        fails, the claim is handed back (``release.sql``) before the error is
        raised, so its jobs do not wait in ``executing`` for this producer to stop.
        """
        if not claimed:
            return []
        try:
            with self._read("reading claimed jobs") as conn:
                rows = read_claimed(conn, claimed, producer)
        except DatabaseError:
            self._hand_back(claimed, producer)
            raise
        jobs, rejects = claimed_jobs(rows, producer, job_from_claim)
        if rejects:
            self.ack(rejects)
        return jobs

    def _hand_back(self, claimed: Sequence[Claimed], producer: str) -> int:
        params = [
            {"id": job_id, "attempt": attempt, "producer": producer} for job_id, attempt in claimed
        ]
        with self._write("handing back claimed jobs") as conn:
            return conn.executemany(sql("release"), params).rowcount

    def ack(self, acks: Sequence[Ack]) -> int:
        """Apply outcomes in one transaction; stale acks match no row."""
        if not acks:
            return 0
        with self._write("recording job outcomes") as conn:
            return apply_acks(conn, acks)

    def release(self, jobs: Sequence[Job], producer: str) -> int:
        """Make claimed jobs that never started available again (see :class:`Engine`)."""
        if not jobs:
            return 0
        return self._hand_back([(job.id, job.attempt) for job in jobs], producer)

    def ack_fetch(
        self, acks: Sequence[Ack], queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> tuple[int, list[Job], list[Ack]]:
        """Apply ``acks`` and claim up to ``limit`` jobs in ONE write transaction.

        SQLite has one writer: a claim and a batch of acks in separate
        transactions wait for each other, so a producer hands its pending
        acks to its next claim. Returns (acks applied, jobs claimed, acks to
        retry): the last is always empty here, since the write lock covers every row.
        """
        params = self._claim_params(queue, limit, producer, workers)
        with self._write("recording outcomes and claiming jobs") as conn:
            applied = apply_acks(conn, acks) if acks else 0
            claimed = claim(conn, sql("fetch"), params)
        return applied, self._take(claimed, producer), []

    def stage(self, limit: int) -> list[str]:
        """Make due jobs available; return the distinct queues touched."""
        with self._write("staging due jobs") as conn:
            rows = conn.execute(sql("stage"), {"now": time.time(), "limit": limit}).fetchall()
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
                sql("rescue"), {"now": now, "cutoff": now - rescue_after}
            ).fetchall()
            conn.execute(sql("delete_dead_producers"), {"cutoff": now - 10 * rescue_after})
        return self._rescued(rows)

    def rescue_producer(self, producer: str) -> RescueCounts:
        """Return a stopping producer's unfinished jobs now."""
        with self._write("returning a stopping producer's jobs") as conn:
            rows = conn.execute(
                sql("rescue_producer"), {"now": time.time(), "producer": producer}
            ).fetchall()
        return self._rescued(rows)

    def prune(self, older_than: float, limit: int) -> int:
        """Delete a bounded batch of finished jobs."""
        with self._write("pruning finished jobs") as conn:
            return conn.execute(
                sql("prune"), {"cutoff": time.time() - older_than, "limit": limit}
            ).rowcount

    def insert_cron(self, slots: Sequence[CronSlot]) -> list[Job]:
        """Claim cron slots and insert the jobs of the new ones, in one transaction."""
        with self._write("inserting cron jobs") as conn:
            return insert_cron_on(conn, slots, time.time(), self._insert_on)

    def prune_cron_slots(self, before: float) -> int:
        """Forget cron slots older than ``before`` (but each entry's latest)."""
        with self._write("pruning cron slots") as conn:
            return conn.execute(sql("prune_cron_slots"), {"before": before}).rowcount

    def cron_history(self, names: Sequence[str]) -> dict[str, float]:
        """The latest slot inserted per cron entry."""
        with self._read("reading cron slots") as conn:
            rows = conn.execute(sql("cron_history"), {"names": json_list(names)}).fetchall()
        return {name: float(slot) for name, slot in rows}

    def listen(self, wake_up: WakeUp) -> DataVersionListener | None:
        """Wake the producers of queues with jobs available when another connection commits."""
        if self.path == ":memory:" or not self.notify:
            return None
        return DataVersionListener(self._open, wake_up, self.listen_interval)
