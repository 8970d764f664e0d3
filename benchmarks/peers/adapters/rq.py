"""rq on Redis (db 12; db 13 for the SimpleWorker row), with rq's defaults.

Documented API: ``Queue.enqueue_many([Queue.prepare_data(...), ...])`` (bulk,
one Redis pipeline) and ``Queue.enqueue(fn, i)`` (single). rq runs one job at a
time per worker process, so concurrency 10 is rq's ``WorkerPool`` with 10
workers (what ``rq worker-pool -n 10`` runs), each with rq's default ``Worker``
class, which forks a work horse per job. Finished jobs stay in the
``FinishedJobRegistry`` for ``result_ttl`` (500 s), which is what ``done`` counts.
rq's own notes on performance recommend ``Worker`` (or ``SpawnWorker``) in
production and say ``SimpleWorker`` (no fork) is about 6x faster on tiny jobs,
so the ``rq-simple`` row runs the same pool of ``SimpleWorker``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool

from benchmarks.peers.adapters.base import QUEUE, Adapter

__all__ = ["Rq", "RqSimple", "noop"]


def noop(i: int) -> None:
    """The no-op job (rq imports it by name in the work horse)."""
    return None


class Rq(Adapter):
    """rq on Redis."""

    name = "rq"
    library = "rq"
    storage = "redis"
    style = "sync"
    baseline = "errands-pg"
    done_method = "FinishedJobRegistry(queue).count == n"
    worker_method = "WorkerPool(num_workers=10), rq's default Worker (fork per job)"
    redis_db: ClassVar[int] = 12
    worker_class: ClassVar[type[BaseWorker]] = Worker

    _queue: Queue | None = None

    def connection(self) -> Redis:
        return Redis.from_url(self.settings.redis_db(self.redis_db))

    def check(self) -> None:
        self.connection().ping()

    def queue(self) -> Queue:
        if self._queue is None:
            self._queue = Queue(QUEUE, connection=self.connection())
        return self._queue

    def reset(self) -> None:
        self.teardown()
        self.connection().flushdb()

    def warm_up(self) -> None:
        self.queue().enqueue(noop, -1)

    def bulk(self, n: int) -> None:
        self.queue().enqueue_many([Queue.prepare_data(noop, args=(i,)) for i in range(n)])

    def single(self, n: int) -> None:
        queue = self.queue()
        for i in range(n):
            queue.enqueue(noop, i)

    def done(self, n: int) -> bool:
        return self.queue().finished_job_registry.count >= n

    def teardown(self) -> None:
        if self._queue is not None:
            self._queue.connection.close()
        self._queue = None

    def prepare_worker(self, concurrency: int) -> Callable[[], None]:
        pool = WorkerPool(
            [QUEUE],
            connection=self.connection(),
            num_workers=concurrency,
            worker_class=self.worker_class,
        )
        return lambda: pool.start(logging_level=logging.getLevelName(logging.WARNING))


class RqSimple(Rq):
    """rq on Redis with ``SimpleWorker``: jobs run in the worker process, no fork."""

    name = "rq-simple"
    worker_method = "WorkerPool(num_workers=10, worker_class=SimpleWorker) (no fork)"
    redis_db = 13
    worker_class = SimpleWorker
