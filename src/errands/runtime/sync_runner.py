"""Run ``def`` job bodies on pool threads and hand their outcomes back in batches.

The obvious way, one ``run_in_executor`` future and one asyncio task per job,
costs a future, a task and a loop wake-up for every job — more than a no-op
body itself. Here a thread runs the body *and* classifies its outcome, appends
the :class:`~errands.engines.base.Ack` to a list, and wakes the loop only once
it finds no more bodies to take; one callback then delivers every outcome that
arrived meanwhile. Under load that is one wake-up per batch instead of per job.
Waking at the first outcome instead cost a thread switch more per batch: the
loop woke and waited for the interpreter lock while the thread still ran the
rest of the batch. An outcome never waits long behind a slow body of the same
thread: the loop collects what has arrived when it spreads the batch,
``SPREAD_AFTER`` after submitting it, and from then on each outcome wakes it.

Jobs claimed ahead of free slots can wait on *standby* (:meth:`SyncRunner.offer`):
a thread that has just finished a body starts the next standby job itself, in
the slot that body freed, instead of waking the loop and waiting for it to
dispatch one — a loop round trip per batch saved, and no more jobs running
than the limit allowed (a finished body is traded for one started). The loop
hears which jobs threads started (``on_started``) before their outcomes, and
takes standby jobs back (:meth:`SyncRunner.recall`) to start them in slots it
frees itself, or to hand them back when the queue pauses or stops.

A timeout is a timer on the loop: when it fires before the body returns, the
attempt is recorded as failed at once, ``job.cancelled()`` turns true, and the
thread is counted as a runaway until its body returns (its late outcome is
dropped). The decision "returned first" or "timed out first" is taken under
one lock, so exactly one of the two outcomes is delivered.

Example::

    runner = SyncRunner(threads, runaways, deliver=finished, on_started=started)
    runner.submit_many([(job, worker_cls)], producer_id)   # on the event loop
    runner.offer([(next_job, worker_cls)], producer_id)    # a thread starts it in a freed slot
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from errands.engines.base import Ack
from errands.job import CancelFlag, Job
from errands.runtime.executor import RunawayCounter, classify, thread_timed_out
from errands.runtime.threads import JobThreads
from errands.worker import Worker, _current_job, job_timeout

__all__ = ["SyncRunner"]

log = logging.getLogger("errands.executor")

Deliver = Callable[[list[tuple[Job, Ack]]], None]
#: Told on the loop which standby jobs threads started, and when (``time.monotonic``).
OnStarted = Callable[[list[tuple[Job, float]]], None]
#: A body to run: its context, job, worker, producer, (id, attempt) and spread time.
_Item = tuple[contextvars.Context, Job, type[Worker], str, tuple[int, int], float]

#: Seconds the bodies of a batch may wait behind a slow one before each gets a thread.
SPREAD_AFTER = 0.001


def _attempt(job: Job, worker_cls: type[Worker], producer: str) -> Ack:
    """Run one attempt in this thread and classify it (runs inside the job's context)."""
    _current_job.set(job)
    worker = worker_cls()
    try:
        result = worker.perform(job)
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt from a body fails the attempt, never the worker.
        return classify(job, worker, producer, exc=exc)
    return classify(job, worker, producer, result)


def _take_first(work: deque[_Item]) -> _Item | None:
    try:
        return work.popleft()  # atomic: threads sharing ``work`` never run one twice
    except IndexError:
        return None


class SyncRunner:
    """Runs sync bodies on ``threads``; calls ``deliver`` on the loop with finished batches.

    ``on_started`` (optional) hears, on the loop and before their outcomes,
    which standby jobs (see :meth:`offer`) threads started.
    """

    def __init__(
        self,
        threads: JobThreads,
        runaways: RunawayCounter,
        deliver: Deliver,
        on_started: OnStarted | None = None,
    ) -> None:
        self.threads = threads
        self.runaways = runaways
        self.deliver = deliver
        self.on_started = on_started
        #: Jobs a thread may start in place of one it finished (see offer).
        self._standby: deque[_Item] = deque()
        #: Standby jobs threads started since the loop last collected, with when.
        self._started: list[tuple[_Item, float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._done: list[tuple[Job, Ack]] = []
        self._wake_pending = False
        #: (id, attempt) of bodies running now -> True once their timeout fired.
        self._active: dict[tuple[int, int], bool] = {}
        #: Timeout timers, cancelled when the outcome arrives (else they hold the job).
        self._timers: dict[tuple[int, int], asyncio.TimerHandle] = {}

    def submit(self, job: Job, worker_cls: type[Worker], producer: str) -> None:
        """Start ``job`` on a pool thread (call on the event loop)."""
        self.submit_many([(job, worker_cls)], producer)

    def submit_many(self, batch: Sequence[tuple[Job, type[Worker]]], producer: str) -> None:
        """Start a claimed batch: one thread takes the bodies in turn, more if one is slow.

        Waking a thread per body costs more than a quick body itself, so the
        batch goes to one thread; if bodies are still waiting after
        ``SPREAD_AFTER`` seconds (one of them blocks), every waiting body gets
        a thread of its own. A slow body delays the others by at most that.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        work = deque(self._items(batch, producer, time.monotonic() + SPREAD_AFTER))
        with self._lock:
            for item in work:
                self._active[item[4]] = False
        items = list(work)
        try:
            self.threads.run(self._drain, work)
        except BaseException:
            with self._lock:
                for item in items:
                    self._active.pop(item[4], None)
            raise
        for item in items:
            self._arm_timeout(loop, item, 0.0)
        if len(items) > 1:
            loop.call_later(SPREAD_AFTER, self._spread, work)

    @staticmethod
    def _items(
        batch: Sequence[tuple[Job, type[Worker]]], producer: str, spread_at: float
    ) -> list[_Item]:
        items: list[_Item] = []
        for job, worker_cls in batch:
            job._cancel_event = CancelFlag()
            # Each body gets a copy of the loop's context, as an asyncio task would.
            context = contextvars.copy_context()
            items.append((context, job, worker_cls, producer, (job.id, job.attempt), spread_at))
        return items

    def _arm_timeout(self, loop: asyncio.AbstractEventLoop, item: _Item, ran: float) -> None:
        """Start the timeout timer of a body that has been running ``ran`` seconds."""
        _, job, worker_cls, producer, key, _ = item
        timeout = job_timeout(job, worker_cls)
        if timeout is not None:
            self._timers[key] = loop.call_later(
                max(0.0, timeout - ran), self._expire, job, worker_cls, producer, key, timeout
            )

    def offer(self, batch: Sequence[tuple[Job, type[Worker]]], producer: str) -> None:
        """Put claimed jobs on standby: threads start them as bodies finish (on the loop).

        Each is started by a thread that has just finished a body, in its
        slot; the loop hears of it through ``on_started``. Standby jobs a
        thread has not taken come back with :meth:`recall`.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        # spread_at 0: a standby job's outcome wakes the loop as soon as it is recorded.
        items = self._items(batch, producer, 0.0)
        with self._lock:
            self._standby.extend(items)

    def recall(self, limit: int | None = None) -> list[Job]:
        """Take back up to ``limit`` (None: all) standby jobs no thread started, oldest first."""
        with self._lock:
            count = len(self._standby) if limit is None else min(limit, len(self._standby))
            items = [self._standby.popleft() for _ in range(count)]
        return [item[1] for item in items]

    @property
    def standby(self) -> int:
        """How many jobs wait on standby."""
        return len(self._standby)

    def standby_ids(self) -> list[int]:
        """Ids of the jobs on standby, and of those threads started that the loop has not seen."""
        with self._lock:
            return [item[1].id for item in self._standby] + [
                item[1].id for item, _ in self._started
            ]

    def _spread(self, work: deque[_Item]) -> None:
        """Give every body still waiting in ``work`` a thread of its own.

        Outcomes recorded so far are delivered too: the thread that recorded
        them may be inside a slow body, and wakes the loop only after it.
        """
        self._collect()
        try:
            for _ in range(len(work)):
                self.threads.run(self._drain, work)
        except RuntimeError:  # the pool shut down: those jobs stay executing until rescued
            log.warning("%d job(s) not started: the worker is stopping", len(work))

    # -- on a pool thread --------------------------------------------------------
    def _drain(self, work: deque[_Item]) -> None:
        recorded = False
        item = _take_first(work)
        while item is not None:
            # The batch's last body: the slot it frees may start a standby job.
            freed, standby = self._work(item, chain=not work)
            recorded = recorded or freed
            if recorded and (standby is not None or time.monotonic() >= item[5]):
                # A standby body may be slow, and past the spread no collect is
                # coming: what is recorded must not wait for the next body.
                self._announce()
                recorded = False
            item = standby if standby is not None else _take_first(work)
        if recorded:
            self._announce()

    def _announce(self) -> None:
        """Wake the loop to collect the recorded outcomes, unless a wake-up is on its way."""
        with self._lock:
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._call_loop(self._collect)

    def _work(self, item: _Item, chain: bool) -> tuple[bool, _Item | None]:
        """Run one body and record its outcome; with ``chain``, take a standby job in its slot.

        Returns whether the outcome was recorded (False: its timeout recorded
        it first, and the loop has reused the slot), and the standby job this
        thread now runs. Recording and taking happen under one lock, so the
        loop collects both or neither: it never sees the slot free while a
        thread has filled it.
        """
        context, job, worker_cls, producer, key, _ = item
        try:
            ack = context.run(_attempt, job, worker_cls, producer)
        except BaseException as exc:  # classify itself failed: still record the attempt
            ack = classify(job, Worker(), producer, exc=exc)
        standby = None
        with self._lock:
            expired = self._active.pop(key, False)
            if not expired:
                self._done.append((job, ack))
                if chain and self._standby:
                    standby = self._standby.popleft()
                    self._active[standby[4]] = False
                    self._started.append((standby, time.monotonic()))
        if expired:  # its timeout already recorded the attempt; this thread is free again
            self.runaways.change(-1)
        return not expired, standby

    def _call_loop(self, callback: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under a stuck body
            loop.call_soon_threadsafe(callback)

    # -- on the event loop ---------------------------------------------------------
    def _collect(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            started, self._started = self._started, []
            self._wake_pending = False
        if started:
            loop = self._loop
            assert loop is not None, "standby jobs are offered on the loop"
            now = time.monotonic()
            for item, at in started:
                self._arm_timeout(loop, item, now - at)
            if self.on_started is not None:  # before the outcomes: some are theirs
                self.on_started([(item[1], at) for item, at in started])
        if self._timers:
            for job, _ in done:
                timer = self._timers.pop((job.id, job.attempt), None)
                if timer is not None:
                    timer.cancel()
        if done:
            self.deliver(done)

    def _expire(
        self,
        job: Job,
        worker_cls: type[Worker],
        producer: str,
        key: tuple[int, int],
        timeout: float,
    ) -> None:
        self._timers.pop(key, None)
        with self._lock:
            if self._active.get(key) is not False:
                return  # it returned first (its outcome is on its way) or already expired
            self._active[key] = True
            # Counted under the lock: the body cannot return and subtract first.
            self.runaways.change(1)
        error = thread_timed_out(job, timeout)
        self.deliver([(job, classify(job, worker_cls(), producer, exc=error))])

    @property
    def running(self) -> int:
        """Bodies running now and not yet timed out."""
        with self._lock:
            return sum(1 for expired in self._active.values() if not expired)
