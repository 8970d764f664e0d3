"""One producer per queue: claim jobs for the free slots, run them.

At most ``limit`` jobs run at once, however many wait. A busy producer of
brief jobs (see ``ClaimAhead._ahead``) also claims a few milliseconds of work
ahead, so the next jobs are in memory when slots free instead of a round trip
away, and claims come in large batches. Those of ``def`` workers wait on the
sync runner's standby, where a thread that finished a body starts the next
itself (see :mod:`errands.runtime.sync_runner`); jobs it claimed but did not start go
back to the queue when it pauses or stops, or when they wait longer than
``HOLD``. A producer wakes on a local insert, a
notification from another process, a slot freed by a finished job, or its
poll interval, whichever comes first.

Example::

    producer = Producer(node, QueueConfig("mail", limit=10))
    await producer.start(); ...; await producer.stop(grace=15)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from errands.config import QueueConfig
from errands.engines.base import Ack, ProducerInfo
from errands.job import Job
from errands.limits import LimitedClaim
from errands.runtime.claim_ahead import ClaimAhead
from errands.runtime.executor import execute
from errands.runtime.process_pool import ProcessPool, pool_for
from errands.runtime.sync_runner import SyncRunner
from errands.runtime.unknown_workers import UnknownWorkers
from errands.worker import Worker

if TYPE_CHECKING:
    from errands.runtime.node import Node

__all__ = ["Producer"]

log = logging.getLogger("errands.producer")

#: ``engine.ack_fetch``: pending outcomes ride along with the next claim.
AckFetch = Callable[[Sequence[Ack], str, int, str, Sequence[str]], tuple[int, list[Job], list[Ack]]]


class Producer(ClaimAhead):
    """Claims and runs the jobs of one queue within its local limit."""

    def __init__(self, node: Node, config: QueueConfig) -> None:
        self.node = node
        self.queue = config.name
        self._limit = config.limit
        self._paused = config.paused
        self._processes = config.executor == "process"
        #: Global/rate limits the claim enforces across nodes (None: the plain claim).
        self.limits = config.limits
        #: While the limits are reached, count again only at this time (or a local slot frees).
        self._blocked_until = 0.0
        self.id = f"{node.name}/{config.name}/{uuid.uuid4().hex[:8]}"
        #: Jobs started and not yet finished, by id.
        self.running: dict[int, Job] = {}
        #: Jobs claimed ahead of free slots, not started yet, in claim order.
        self._ready: list[Job] = []
        #: Loop time the jobs in _ready last moved (claimed into an empty list, or
        #: some started in freed slots), and the timer that wakes the loop HOLD s
        #: later (slow jobs free no slot to wake it).
        self._ready_at = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None
        #: The tasks of running jobs that have one (async bodies, process executor).
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Outcomes of those tasks not yet recorded: recorded together once per
        #: turn of the loop (_record_finished), one start of waiting jobs for all.
        self._finished: list[tuple[Job, Ack]] = []
        self._sync = SyncRunner(
            node.threads, node.runaways, self._finish_batch, self._started_by_threads
        )
        self._idle = asyncio.Event()
        self._idle.set()
        #: By name: the worker of claimed jobs, and whether its body is async (runs
        #: on the loop) or not (on a pool thread, and may wait on standby).
        self._workers: dict[str, tuple[type[Worker], bool]] = {}
        #: Jobs claimed, and claims that returned any, since start (claim sizes: fetched / claims).
        self.fetched = 0
        self.claims = 0
        self._wake = asyncio.Event()
        self._poll_timer: asyncio.TimerHandle | None = None
        #: When a claim deferred by _should_gather happens (0: none is waiting).
        self._claim_at = 0.0
        #: Loop time each running job was dispatched, and a moving average of how
        #: long jobs take from dispatch to outcome (decides whether to gather and
        #: to claim ahead). It starts slow: about 50 quick jobs prove a queue quick
        #: (and about 40 of 10 ms prove it brief).
        self._dispatched: dict[int, float] = {}
        self._job_time = 1.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._unknown = UnknownWorkers(config.name)

    @property
    def paused(self) -> bool:
        """True while the queue is paused: nothing starts, jobs claimed ahead go back."""
        return self._paused

    @paused.setter
    def paused(self, paused: bool) -> None:
        self._paused = paused
        if paused:
            self._recall()

    @property
    def limit(self) -> int:
        """How many jobs of this queue may run at once on this node."""
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        self._limit = limit
        # Threads trade a finished job for a standby one: a lower limit needs the loop.
        self._recall()

    def _recall(self) -> None:
        """Take the standby jobs back to the front of _ready (threads start no more of them)."""
        recalled = self._sync.recall()
        if recalled:
            self._ready[:0] = recalled

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        """Register in the producers table and start fetching."""
        if self._task is not None:
            return
        info = ProducerInfo(id=self.id, node=self.node.name, queue=self.queue, pid=os.getpid())
        await self.node.call_db(self.node.engine.register_producer, info)
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"errands-producer-{self.queue}")
        self._tick()

    def _tick(self) -> None:
        """Wake the loop now and again every poll interval (the backstop for lost wake-ups)."""
        self._wake.set()
        if not self._stopping:
            loop = asyncio.get_running_loop()
            self._poll_timer = loop.call_later(self.node.poll_interval, self._tick)

    async def _loop(self) -> None:
        backoff = 0.1
        poll = self.node.poll_interval
        while not self._stopping:
            # The poll timer (_tick) sets the event too: no wait_for, whose task and
            # timer per wake-up cost more than a claim on a busy queue.
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            if self._ready or self._sync.standby:
                await self._hand_back_if_stuck()
            if self.paused or not self._should_claim() or self._blocked_until > time.monotonic():
                continue
            if self._should_gather():
                continue
            self._claim_at = 0.0
            try:
                jobs = await self._claim()
                backoff = 0.1
            except Exception as exc:
                log.warning(
                    "queue %s: fetching jobs failed, retrying in %.1fs: %s",
                    self.queue,
                    backoff,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
                continue
            if isinstance(jobs, LimitedClaim) and jobs.blocked:
                # Jobs wait but the queue's global limits are reached: count again at
                # the next poll or when one of ours finishes, not at every wake-up.
                self._blocked_until = time.monotonic() + poll
            if jobs:
                if not self._ready and not self._sync.standby:
                    self._ready_at = asyncio.get_running_loop().time()
                self._ready.extend(jobs)
                self._start_ready()
                self._arm_hold()
            self.fetched += len(jobs)
            self.claims += 1 if jobs else 0
            if not jobs:
                await self._unknown.check(self.node)

    async def _claim(self) -> list[Job] | LimitedClaim:
        node = self.node
        engine = node.engine
        if self.limits is None and node.loop_path is not None:
            return await node.loop_path.fetch(self.queue, self.demand, self.id, node.worker_names)
        ack_fetch: AckFetch | None = getattr(engine, "ack_fetch", None)
        if self.limits is None and ack_fetch is not None:
            # Pending acks ride along with the claim, up to the engine's piggyback_max:
            # on SQLite they would queue for the one writer anyway (PostgreSQL: see
            # pg_claim.PgClaim.piggyback_max).
            # Long jobs finish a few at a time: their acks wait for no claim then.
            quick = self._is_quick()
            acks = node.completer.take(getattr(engine, "piggyback_max", None)) if quick else []
            try:
                applied, jobs, retry = await node.call_db(
                    ack_fetch, acks, self.queue, self.demand, self.id, node.worker_names
                )
            except BaseException:
                node.completer.settle(acks, None)
                raise
            node.completer.settle(acks, applied, retry)
            return jobs
        claimed: list[Job] | LimitedClaim = await node.call_db(
            engine.fetch, self.queue, self.demand, self.id, node.worker_names, self.limits
        )
        return claimed

    def _start_ready(self) -> None:
        """Start waiting jobs in the free slots (unless paused: those go back to the queue).

        Standby jobs first (they were claimed first); the sync jobs still
        waiting then go on standby, for threads to start as bodies finish.
        """
        # On the path of every finished async job: attributes, not properties.
        if self._paused:
            return
        sync = self._sync
        standby = sync.standby
        free = self._limit - len(self.running)
        if free > 0 and (self._ready or standby):
            starting = sync.recall(free) if standby else []
            if len(starting) < free:
                more = free - len(starting)
                starting += self._ready[:more]
                self._ready = self._ready[more:]
            if starting:
                if self._ready or sync.standby:
                    self._ready_at = asyncio.get_running_loop().time()
                self._dispatch(starting)
        # The process executor runs its jobs: no pool thread may start one.
        if self._ready and not self._stopping and not self._processes:
            self._offer_standby()

    def _offer_standby(self) -> None:
        """Put the ``def`` jobs at the front of _ready on the sync runner's standby."""
        workers = self._workers
        offer: list[tuple[Job, type[Worker]]] = []
        for job in self._ready:
            worker_cls, is_async = workers.get(job.worker) or self._resolve(job.worker)
            if is_async:
                break  # the loop starts it; those behind it wait their turn
            offer.append((job, worker_cls))
        if offer:
            self._ready = self._ready[len(offer) :]
            self._sync.offer(offer, self.id)

    def _resolve(self, name: str) -> tuple[type[Worker], bool]:
        """The worker of claimed jobs named ``name``, and whether its body is async."""
        worker_cls = self.node.registry.get(name)
        assert worker_cls is not None, "fetch returns registered workers only"
        entry = self._workers[name] = (worker_cls, worker_cls.is_async())
        return entry

    def _started_by_threads(self, started: list[tuple[Job, float]]) -> None:
        """Count standby jobs that threads started as running (on the loop, before outcomes)."""
        for job, at in started:
            self.running[job.id] = job
            self._dispatched[job.id] = at  # time.monotonic, the loop's clock too
        self._idle.clear()
        self._ready_at = asyncio.get_running_loop().time()  # the waiting jobs moved

    def _dispatch(self, jobs: Sequence[Job]) -> None:
        workers = self._workers
        processes = pool_for(self.node.process_pools, self.node.app, self.queue)
        self._idle.clear()
        sync: list[tuple[Job, type[Worker]]] = []
        now = asyncio.get_running_loop().time()
        for job in jobs:
            self._dispatched[job.id] = now
            worker_cls, is_async = workers.get(job.worker) or self._resolve(job.worker)
            self.running[job.id] = job
            if processes is None and not is_async:
                # The hot path: a pool thread runs and classifies it; no task, no future.
                sync.append((job, worker_cls))
            else:
                self._tasks[job.id] = asyncio.create_task(self._run(job, worker_cls, processes))
        if sync:
            self._sync.submit_many(sync, self.id)

    async def _run(self, job: Job, worker_cls: type[Worker], processes: ProcessPool | None) -> None:
        try:
            ack = await execute(job, worker_cls, self.id, processes)
        except BaseException:
            self._forget(job.id)
            raise
        self._finished.append((job, ack))
        if len(self._finished) == 1:
            asyncio.get_running_loop().call_soon(self._record_finished)

    def _record_finished(self) -> None:
        done, self._finished = self._finished, []
        if done:
            self._finish_batch(done)

    def _finish_batch(self, done: list[tuple[Job, Ack]]) -> None:
        """Record finished attempts (on the loop): one wake-up for the whole batch."""
        completer, node = self.node.completer, self.node
        now = asyncio.get_running_loop().time()
        job_time = self._job_time
        for job, ack in done:
            completer.add(ack)
            node.finished(ack)
            job_time += 0.1 * (now - self._dispatched.get(job.id, now) - job_time)
            self._forget(job.id)
        self._job_time = job_time
        self._start_ready()
        self._blocked_until = 0.0
        self._wake.set()

    def _forget(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self._dispatched.pop(job_id, None)
        self._tasks.pop(job_id, None)
        if not self.running:
            self._idle.set()

    def cancel_job(self, job_id: int) -> bool:
        """Stop a running job that was cancelled from outside; False if not told yet.

        An async body's task is cancelled at once (its outcome stays
        ``cancelled``); a sync body sees ``job.cancelled()`` turn true and its
        late ack is stale.
        """
        if job_id in self._sync.standby_ids():
            self._recall()  # to _ready, where it is taken out below
        job, task = self.running.get(job_id), self._tasks.get(job_id)
        if job is None:
            waiting = [ready for ready in self._ready if ready.id != job_id]
            if len(waiting) == len(self._ready):
                return False
            log.info("job %s was cancelled before it started; it will not run", job_id)
            self._ready = waiting
            return True
        worker_cls = self.node.registry.get(job.worker)
        if task is not None and worker_cls is not None and worker_cls.is_async():
            log.info("job %s (%s) was cancelled while running; stopping it", job_id, job.worker)
            task.cancel()
            return True
        if job._cancel_event is None:  # not started yet: tell it on the next check
            return False
        log.info(
            "job %s (%s) was cancelled while running; job.cancelled() is now true",
            job_id,
            job.worker,
        )
        job._cancel_event.set()
        return True

    async def stop(self, grace: float) -> list[int]:
        """Stop fetching, wait up to ``grace`` s for running jobs, cancel the rest.

        Returns the ids of jobs that did not finish; the node hands them back.
        """
        self._stopping = True
        self._recall()  # threads start no more standby jobs; they are handed back below
        self._wake.set()
        for timer in (self._poll_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._poll_timer = self._hold_timer = None
        if self._task is not None:
            await self._task
            self._task = None
        if self._ready:
            await self._release_ready()
        if self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        self._record_finished()  # a finished job is not handed back, whatever the timing
        unfinished = list(self.running)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        return unfinished
