"""Claiming ahead of free slots: how much, when to claim again, when to hand back.

A busy producer of brief jobs claims a few milliseconds of work (at least one
batch) beyond its free slots, so the next jobs are in memory when slots free
instead of a round trip away, and each claim is a large batch whose fixed cost
(a transaction, a round trip) many jobs share. :class:`ClaimAhead` is that
policy, mixed into :class:`~errands.runtime.producer.Producer`: the claim size
(``demand``), the low-water mark that triggers the next claim, gathering
finished slots for a moment, and handing waiting jobs back when the running
ones turn slow.

Example::

    if producer._should_claim() and not producer._should_gather():
        jobs = await engine_fetch(producer.demand)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from errands.job import Job
from errands.limits import QueueLimits

if TYPE_CHECKING:
    from errands.runtime.node import Node
    from errands.runtime.sync_runner import SyncRunner

__all__ = ["AHEAD", "AHEAD_MAX", "AHEAD_ROWS", "BRIEF", "GATHER", "HOLD", "QUICK", "ClaimAhead"]

log = logging.getLogger("errands.producer")

#: Seconds a claim may wait for more running jobs to finish (see ClaimAhead._should_gather).
GATHER = 0.001
#: Jobs that typically take less than this (seconds) are worth gathering for,
#: and claiming ahead of free slots.
QUICK = 0.005
#: Seconds a job claimed ahead may wait for a slot before it goes back to the queue.
HOLD = 0.05
#: Jobs that typically take less than this (seconds) get one batch claimed ahead
#: even when not quick: each waits about one job's time, well within HOLD.
BRIEF = HOLD / 2
#: Seconds of work a brief queue keeps claimed ahead of its free slots (see ClaimAhead._ahead).
AHEAD = 0.005
#: Most jobs claimed ahead, in batches of the queue's limit...
AHEAD_MAX = 10
#: ...and in jobs, beyond the first batch: past a few hundred rows a claim saves
#: little more per job, and a wide queue must not hoard thousands.
AHEAD_ROWS = 500


class ClaimAhead:
    """How a producer sizes and times its claims (mixed into ``Producer``)."""

    if TYPE_CHECKING:
        node: Node
        queue: str
        id: str
        limit: int
        paused: bool
        limits: QueueLimits | None
        running: dict[int, Job]
        _ready: list[Job]
        _sync: SyncRunner
        _ready_at: float
        _hold_timer: asyncio.TimerHandle | None
        _claim_at: float
        _job_time: float
        _stopping: bool
        _wake: asyncio.Event

    @property
    def demand(self) -> int:
        """How many jobs the next claim may take: free slots, plus those to claim ahead."""
        return max(0, self.limit + self._ahead() - len(self.running) - self._waiting())

    def _waiting(self) -> int:
        """Jobs claimed ahead and not started: in _ready, or on the sync runner's standby."""
        return len(self._ready) + self._sync.standby

    def _should_claim(self) -> bool:
        """True unless the jobs claimed ahead still fill more than every slot once over.

        Claiming again only then makes each claim a large batch instead of a
        trickle of one per finished job: a claim's fixed cost (a transaction,
        a round trip, on PostgreSQL about 0.7 ms of server CPU) is then shared
        by many jobs.
        """
        return self.demand > 0 and self._waiting() <= self.limit

    @property
    def held(self) -> list[int]:
        """Ids of every job this producer holds: running, or claimed ahead and waiting."""
        return [*self.running, *(job.id for job in self._ready), *self._sync.standby_ids()]

    def _ahead(self) -> int:
        """How many jobs to claim beyond the free slots: ``AHEAD`` seconds of work, or none.

        Claiming ahead lets the next claim's round trip overlap the running
        jobs, and makes claims large. It is done only where it changes nothing
        anyone can see: jobs proven brief (a moving average under ``BRIEF``),
        and only as many as the slots get through in ``AHEAD`` seconds at that
        pace — at least one batch of ``limit``, at most ``AHEAD_MAX`` batches
        and ``AHEAD_ROWS`` jobs (unless one batch is more) —
        so a job claimed ahead would have started within one job's time anyway
        (it is ``executing`` from its claim, its ``attempted_at`` that much
        early); on a queue without global or rate limits (they count executing
        jobs across nodes). A paused or stopping producer claims nothing at
        all, and hands back what it claimed ahead.

        Jobs between ``QUICK`` and ``BRIEF`` (a 10 ms computation, say) get one
        batch: without it, each slot that frees stays empty for a claim's round
        trip, and a process-executor child idles that long between jobs.
        """
        if self.limits is not None or self._job_time >= BRIEF:
            return 0
        batches = AHEAD / max(self._job_time, 1e-6)
        wanted = int(self.limit * min(max(batches, 1.0), AHEAD_MAX))
        return max(self.limit, min(wanted, AHEAD_ROWS))

    def _is_quick(self) -> bool:
        """True once the moving average of job times is under ``QUICK``."""
        return self._job_time < QUICK

    def _should_gather(self) -> bool:
        """True to wait a moment for more of our running jobs to finish before claiming.

        One claim of ten rows costs little more than a claim of one, so when
        a slot frees while others still run, the claim waits up to ``GATHER``
        seconds for them (or until every slot is free) — only while jobs
        typically finish within ``QUICK`` seconds: for longer ones no more
        slots would free meanwhile. An idle producer claims at once: this
        never delays the first job of a quiet queue; nor does one with jobs
        claimed ahead, whose next claim is a whole batch anyway.
        """
        if not self.running or self._waiting() or self._job_time >= QUICK:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._claim_at == 0.0:
            self._claim_at = now + GATHER
            loop.call_at(self._claim_at, self._wake.set)
        return now < self._claim_at

    async def _hand_back_if_stuck(self) -> None:
        """Release the jobs claimed ahead if the queue paused or they waited ``HOLD`` s."""
        if not self.paused:
            if asyncio.get_running_loop().time() - self._ready_at <= HOLD:
                self._arm_hold()
                return
            # No slot freed for HOLD s: the running jobs turned slow. Let another
            # node have the waiting ones, and claim ahead again only once brief
            # jobs have brought the moving average back down.
            self._job_time = max(self._job_time, HOLD)
        await self._release_ready()

    def _arm_hold(self) -> None:
        """Wake the loop HOLD s after the waiting jobs last moved (one timer at a time)."""
        if self._waiting() and self._hold_timer is None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._hold_timer = loop.call_at(self._ready_at + HOLD, self._hold_expired)

    def _hold_expired(self) -> None:
        self._hold_timer = None
        self._wake.set()

    async def _release_ready(self) -> None:
        """Hand the jobs claimed ahead back to the queue, their attempts not spent."""
        jobs, self._ready = [*self._sync.recall(), *self._ready], []
        if not jobs:
            return
        try:
            await self.node.call_db(self.node.engine.release, jobs, self.id)
        except Exception as exc:
            # Still executing under this producer: handed back at shutdown or rescued.
            log.warning("queue %s: could not hand back %d job(s): %s", self.queue, len(jobs), exc)
