"""Run a queue's sync job bodies in child processes: CPU-bound work on every core.

A queue with ``executor="process"`` gets one :class:`ProcessPool`: as many
child processes as the queue's limit, started with the ``spawn`` method (never
``fork``: the node has threads), each running one job at a time and reused
across jobs. Async bodies of such a queue still run on the node's event loop.

Only registered workers run, and no code is pickled: a child imports the app
by its import path (``"module:attr"``) and looks the worker up by name in that
app's registry (see :mod:`errands.runtime.process_child`). The job goes to the
child, and its outcome comes back, as JSON bytes over a pipe. The child
classifies the outcome with the same
:func:`~errands.runtime.executor.classify` as the thread executor, so a
worker's ``backoff()`` runs in the child, where ``job.exception`` is the real
exception.

A timeout really stops the body: its child gets SIGTERM, then SIGKILL after
``kill_grace`` seconds, and a fresh child replaces it; the attempt fails at
once with the thread executor's ``JobTimeoutError``. A child that dies mid-job
fails its attempt with :class:`WorkerProcessDiedError`. A job cancelled from
outside while it runs (``app.cancel_job``) has its child stopped too.

Example::

    pools = await start_pools(app, app.queues.values())   # what Node.start does
    ack = await pools["cpu"].execute(job, worker_cls, producer_id)
    await close_pools(pools)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from errands.config import QueueConfig
from errands.engines.base import Ack
from errands.errors import ConfigError
from errands.job import Cancel, Job
from errands.runtime.executor import JobTimeoutError, classify
from errands.runtime.process_child import (
    ChildProcess,
    WorkerProcessDiedError,
    WorkerProcessError,
    job_request,
    read_outcome,
    resolve_import_path,
)
from errands.runtime.threads import JobThreads
from errands.worker import Worker, job_timeout

if TYPE_CHECKING:
    from errands.app import App

__all__ = [
    "ProcessPool",
    "WorkerProcessDiedError",
    "WorkerProcessError",
    "close_pools",
    "pool_for",
    "start_pools",
]

log = logging.getLogger("errands.process_pool")

#: Seconds a child gets after SIGTERM (or a polite stop) before SIGKILL.
KILL_GRACE = 1.0
#: Seconds a new child gets to import the app and say it is ready.
START_TIMEOUT = 60.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned call's error is expected, not "never retrieved"


class _CancelEvent(threading.Event):
    """``job.cancelled()`` of a job in a child: setting it also tells the pool."""

    def __init__(self, on_set: Callable[[], object]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        super().set()
        self._on_set()


class ProcessPool:
    """The child processes of one queue; each runs one job at a time.

    ``size`` children start with :meth:`start`; one that dies or is killed is
    replaced, and a job that finds none idle starts another (so a pool made
    without :meth:`start` fills up on demand).

    Example::

        pool = ProcessPool("cpu", 4, "myproject.jobs:app")
        await pool.start()
        ack = await pool.execute(job, worker_cls, producer_id)
        await pool.close()
    """

    def __init__(
        self,
        queue: str,
        size: int,
        import_path: str,
        *,
        kill_grace: float = KILL_GRACE,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.queue = queue
        self.size = size
        self.import_path = import_path
        self.kill_grace = kill_grace
        self.start_timeout = start_timeout
        #: Why no child can run here (an import path that could not be found), or None.
        self.broken: str | None = None
        self._context = multiprocessing.get_context("spawn")
        self._threads = JobThreads(name=f"errands-proc-{queue}")
        self._numbers = itertools.count(1)
        self._idle: list[ChildProcess] = []
        self._busy: set[ChildProcess] = set()
        self._starting = 0
        self._waiters = 0
        self._failures: list[str] = []
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The pids of the live children, idle and busy."""
        return sorted(c.pid for c in [*self._idle, *self._busy] if c.alive)

    # -- children ---------------------------------------------------------------------
    def _launch(self) -> ChildProcess:
        name = f"errands-{self.queue}-{next(self._numbers)}"
        return ChildProcess.launch(self._context, self.import_path, name, self.start_timeout)

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self) -> None:
        self._starting += 1
        self._track(self._start_one())

    async def _start_one(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            child = await loop.run_in_executor(self._threads, self._launch)
        except Exception as exc:
            log.error("queue %s: a worker process could not start: %s", self.queue, exc)
            self._failures.append(f"a worker process could not start: {exc}")
        else:
            if self._closed:
                self._track(child.stop(polite=True, grace=self.kill_grace))
            else:
                self._idle.append(child)
        finally:
            self._starting -= 1
            self._changed.set()

    def _retire(self, child: ChildProcess, *, replace: bool) -> None:
        """Take a busy child out of the pool and stop it in the background."""
        self._busy.discard(child)
        self._track(child.stop(polite=False, grace=self.kill_grace))
        live = len(self._idle) + len(self._busy) + self._starting
        if replace and not self._closed and live < self.size:
            self._spawn()

    async def _acquire(self) -> ChildProcess:
        if self.broken is not None:
            raise WorkerProcessError(self.broken)
        self._waiters += 1
        try:
            while True:
                self._changed.clear()
                while self._idle:
                    child = self._idle.pop()
                    if child.alive:
                        self._busy.add(child)
                        return child
                    log.warning(
                        "queue %s: idle worker process %d died (exit code %s)",
                        self.queue,
                        child.pid,
                        child.process.exitcode,
                    )
                    child.conn.close()
                if self._failures:
                    raise WorkerProcessError(self._failures.pop(0))
                if self._closed:
                    raise WorkerProcessError(f"the process pool of queue {self.queue!r} is closed")
                if self._starting < self._waiters:
                    self._spawn()
                await self._changed.wait()
        finally:
            self._waiters -= 1

    def _release(self, child: ChildProcess) -> None:
        self._busy.discard(child)
        if self._closed:
            self._track(child.stop(polite=True, grace=self.kill_grace))
        else:
            self._idle.append(child)
            self._changed.set()

    # -- the pool ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start ``size`` children; :class:`ConfigError` if they cannot load the app."""
        loop = asyncio.get_running_loop()
        launches = [loop.run_in_executor(self._threads, self._launch) for _ in range(self.size)]
        results = await asyncio.gather(*launches, return_exceptions=True)
        self._idle.extend(r for r in results if isinstance(r, ChildProcess))
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise ConfigError(
                f"queue {self.queue!r} has executor='process', but its worker process could "
                f"not load the app from import_path {self.import_path!r}: {errors[0]}. Set "
                "errands.App(..., import_path='module:attr') to a module-level errands.App "
                "that a fresh Python process can import"
            )

    async def execute(self, job: Job, worker_cls: type[Worker], producer: str) -> Ack:
        """Run one attempt of a sync job in a child; classify it like the thread executor.

        A timeout, or the job being cancelled from outside (``job.cancelled()``
        turning true), kills the child; a fresh one replaces it.
        """
        timeout = job_timeout(job, worker_cls)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        job._cancel_event = _CancelEvent(
            lambda: loop.is_closed() or loop.call_soon_threadsafe(stopped.set)
        )
        try:
            child = await self._acquire()
        except WorkerProcessError as exc:
            return classify(job, worker_cls(), producer, exc=exc)
        message = job_request(job, producer, self.import_path)
        call = asyncio.ensure_future(child.acall(message))
        call.add_done_callback(_retrieve)
        stop = asyncio.ensure_future(stopped.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {call, stop}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            call.cancel()
            self._retire(child, replace=False)  # shutdown: the job is handed back
            raise
        finally:
            stop.cancel()
        if call.done() and call.exception() is None:
            self._release(child)
            return read_outcome(call.result(), job, producer)
        error: BaseException
        if call.done():  # the pipe closed: the child died
            await child.exited(self.kill_grace)
            code = child.process.exitcode
            log.error(
                "queue %s: worker process %d died (exit code %s) running job %s",
                self.queue,
                child.pid,
                code,
                job.id,
            )
            error = WorkerProcessDiedError(
                f"worker process died (exit code {code}) while running job {job.id}"
            )
        elif stopped.is_set():
            log.info(
                "job %s (%s) was cancelled; its worker process %d is stopped",
                job.id,
                job.worker,
                child.pid,
            )
            error = Cancel("cancelled while running; its worker process was stopped")
        else:
            log.warning(
                "job %s (%s) ran past its timeout of %gs; its worker process %d is killed",
                job.id,
                job.worker,
                timeout,
                child.pid,
            )
            error = JobTimeoutError(f"job {job.id} ran past its timeout of {timeout:g}s")
        call.cancel()  # stops watching the pipe of the child about to be killed
        self._retire(child, replace=True)
        return classify(job, worker_cls(), producer, exc=error)

    async def close(self) -> None:
        """Stop every child (idle ones leave politely, busy ones are killed). Safe twice."""
        self._closed = True
        self._changed.set()
        idle, self._idle = self._idle, []
        stops = [c.stop(polite=True, grace=self.kill_grace) for c in idle]
        stops += [c.stop(polite=False, grace=self.kill_grace) for c in self._busy]
        self._busy.clear()
        await asyncio.gather(*stops)
        deadline = time.monotonic() + self.kill_grace * 2 + 5.0
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)  # a child still starting
        self._threads.shutdown(wait=False)


def _warn_unknown(app: App, pool: ProcessPool, known: Iterable[str]) -> None:
    missing = sorted({w.name for w in app.registry if not w.is_async()} - set(known))
    if missing:
        log.warning(
            "queue %s: the app imported from %r registers no worker named %s; those "
            "jobs will fail in its worker processes",
            pool.queue,
            pool.import_path,
            ", ".join(missing),
        )


async def start_pools(app: App, configs: Iterable[QueueConfig]) -> dict[str, ProcessPool]:
    """One started :class:`ProcessPool` per queue whose executor is ``"process"``.

    Example: ``pools = await start_pools(app, node.queue_configs.values())``
    """
    chosen = [config for config in configs if config.executor == "process"]
    if not chosen:
        return {}
    import_path = resolve_import_path(app, [config.name for config in chosen])
    pools = {c.name: ProcessPool(c.name, c.limit, import_path) for c in chosen}
    results = await asyncio.gather(*(p.start() for p in pools.values()), return_exceptions=True)
    for failure in results:
        if isinstance(failure, BaseException):
            await close_pools(pools)
            raise failure
    for pool in pools.values():
        _warn_unknown(app, pool, pool._idle[0].workers if pool._idle else ())
    return pools


def pool_for(pools: dict[str, ProcessPool], app: App, queue: str) -> ProcessPool | None:
    """The pool of ``queue``, or None for a thread queue.

    A process queue started while the node runs (``app.start_queue``) gets a
    pool here, on its first job; its children start as jobs need them.

    Example: ``processes = pool_for(node.process_pools, app, "cpu")``
    """
    pool = pools.get(queue)
    config = app.queues.get(queue)
    if pool is not None or config is None or config.executor != "process":
        return pool
    try:
        pool = pools[queue] = ProcessPool(queue, config.limit, resolve_import_path(app, [queue]))
    except ConfigError as exc:
        log.error("%s", exc)
        pool = pools[queue] = ProcessPool(queue, config.limit, "")
        pool.broken = str(exc)
    return pool


async def close_pools(pools: dict[str, ProcessPool]) -> None:
    """Close every pool of ``pools`` (at node stop). Example: ``await close_pools(pools)``."""
    await asyncio.gather(*(pool.close() for pool in pools.values()))
