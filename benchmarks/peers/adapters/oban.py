"""oban (oban-py) on PostgreSQL, database ``peers_oban``.

Documented API: a ``@worker`` class with ``async def process``;
``Oban.create_pool``; ``oban.schema.install``; ``Oban.enqueue_many`` (bulk) and
``Oban.enqueue`` (single); the worker is ``Oban(pool=..., queues={"bench": 10})``
started as ``oban start`` starts it (uvloop when installed, orjson for JSON).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from oban import Job, worker
from oban import Oban as _Oban
from oban.schema import install

from benchmarks.peers.adapters.base import (
    QUEUE,
    Adapter,
    AsyncClient,
    recreate_pg_database,
)

__all__ = ["Noop", "Oban"]

DATABASE = "peers_oban"


@worker(queue=QUEUE)
class Noop:
    """The no-op job."""

    async def process(self, job: Job) -> None:
        return None


class Oban(AsyncClient, Adapter):
    """oban-py on PostgreSQL."""

    name = "oban"
    library = "oban"
    storage = "postgres"
    style = "async"
    baseline = "errands-pg-async"
    done_method = "count(*) of oban_jobs in state 'completed' == n"
    worker_method = "Oban(queues={'bench': 10}) under uvloop.run, as `oban start` runs it"
    database = DATABASE

    _pool: Any = None
    _oban: _Oban | None = None

    def dsn(self) -> str:
        return self.settings.pg_database(DATABASE)

    async def _client(self) -> _Oban:
        if self._oban is None:
            self._pool = await _Oban.create_pool(self.dsn(), max_size=4)
            self._oban = _Oban(pool=self._pool)  # no queues: client mode
        return self._oban

    def reset(self) -> None:
        self.teardown()
        recreate_pg_database(self.settings.pg_url, DATABASE)

        async def setup() -> None:
            await self._client()
            await install(self._pool)

        self.run(setup())

    def warm_up(self) -> None:
        async def one() -> None:
            await (await self._client()).enqueue(Noop.new({"i": -1}))

        self.run(one())

    def bulk(self, n: int) -> None:
        async def many() -> None:
            oban = await self._client()
            await oban.enqueue_many([Noop.new({"i": i}) for i in range(n)])

        self.run(many())

    def single(self, n: int) -> None:
        async def single() -> None:
            oban = await self._client()
            for i in range(n):
                await oban.enqueue(Noop.new({"i": i}))

        self.run(single())

    def done(self, n: int) -> bool:
        async def count() -> int:
            await self._client()
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM oban_jobs WHERE state = 'completed'")
                row = await cur.fetchone()
                return int(row[0])

        return self.run(count()) >= n

    def teardown(self) -> None:
        if self._pool is not None:
            self.run(self._pool.close())
        self._pool = None
        self._oban = None
        self.close_loop()

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        import orjson
        from psycopg.types.json import set_json_dumps, set_json_loads

        try:
            from uvloop import run as loop_run
        except ImportError:  # pragma: no cover - what `oban start` falls back to
            from asyncio import run as loop_run

        set_json_dumps(orjson.dumps)  # as `oban start` does
        set_json_loads(orjson.loads)
        dsn = self.dsn()

        async def main() -> None:
            pool = await _Oban.create_pool(dsn, max_size=concurrency + 2)
            async with _Oban(pool=pool, queues={QUEUE: concurrency}):
                await asyncio.Event().wait()  # until the parent stops this process

        return lambda: loop_run(main())
