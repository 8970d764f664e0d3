"""procrastinate on PostgreSQL, database ``peers_procrastinate``.

Documented API: ``App(connector=PsycopgConnector(...))``, ``@app.task``,
``schema_manager.apply_schema_async``, ``Task.batch_defer_async`` (bulk) and
``Task.defer_async`` (single); the worker is ``App.run_worker_async(concurrency=10)``
as ``procrastinate worker --concurrency=10`` runs it (asyncio). The pool gets
``concurrency + 2`` connections (procrastinate's docs ask for a pool sized to
the worker; the psycopg default of 4 would throttle it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import procrastinate
from procrastinate.tasks import Task

from benchmarks.peers.adapters.base import (
    QUEUE,
    Adapter,
    AsyncClient,
    recreate_pg_database,
)

__all__ = ["Procrastinate", "noop"]

DATABASE = "peers_procrastinate"


async def noop(i: int) -> None:
    """The no-op job."""
    return None


def make_app(dsn: str, pool_size: int) -> tuple[procrastinate.App, Task]:
    """A procrastinate app with the no-op task registered on queue ``bench``."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=pool_size)
    )
    task = app.task(name="noop", queue=QUEUE)(noop)
    return app, task


class Procrastinate(AsyncClient, Adapter):
    """procrastinate on PostgreSQL."""

    name = "procrastinate"
    library = "procrastinate"
    storage = "postgres"
    style = "async"
    baseline = "errands-pg-async"
    done_method = "count(*) of procrastinate_jobs with status 'succeeded' == n"
    worker_method = "App.run_worker_async(concurrency=10), asyncio, as the CLI runs it"
    database = DATABASE

    _app: procrastinate.App | None = None
    _task: Task | None = None

    def dsn(self) -> str:
        return self.settings.pg_database(DATABASE)

    async def _client(self) -> tuple[procrastinate.App, Task]:
        if self._app is None or self._task is None:
            self._app, self._task = make_app(self.dsn(), 4)
            await self._app.open_async()
        return self._app, self._task

    def reset(self) -> None:
        self.teardown()
        recreate_pg_database(self.settings.pg_url, DATABASE)

        async def setup() -> None:
            app, _ = await self._client()
            await app.schema_manager.apply_schema_async()

        self.run(setup())

    def warm_up(self) -> None:
        async def one() -> None:
            _, task = await self._client()
            await task.defer_async(i=-1)

        self.run(one())

    def bulk(self, n: int) -> None:
        async def many() -> None:
            _, task = await self._client()
            await task.batch_defer_async(*[{"i": i} for i in range(n)])

        self.run(many())

    def single(self, n: int) -> None:
        async def single() -> None:
            _, task = await self._client()
            for i in range(n):
                await task.defer_async(i=i)

        self.run(single())

    def done(self, n: int) -> bool:
        async def count() -> int:
            app, _ = await self._client()
            row = await app.connector.execute_query_one_async(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            return int(row["n"])

        return self.run(count()) >= n

    def teardown(self) -> None:
        if self._app is not None:
            self.run(self._app.close_async())
        self._app = None
        self._task = None
        self.close_loop()

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        app, _ = make_app(self.dsn(), concurrency + 2)

        async def main() -> None:
            async with app.open_async():
                await app.run_worker_async(queues=[QUEUE], concurrency=concurrency)

        return lambda: asyncio.run(main())
