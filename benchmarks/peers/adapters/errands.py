"""errands itself, as three rows: PostgreSQL sync, PostgreSQL async, SQLite sync.

Uses the errands benchmark app (``errands.bench.jobs.bench_app``: queue
``bench``, jobs ``bench.noop`` = ``def`` in a thread, ``bench.anoop`` = ``async
def`` on the loop). Sync rows use ``enqueue``/``enqueue_many``; the async row
uses ``aenqueue``/``aenqueue_many`` and the ``async def`` job, to match the
async-native peers. The worker is ``App.run`` (what ``errands worker`` runs).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg

import errands
from benchmarks.peers.adapters.base import (
    Adapter,
    AsyncClient,
    recreate_pg_database,
    unlink_sqlite,
)
from errands.bench.jobs import BENCH_QUEUE, bench_app

__all__ = [
    "ErrandsPostgres",
    "ErrandsPostgresAsync",
    "ErrandsPostgresAsyncDurable",
    "ErrandsSqlite",
]

#: How the drain's end is seen: the same kind of query as for oban and procrastinate.
COUNT = "SELECT count(*) FROM errands_jobs WHERE queue = %s AND state = 'completed'"


class _Errands(Adapter):
    library = "errands"
    worker_name: ClassVar[str] = "bench.noop"
    done_method = "count(*) of errands_jobs in state 'completed' == n"
    worker_method = "App(queues={'bench': 10}).run(); sync jobs in threads, async on the loop"

    #: Extra ``App`` options of this row.
    app_options: ClassVar[dict[str, Any]] = {}
    _app: errands.App | None = None
    _reader: Any = None

    def url(self) -> str:
        raise NotImplementedError

    def wipe(self) -> None:
        raise NotImplementedError

    def app(self) -> errands.App:
        if self._app is None:
            self._app = bench_app(self.url(), None, **self.app_options)
        return self._app

    def reset(self) -> None:
        self.teardown()
        self.wipe()
        app = bench_app(self.url(), None)
        app.migrate()
        app.close()

    def warm_up(self) -> None:
        app = self.app()
        app.enqueue(app.registry.resolve(self.worker_name), {"i": -1})

    def bulk(self, n: int) -> None:
        app = self.app()
        job = app.registry.resolve(self.worker_name)
        app.enqueue_many([app.new_job(job, {"i": i}) for i in range(n)])

    def single(self, n: int) -> None:
        app = self.app()
        job = app.registry.resolve(self.worker_name)
        for i in range(n):
            app.enqueue(job, {"i": i})

    def done(self, n: int) -> bool:
        return self.completed() >= n

    def completed(self) -> int:
        """Completed jobs in queue ``bench``, read straight from ``errands_jobs``."""
        raise NotImplementedError

    def teardown(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        app = bench_app(self.url(), None, limit=concurrency, **self.app_options)
        return lambda: app.run([BENCH_QUEUE])


class ErrandsPostgres(_Errands):
    """errands on PostgreSQL, sync API, ``def`` job in a thread."""

    name = "errands-pg"
    storage = "postgres"
    style = "sync"
    database = "peers_errands"

    def url(self) -> str:
        return self.settings.pg_database(self.database)

    def wipe(self) -> None:
        recreate_pg_database(self.settings.pg_url, self.database)

    def completed(self) -> int:
        if self._reader is None:
            self._reader = psycopg.connect(self.url(), autocommit=True)
        row = self._reader.execute(COUNT, (BENCH_QUEUE,)).fetchone()
        return int(row[0])


class ErrandsPostgresAsync(AsyncClient, ErrandsPostgres):
    """errands on PostgreSQL, ``aenqueue``/``aenqueue_many``, ``async def`` job.

    Like pgqueuer's client on its asyncpg connection, enqueues go through one
    connection the caller holds: a psycopg ``AsyncConnection`` in autocommit,
    passed as ``conn=`` (awaited on the loop, each call its own transaction).
    """

    name = "errands-pg-async"
    style = "async"
    worker_name = "bench.anoop"
    _conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self.url(), autocommit=True)
        return self._conn

    def warm_up(self) -> None:
        app = self.app()

        async def warm_up() -> None:
            job = app.registry.resolve(self.worker_name)
            await app.aenqueue(job, {"i": -1}, conn=await self._connection())

        self.run(warm_up())

    def bulk(self, n: int) -> None:
        app = self.app()
        job = app.registry.resolve(self.worker_name)

        async def bulk() -> None:
            jobs = [app.new_job(job, {"i": i}) for i in range(n)]
            await app.aenqueue_many(jobs, conn=await self._connection())

        self.run(bulk())

    def single(self, n: int) -> None:
        app = self.app()
        job = app.registry.resolve(self.worker_name)

        async def single() -> None:
            conn = await self._connection()
            for i in range(n):
                await app.aenqueue(job, {"i": i}, conn=conn)

        self.run(single())

    def teardown(self) -> None:
        if self._conn is not None:
            self.run(self._conn.close())
            self._conn = None
        super().teardown()
        self.close_loop()


class ErrandsPostgresAsyncDurable(ErrandsPostgresAsync):
    """As errands-pg-async, with ``synchronous_acks=True``: every commit waits for the WAL.

    errands commits claims and outcomes asynchronously by default (a database
    crash can then re-run the jobs of its last moment; docs/reliability.md);
    the peers commit synchronously. This row is the like-for-like one.
    """

    name = "errands-pg-async-sync-acks"
    app_options: ClassVar[dict[str, Any]] = {"synchronous_acks": True}


class ErrandsSqlite(_Errands):
    """errands on SQLite (one file), sync API, ``def`` job in a thread."""

    name = "errands-sqlite"
    storage = "sqlite"
    style = "sync"

    def url(self) -> str:
        return f"sqlite:///{self.settings.file('errands.db')}"

    def wipe(self) -> None:
        unlink_sqlite(self.settings.file("errands.db"))

    def completed(self) -> int:
        if self._reader is None:
            self._reader = sqlite3.connect(self.settings.file("errands.db"), timeout=10)
        row = self._reader.execute(COUNT.replace("%s", "?"), (BENCH_QUEUE,)).fetchone()
        return int(row[0])
