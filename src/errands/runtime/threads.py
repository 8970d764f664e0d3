"""A thread pool for sync job bodies whose threads never hold the process open.

The standard ``ThreadPoolExecutor`` joins its threads at interpreter exit, so
one sync job stuck in a blocking call would keep a stopped worker alive for
ever. Threads here are daemons. The pool also grows instead of queueing: how
many bodies run at once is already bounded by the queues' limits, and a body
that overran its timeout must not take a slot from the next job.

A node's database calls use one too, capped (``max_threads``): handing work
over costs a queue put, where ``ThreadPoolExecutor.submit`` costs a future, a
work item and a semaphore — 13-19 µs against 0.5 µs on the loop's thread.

Example::

    pool = JobThreads()
    future = pool.submit(print, "hi")
    database = JobThreads("errands-db", max_threads=4)
    database.run(print, "no future: the function reports its own outcome")
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from errands.runtime.affinity import unpin_this_thread

__all__ = ["JobThreads"]

log = logging.getLogger("errands.threads")

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class JobThreads(Executor):
    """Daemon threads, one more whenever none is idle (up to ``max_threads``); idle ones reused.

    ``unpinned``: each thread first takes back every core the process could
    use before ``--pin-cpus`` pinned it (:func:`~errands.runtime.affinity.unpin_this_thread`),
    so the programs and native threads a job body starts are not pinned.

    Example: ``JobThreads("errands-db", max_threads=4).run(print, "hi")``
    """

    def __init__(
        self, name: str = "errands-job", *, max_threads: int | None = None, unpinned: bool = False
    ) -> None:
        if max_threads is not None and max_threads < 1:
            raise ValueError(f"max_threads must be >= 1 or None, got {max_threads!r}")
        self._name = name
        self._max = max_threads
        self._unpinned = unpinned
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a pool thread."""
        future: Future[T] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def run(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread, with no future: ``fn`` reports its own outcome.

        The hot path for job bodies (see :mod:`errands.runtime.sync_runner`);
        an exception ``fn`` lets out is logged and dropped.
        """
        self._put((None, fn, args, {}))

    def _put(self, work: _Work) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            # _idle counts threads free for one more item; below 0 (a full capped
            # pool) it counts items waiting in the queue for a thread to free.
            if self._idle <= 0 and (self._max is None or len(self._threads) < self._max):
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._work.put(work)

    def _serve(self) -> None:
        if self._unpinned:
            unpin_this_thread()
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future is None:
                try:
                    fn(*args)
                except BaseException:
                    log.exception("a job thread's work raised")
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    @property
    def busy(self) -> int:
        """Threads running a body right now (or about to pick one up)."""
        with self._lock:
            return len(self._threads) - self._idle

    @property
    def size(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let idle threads end; never waits for a body that does not return."""
        with self._lock:
            self._shutdown = True
            count = len(self._threads)
        for _ in range(count):
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join(timeout=0.1)
