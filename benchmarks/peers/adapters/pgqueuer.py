"""pgqueuer on PostgreSQL, database ``peers_pgqueuer``, with its asyncpg driver.

Documented API: ``Queries(AsyncpgDriver(conn))``, ``Queries.install()``
(default ``durable`` tables), ``Queries.enqueue`` with lists (bulk) or scalars
(single); the worker is a ``PgQueuer`` factory with an ``async def`` entrypoint
run by ``pgqueuer.run`` under uvloop, as ``pgq run`` does. Concurrency 10 =
``max_concurrent_tasks=10`` (pgqueuer's hard cap on a worker's picked jobs),
which requires ``batch_size <= 5``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

from benchmarks.peers.adapters.base import (
    Adapter,
    AsyncClient,
    recreate_pg_database,
)

__all__ = ["PgQueuer"]

DATABASE = "peers_pgqueuer"
ENTRYPOINT = "noop"


class PgQueuer(AsyncClient, Adapter):
    """pgqueuer on PostgreSQL (asyncpg)."""

    name = "pgqueuer"
    library = "pgqueuer"
    storage = "postgres"
    style = "async"
    baseline = "errands-pg-async"
    done_method = "the pgqueuer table is empty (a finished job moves to pgqueuer_log)"
    worker_method = "pgqueuer.run(max_concurrent_tasks=10, batch_size=5) under uvloop, as `pgq run`"
    database = DATABASE

    _conn: Any = None
    _queries: Queries | None = None

    def dsn(self) -> str:
        return self.settings.pg_database(DATABASE)

    async def _client(self) -> Queries:
        if self._queries is None:
            self._conn = await asyncpg.connect(self.dsn())
            self._queries = Queries(AsyncpgDriver(self._conn))
        return self._queries

    def reset(self) -> None:
        self.teardown()
        recreate_pg_database(self.settings.pg_url, DATABASE)

        async def setup() -> None:
            queries = await self._client()
            await queries.install()

        self.run(setup())

    def warm_up(self) -> None:
        async def one() -> None:
            await (await self._client()).enqueue(ENTRYPOINT, b"-1")

        self.run(one())

    def bulk(self, n: int) -> None:
        async def many() -> None:
            queries = await self._client()
            await queries.enqueue([ENTRYPOINT] * n, [str(i).encode() for i in range(n)], [0] * n)

        self.run(many())

    def single(self, n: int) -> None:
        async def single() -> None:
            queries = await self._client()
            for i in range(n):
                await queries.enqueue(ENTRYPOINT, str(i).encode())

        self.run(single())

    def done(self, n: int) -> bool:
        async def left() -> bool:
            await self._client()
            return bool(await self._conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)"))

        return not self.run(left())

    def teardown(self) -> None:
        if self._conn is not None:
            self.run(self._conn.close())
        self._conn = None
        self._queries = None
        self.close_loop()

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        try:
            from uvloop import run as loop_run
        except ImportError:  # pragma: no cover - what `pgq run` falls back to
            from asyncio import run as loop_run

        dsn = self.dsn()

        @asynccontextmanager
        async def factory() -> AsyncIterator[pgqueuer.PgQueuer]:
            conn = await asyncpg.connect(dsn)
            pgq = pgqueuer.PgQueuer(AsyncpgDriver(conn))

            @pgq.entrypoint(ENTRYPOINT)
            async def noop(job: Job) -> None:
                return None

            try:
                yield pgq
            finally:
                await conn.close()

        batch = max(1, concurrency // 2)
        return lambda: loop_run(
            pgqueuer.run(factory, batch_size=batch, max_concurrent_tasks=concurrency)
        )
