"""Batches acks so the hot path never spends one transaction per job.

Acks are flushed in one engine call once the oldest has waited ``interval``
seconds, or as soon as ``batch_size`` are waiting. Where a claim records the
pending acks itself (SQLite's ``ack_fetch``), the wait starts again from the
oldest ack still pending, so a busy producer's claims carry every ack and the
completer adds no transaction of its own. Every ack stays fenced by ``(id, attempt,
producer)``: a batch can only lose its unflushed acks in a crash, and those
jobs are then rescued and run again (at-least-once). A failed flush keeps its
acks and tries again with backoff, so a database outage delays outcomes but
does not drop them.

Example::

    completer = Completer(node.ack)
    await completer.start()
    completer.add(ack)
    await completer.stop()   # flushes what is left
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from errands.engines.base import Ack

__all__ = ["Completer"]

log = logging.getLogger("errands.completer")

#: Applies a batch of acks, returns how many were not stale: ``Node.ack``.
ApplyAcks = Callable[[Sequence[Ack]], Awaitable[int]]


class Completer:
    """Collects acks and applies them in batches."""

    def __init__(
        self,
        apply: ApplyAcks,
        *,
        interval: float = 0.005,
        batch_size: int = 500,
    ) -> None:
        self.apply = apply
        self.interval = interval
        self.batch_size = batch_size
        self.pending: list[Ack] = []
        self.applied = 0
        #: Acks that matched no row: the job was rescued, cancelled or retried meanwhile.
        self.stale = 0
        #: Loop time the oldest pending ack arrived (meaningless while none is pending).
        self._oldest = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def add(self, ack: Ack) -> None:
        """Queue one ack; it is applied within ``interval`` seconds."""
        self.pending.append(ack)
        if len(self.pending) == 1:
            self._oldest = asyncio.get_running_loop().time()
            self._wake.set()
        elif len(self.pending) >= self.batch_size:
            self._wake.set()

    def take(self, limit: int | None = None) -> list[Ack]:
        """Hand up to ``limit`` pending acks (all: None) to a claim that records them itself."""
        if limit == 0:  # PostgreSQL's claims carry none: no copy of the pending list per claim
            return []
        if limit is None or len(self.pending) <= limit:
            taken, self.pending = self.pending, []
        else:
            taken, self.pending = self.pending[:limit], self.pending[limit:]
        return taken

    def settle(self, acks: list[Ack], applied: int | None, retry: Sequence[Ack] = ()) -> None:
        """Account for acks given out by :meth:`take`.

        ``applied=None`` (the call failed) puts them all back; ``retry`` are
        the ones the engine skipped (their row was locked): they go back too,
        for the next flush.
        """
        if applied is None:
            self._put_back(acks)
            return
        self.applied += applied
        self._put_back(retry)
        stale = len(acks) - applied - len(retry)
        if stale > 0:
            self.stale += stale
            log.info("%d stale ack(s) changed nothing (jobs rescued or cancelled meanwhile)", stale)

    def _put_back(self, acks: Sequence[Ack]) -> None:
        """Return acks a claim took but did not record: they are due now, not an interval on."""
        if acks:
            self.pending[:0] = acks
            self._oldest = asyncio.get_running_loop().time() - self.interval
            self._wake.set()

    async def start(self) -> None:
        """Start flushing in the background."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="errands-completer")

    async def stop(self) -> None:
        """Flush everything left, then stop. Safe to call twice or before start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Apply every pending ack now (raises if the database refuses)."""
        while self.pending:
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            try:
                applied = await self.apply(batch)
            except BaseException:
                self.pending[:0] = batch
                raise
            self.applied += applied
            if applied < len(batch):
                self.stale += len(batch) - applied
                log.info(
                    "%d stale ack(s) changed nothing (jobs rescued or cancelled meanwhile)",
                    len(batch) - applied,
                )

    async def _run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            # Let a few more acks arrive so one call carries them all, or a claim
            # take them; wait again while what is left is younger than interval.
            loop = asyncio.get_running_loop()
            while self.pending and len(self.pending) < self.batch_size and not self._stopping:
                wait = self._oldest + self.interval - loop.time()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            try:
                await self.flush()
                delay = 0.1
            except Exception as exc:
                log.warning(
                    "could not record %d job outcome(s), retrying in %.1fs: %s",
                    len(self.pending),
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()
