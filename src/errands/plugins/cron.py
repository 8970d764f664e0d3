"""Inserts the jobs of cron entries when their slots fall due (leader only).

Each tick (about once a second) looks for the slots of every entry that fell
due since the previous tick and inserts them with ``engine.insert_cron``: the
slot row ``(name, slot)`` and its job go in one transaction, and the job only
if the slot row was new, so a slot runs at most once however many nodes tick
(two leaders during a hand-over included).

Which slots a tick inserts:

- in steady state, those that fell due since the previous tick;
- at the first tick of a node (or the first after a gap longer than
  ``max(catch_up, 60)`` seconds: a database outage, a leadership change),
  those since the node started, plus the **catch-up**: slots missed while no
  node ran, after the entry's latest inserted slot and at most ``catch_up``
  seconds old, so each runs once when a node comes back. An entry that never
  inserted a slot has nothing to catch up: a new entry starts from the node's
  start, it does not run the past hour at its first deploy;
- never a slot older than ``max(catch_up, 60)`` seconds (``0``: nothing missed
  is caught up; a tick late by up to a minute still finds its slots).

Slot rows older than two such windows are pruned, except each entry's latest.

Example::

    cron = Cron(engine, call_db, entries=app.cron, make_job=partial(cron_job, app),
                catch_up=3600, wake=node.wake)
    await cron.start()
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from errands.cron import CronEntry, check_entries, cron_job
from errands.engines.base import CronSlot, Engine
from errands.job import Job, NewJob
from errands.plugins.base import CallDb, Periodic

if TYPE_CHECKING:
    from errands.runtime.node import Node

__all__ = ["Cron"]

log = logging.getLogger("errands.cron")

#: However late a tick is, it never looks back less than this (seconds).
MIN_LOOK_BACK = 60.0
#: Slot rows are pruned at most this often (seconds of the plugin's clock).
PRUNE_EVERY = 60.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Cron(Periodic):
    """Inserts due cron slots; ``now`` is injectable so tests need not wait for minutes.

    Example: ``Cron(engine, call_db, entries=app.cron, make_job=..., catch_up=0,
    now=lambda: fixed).run_once()`` inserts the slots of one tick.
    """

    name = "cron"

    def __init__(
        self,
        engine: Engine,
        call_db: CallDb,
        *,
        entries: Sequence[CronEntry],
        make_job: Callable[[CronEntry, datetime], NewJob],
        catch_up: float,
        wake: Callable[[str], None] | None = None,
        interval: float = 1.0,
        now: Callable[[], datetime] | None = None,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self.engine = engine
        self.call_db = call_db
        self.entries = list(entries)
        self.make_job = make_job
        self.catch_up = float(catch_up)
        self.wake = wake
        self.now = now or _utc_now
        #: The ``now`` of the previous successful tick, or None before the first one.
        self.since: datetime | None = None
        #: When this loop was made (the node's start): a new entry's slots count from here.
        self.started_at = self.now()
        self.inserted = 0
        self._pruned_at: datetime | None = None

    @classmethod
    def for_node(cls, node: Node) -> Cron:
        """The cron loop of a node, after checking every entry (ConfigError naming it)."""
        check_entries(node.app)
        return cls(
            node.engine,
            node.call_db,
            entries=node.app.cron,
            make_job=functools.partial(cron_job, node.app),
            catch_up=node.settings.cron_catch_up,
            wake=node.wake,
            is_leader=lambda: node.heartbeat.is_leader,
        )

    @property
    def look_back(self) -> timedelta:
        """The longest a tick ever looks back: ``max(catch_up, 60 s)``."""
        return timedelta(seconds=max(self.catch_up, MIN_LOOK_BACK))

    def lower_bounds(self, now: datetime) -> dict[str, datetime]:
        """Per entry, the instant after which this tick inserts slots (up to ``now``)."""
        recent = now - self.look_back
        if self.since is not None and self.since >= recent:
            return {entry.name: self.since for entry in self.entries}
        # First tick, or first after a gap: this node's own time, plus catch-up.
        history = self.engine.cron_history([entry.name for entry in self.entries])
        own = max(self.started_at, recent)
        catch_up = min(own, now - timedelta(seconds=self.catch_up))
        bounds: dict[str, datetime] = {}
        for entry in self.entries:
            last = history.get(entry.name)
            if last is None:
                bounds[entry.name] = own
            else:
                bounds[entry.name] = max(datetime.fromtimestamp(last, UTC), catch_up)
        return bounds

    def due(self, now: datetime) -> list[CronSlot]:
        """The slots of every entry in this tick's window, each with its job."""
        bounds = self.lower_bounds(now)
        slots: list[CronSlot] = []
        for entry in self.entries:
            for slot in entry.schedule.slots_between(bounds[entry.name], now):
                job = self.make_job(entry, slot)
                slots.append(CronSlot(name=entry.name, at=slot.timestamp(), job=job))
        return slots

    def run_once(self) -> list[Job]:
        """One tick, synchronously: insert the due slots' jobs; return the jobs inserted."""
        now = self.now()
        if now.tzinfo is None:
            raise ValueError(f"the cron clock must give aware datetimes, got {now!r}")
        slots = self.due(now)
        # A unique cron job may come back as an existing duplicate: not inserted.
        jobs = self.engine.insert_cron(slots) if slots else []
        inserted = [job for job in jobs if not job.conflict]
        self.since = now
        self.inserted += len(inserted)
        if self._pruned_at is None or (now - self._pruned_at).total_seconds() >= PRUNE_EVERY:
            self.engine.prune_cron_slots((now - 2 * self.look_back).timestamp())
            self._pruned_at = now
        for job in inserted:
            log.info("cron: inserted job %d (%s) for %s", job.id, job.worker, job.meta.get("cron"))
        return inserted

    async def tick(self) -> float | None:
        inserted: list[Job] = await self.call_db(self.run_once)
        if self.wake is not None:
            for queue in {job.queue for job in inserted}:
                self.wake(queue)
        return None
