"""huey on SQLite (file ``huey.db``) and on Redis (db 11), each with huey's defaults.

Documented API: ``SqliteHuey`` / ``RedisHuey``, ``@huey.task()`` on a ``def``,
``task.map(iterable)`` to enqueue many (huey has no single-round-trip bulk
insert: ``map`` enqueues one by one, and it is the fastest documented way),
``task(i)`` for one; the worker is ``huey.create_consumer(workers=10,
worker_type="thread").run()``, what ``huey_consumer -w 10 -k thread`` runs.
huey's SQLite storage keeps SQLite's default ``synchronous=FULL`` (errands
uses ``NORMAL``); huey stores no result for a job returning ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from huey import Huey, RedisHuey, SqliteHuey

from benchmarks.peers.adapters.base import Adapter, unlink_sqlite

__all__ = ["HueyRedis", "HueySqlite", "noop"]

REDIS_DB = 11


def noop(i: int) -> None:
    """The no-op job."""
    return None


class _Huey(Adapter):
    library = "huey"
    style = "sync"
    done_method = (
        "huey.pending_count() == 0 (huey keeps no record of finished no-op jobs: the "
        "last <=10 dequeued jobs may still be running, for microseconds)"
    )
    worker_method = "create_consumer(workers=10, worker_type='thread').run()"

    _huey: Huey | None = None
    _task: Any = None

    def make(self) -> Huey:
        raise NotImplementedError

    def wipe(self) -> None:
        raise NotImplementedError

    def client(self) -> Any:
        if self._huey is None:
            self._huey = self.make()
            self._task = self._huey.task()(noop)
        return self._task

    def reset(self) -> None:
        self.teardown()
        self.wipe()

    def warm_up(self) -> None:
        self.client()(-1)

    def bulk(self, n: int) -> None:
        self.client().map(range(n))

    def single(self, n: int) -> None:
        task = self.client()
        for i in range(n):
            task(i)

    def done(self, n: int) -> bool:
        self.client()
        assert self._huey is not None
        return self._huey.pending_count() == 0

    def teardown(self) -> None:
        if self._huey is not None:
            self._huey.storage.close()
        self._huey = None
        self._task = None

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        huey = self.make()
        huey.task()(noop)
        consumer = huey.create_consumer(workers=concurrency, worker_type="thread")
        return consumer.run


class HueySqlite(_Huey):
    """huey with its SQLite storage."""

    name = "huey-sqlite"
    storage = "sqlite"
    baseline = "errands-sqlite"

    def make(self) -> Huey:
        return SqliteHuey("bench", filename=str(self.settings.file("huey.db")))

    def wipe(self) -> None:
        unlink_sqlite(self.settings.file("huey.db"))


class HueyRedis(_Huey):
    """huey with its Redis storage."""

    name = "huey-redis"
    storage = "redis"
    baseline = "errands-pg"

    def check(self) -> None:
        redis.Redis.from_url(self.settings.redis_db(REDIS_DB)).ping()

    def make(self) -> Huey:
        return RedisHuey("bench", url=self.settings.redis_db(REDIS_DB))

    def wipe(self) -> None:
        redis.Redis.from_url(self.settings.redis_db(REDIS_DB)).flushdb()
