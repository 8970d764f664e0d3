"""The production engine: PostgreSQL through psycopg 3 and a connection pool.

Every query lives in ``engines/sql/postgres/<name>.sql`` and names its tables
``{schema}.errands_jobs``; the engine fills ``{schema}`` with the quoted schema
identifier once, so the same text runs on the engine's pooled connections and
on a caller's connection (transactional enqueue) whatever its ``search_path``.
Pooled connections are in autocommit mode: almost every method is one
statement, so one round trip. "Now" is always the server's ``now()``.

Wake-ups use LISTEN/NOTIFY on a channel named after the schema
(``errands.<schema>``), the payload being the queue name; inserts, staging and
retries notify from inside their own statement, so only committed work wakes
anyone, and PostgreSQL folds identical notifications of one transaction.

Example::

    engine = PostgresEngine("postgresql://app@db/app", schema="jobs")
    engine.migrate()
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from errands.config import mask_url
from errands.engines import pg_insert
from errands.engines.base import (
    CronSlot,
    ProducerInfo,
    RescueCounts,
    WakeUp,
    load_sql,
)
from errands.engines.migrations import latest_version, migrations
from errands.engines.pg_async import PgLoopPath
from errands.engines.pg_caller import (
    async_driver_connection,
    driver_connection,
    is_async_connection,
)
from errands.engines.pg_claim import PgClaim
from errands.engines.pg_connect import Row, check_storable, dict_cursor, normalize_url
from errands.engines.pg_control import PgControl
from errands.engines.pg_inspect import PgInspect
from errands.engines.pg_inspect import job_from_pg_row as _job
from errands.engines.pg_listen import PgListener, channel_name
from errands.engines.pg_pool import PgPool
from errands.errors import ConfigError, SchemaError
from errands.job import Job, JobState, NewJob

__all__ = ["PostgresEngine", "channel_name"]

_MAX_IDENTIFIER = 63  # bytes in a PostgreSQL name


def _rescued(rows: Sequence[Row]) -> RescueCounts:
    states = [row["state"] for row in rows]
    return RescueCounts(
        available=states.count(JobState.AVAILABLE.value),
        discarded=states.count(JobState.DISCARDED.value),
    )


class PostgresEngine(PgClaim, PgControl, PgInspect):
    """Jobs in PostgreSQL tables in ``schema``. Thread-safe; the pool opens on first use."""

    dialect = "postgres"
    default_poll_interval = 1.0

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        notify: bool = True,
        connect_timeout: float = 5.0,
        pool_timeout: float = 10.0,
        synchronous_acks: bool = False,
    ) -> None:
        if not isinstance(schema, str) or not schema or len(schema.encode()) > _MAX_IDENTIFIER:
            raise ConfigError(f"schema must be a name of 1-63 bytes, got {schema!r}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigError(
                f"pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1; "
                f"got min_size={min_size!r}, max_size={max_size!r}"
            )
        self.url = normalize_url(url)
        self.schema = schema
        self.notify = notify
        #: Commit claims and outcomes synchronously (see pg_claim: slower, never re-runs
        #: a job because the database crashed right after recording it).
        self.synchronous_acks = synchronous_acks
        self.channel = channel_name(schema)
        self._pool = PgPool(
            self.url,
            label=f"PostgreSQL {mask_url(self.url)!r} (schema {schema!r})",
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        self._queries: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._listeners: list[PgListener] = []

    def __repr__(self) -> str:
        return f"PostgresEngine({mask_url(self.url)!r}, schema={self.schema!r})"

    # -- queries and connections ---------------------------------------------
    def _q(self, name: str) -> bytes:
        """The text of query ``name`` with ``{schema}`` filled in, as bytes."""
        query = self._queries.get(name)
        if query is None:
            text = load_sql(self.dialect, name)
            composed = sql.SQL(text).format(schema=sql.Identifier(self.schema))
            query = self._queries[name] = composed.as_bytes(None)
        return query

    @property
    def _channel(self) -> str | None:
        return self.channel if self.notify else None

    def _all(self, name: str, params: Mapping[str, Any], doing: str) -> list[Row]:
        with self._pool.connection(doing) as conn, dict_cursor(conn) as cur:
            cur.execute(self._q(name), params)
            return cur.fetchall() if cur.description is not None else []

    def _count(self, name: str, params: Mapping[str, Any], doing: str) -> int:
        with self._pool.connection(doing) as conn, dict_cursor(conn) as cur:
            cur.execute(self._q(name), params)
            return max(cur.rowcount, 0)

    def _one(self, name: str, params: Mapping[str, Any], doing: str) -> Job | None:
        rows = self._all(name, params, doing)
        return _job(rows[0]) if rows else None

    def close(self) -> None:
        """Stop listeners and close the pool; safe to call twice."""
        with self._lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.stop()
        self._pool.close()

    # -- schema ----------------------------------------------------------------
    def _stored_version(self, cur: psycopg.Cursor[Row]) -> int:
        cur.execute(self._q("schema_table_exists"), {"schema": self.schema})
        row = cur.fetchone()
        if row is None or not row["present"]:
            return 0
        cur.execute(self._q("stored_version"))
        row = cur.fetchone()
        return 0 if row is None else int(row["version"])

    def migrate(self) -> int:
        """Create the schema and apply every migration above the stored version.

        One transaction under an advisory lock, so concurrent migrations wait
        for each other and the second one finds nothing left to do.
        """
        with (
            self._pool.connection("migrating") as conn,
            conn.transaction(),
            dict_cursor(conn) as cur,
        ):
            cur.execute(self._q("migrate_lock"), {"schema": self.schema})
            cur.execute(self._q("schema_exists"), {"schema": self.schema})
            row = cur.fetchone()
            if row is None or not row["present"]:
                cur.execute(self._q("create_schema"))
            cur.execute(self._q("create_schema_table"))
            current = self._stored_version(cur)
            for version, name, text in migrations(self.dialect):
                if version > current:
                    cur.execute(self._q("migration_search_path"))
                    cur.execute(text.encode())
                    cur.execute(self._q("record_migration"), {"version": version, "name": name})
                    current = version
            return current

    def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless every migration is applied."""
        with self._pool.connection("reading the schema version") as conn, dict_cursor(conn) as cur:
            stored = self._stored_version(cur)
        expected = latest_version(self.dialect)
        if stored < expected:
            raise SchemaError(
                f"PostgreSQL {mask_url(self.url)!r} schema {self.schema!r} has errands schema "
                f"version {stored}, this code needs {expected}: run `errands migrate` "
                "against this database"
            )

    # -- jobs ------------------------------------------------------------------
    def _insert_params(self, jobs: Sequence[NewJob]) -> dict[str, Any]:
        return {
            "queue": [job.queue for job in jobs],
            "worker": [job.worker for job in jobs],
            "args": [job.args_json.decode() for job in jobs],
            "meta": [job.meta_json.decode() for job in jobs],
            "tags": [job.tags_json.decode() for job in jobs],
            "priority": [job.priority for job in jobs],
            "max_attempts": [job.max_attempts for job in jobs],
            "timeout": [job.timeout for job in jobs],
            "scheduled_at": [job.scheduled_at for job in jobs],
            "channel": self._channel,
        }

    def insert(self, jobs: Sequence[NewJob], conn: Any = None) -> list[Job]:
        """Insert in input order: one round trip for a few jobs, a COPY for many.

        With ``conn`` (psycopg ``Connection``, SQLAlchemy ``Connection`` or
        ``Session`` on ``postgresql+psycopg://``, or a Django connection) the
        jobs join the caller's open transaction, which is never committed here:
        they are invisible until the caller commits and gone if it rolls back.
        """
        if not jobs:
            return []
        for job in jobs:  # all of them before any statement: nothing half-inserted
            check_storable(job)
        if conn is None:
            with self._pool.connection("inserting jobs") as own:
                return pg_insert.insert_own(self, own, jobs)
        raw = driver_connection(conn)
        try:
            return pg_insert.insert_on(self, raw, jobs)
        except psycopg.Error as exc:
            raise self._pool.failed(exc, "inserting jobs on the caller's connection") from exc

    async def ainsert(self, jobs: Sequence[NewJob], conn: Any) -> list[Job]:
        """Insert inside the transaction of the caller's async ``conn``, awaited on its loop.

        ``conn``: a psycopg ``AsyncConnection``, or a SQLAlchemy ``AsyncConnection``
        or ``AsyncSession`` on ``postgresql+psycopg://``; a sync connection runs
        :meth:`insert` right here. The same statements as :meth:`insert`.
        """
        if not is_async_connection(conn):
            return self.insert(jobs, conn)
        if not jobs:
            return []
        for job in jobs:
            check_storable(job)
        raw = await async_driver_connection(conn)
        try:
            return await pg_insert.ainsert_on(self, raw, jobs)
        except psycopg.Error as exc:
            raise self._pool.failed(exc, "inserting jobs on the caller's connection") from exc

    def stage(self, limit: int) -> list[str]:
        """Make due jobs available and notify their queues; return the queues touched."""
        rows = self._all("stage", {"limit": limit, "channel": self._channel}, "staging due jobs")
        return sorted({row["queue"] for row in rows})

    def rescue(self, rescue_after: float) -> RescueCounts:
        """Rescue jobs of silent producers, then forget long-dead producers."""
        with (
            self._pool.connection("rescuing orphaned jobs") as conn,
            conn.transaction(),
            dict_cursor(conn) as cur,
        ):
            cur.execute(self._q("rescue"), {"rescue_after": float(rescue_after)})
            rows = cur.fetchall()
            cur.execute(self._q("delete_dead_producers"), {"forget_after": 10.0 * rescue_after})
        return _rescued(rows)

    def rescue_producer(self, producer: str) -> RescueCounts:
        """Return a stopping producer's unfinished jobs now."""
        doing = "returning a stopping producer's jobs"
        return _rescued(self._all("rescue_producer", {"producer": producer}, doing))

    def prune(self, older_than: float, limit: int) -> int:
        """Delete a bounded batch of finished jobs."""
        params = {"older_than": float(older_than), "limit": limit}
        return self._count("prune", params, "pruning finished jobs")

    def insert_cron(self, slots: Sequence[CronSlot]) -> list[Job]:
        """Claim cron slots and insert the jobs of the new ones, in one transaction."""
        return pg_insert.insert_cron(self, slots) if slots else []

    def prune_cron_slots(self, before: float) -> int:
        """Forget cron slots older than ``before`` (but each entry's latest)."""
        return self._count("prune_cron_slots", {"before": before}, "pruning cron slots")

    def cron_history(self, names: Sequence[str]) -> dict[str, float]:
        """The latest slot inserted per cron entry."""
        rows = self._all("cron_history", {"names": list(names)}, "reading cron slots")
        return {row["name"]: float(row["slot"]) for row in rows}

    # -- liveness ----------------------------------------------------------------
    def register_producer(self, producer: ProducerInfo) -> None:
        """Record ``producer`` as alive now."""
        params = {
            "id": producer.id,
            "node": producer.node,
            "queue": producer.queue,
            "pid": producer.pid,
        }
        self._count("register_producer", params, "registering a producer")

    def heartbeat(self, producers: Sequence[str]) -> None:
        """Mark ``producers`` alive now."""
        if producers:
            self._count("heartbeat", {"producers": list(producers)}, "recording a heartbeat")

    def unregister_producers(self, producers: Sequence[str]) -> None:
        """Forget ``producers``."""
        if producers:
            params = {"producers": list(producers)}
            self._count("unregister_producers", params, "unregistering producers")

    def acquire_leader(self, node: str, ttl: float) -> bool:
        """Take or renew the lease; True if ``node`` now leads."""
        params = {"node": node, "ttl": float(ttl)}
        rows = self._all("acquire_leader", params, "electing a leader")
        return bool(rows) and rows[0]["node"] == node

    def release_leader(self, node: str) -> None:
        """Give the lease up if ``node`` holds it."""
        self._count("release_leader", {"node": node}, "releasing leadership")

    def loop_path(self) -> PgLoopPath | None:
        """Claims and acks for the running event loop without a thread hop, if it can have them.

        None on Windows' default ``ProactorEventLoop``, which psycopg's async
        connections cannot use: the node then claims through its threads.
        """
        if sys.platform == "win32" and isinstance(
            asyncio.get_running_loop(), getattr(asyncio, "ProactorEventLoop", ())
        ):
            return None
        return PgLoopPath(self)

    def listen(self, wake_up: WakeUp) -> PgListener:
        """LISTEN on this schema's channel in a daemon thread; ``wake_up(queue)`` per NOTIFY."""
        listen_sql = sql.SQL(load_sql(self.dialect, "listen"))
        query = listen_sql.format(channel=sql.Identifier(self.channel)).as_bytes(None)
        listener = PgListener(
            self.url,
            self.channel,
            query,
            wake_up,
            connect_kwargs=self._pool.kwargs(application_name=f"errands-listen:{self.schema}"[:63]),
        )
        with self._lock:
            self._listeners.append(listener)
        return listener
