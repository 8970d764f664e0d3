"""The storage seam: one protocol every engine implements.

The runtime and the :class:`~errands.App` facade talk to storage only through
:class:`Engine`. Engine methods are synchronous and thread-safe: sync apps
(Django, Flask) call them directly, and the async runtime calls them from a
small thread pool so the event loop never waits on the database. An engine
whose driver speaks asyncio may also offer a :class:`LoopPath` for the two
calls a busy worker makes most (claim, ack), run on the loop itself.

"Now" is the engine's clock (the database server's, where there is one), so
that several hosts with skewed clocks still agree on what is due and who is
dead.

Example (what a new engine must pass)::

    pytest tests/conformance --engine=myengine
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from errands.job import Job, JobState, NewJob
from errands.limits import QueueLimits

log = logging.getLogger("errands.engines")

__all__ = [
    "CONTROL_WAKE",
    "Ack",
    "CronSlot",
    "Engine",
    "LoopPath",
    "ProducerInfo",
    "QueueState",
    "RescueCounts",
    "load_sql",
]


@dataclass(frozen=True, slots=True)
class Ack:
    """The outcome of one attempt, fenced by ``(id, attempt, producer)``.

    An engine applies it only while the job is still ``executing`` with that
    attempt on that producer; otherwise the ack is stale and changes nothing.
    """

    id: int
    attempt: int
    producer: str
    state: JobState
    result: bytes | None = None
    error: Mapping[str, Any] | None = None
    #: Due time for ``retryable`` and snoozed (``scheduled``) outcomes.
    scheduled_at: float | None = None
    #: A snooze spends no attempt: it allows one more (``max_attempts + 1``), so that
    #: ``attempt`` still grows with every claim and an old ack can never match a new one.
    snoozed: bool = False


@dataclass(frozen=True, slots=True)
class ProducerInfo:
    """A queue consumer in one node, as recorded in the producers table."""

    id: str
    node: str
    queue: str
    pid: int


@dataclass(frozen=True, slots=True)
class RescueCounts:
    """Jobs rescued from dead producers: made available again, or discarded when spent."""

    available: int = 0
    discarded: int = 0

    @property
    def total(self) -> int:
        """Both counts together."""
        return self.available + self.discarded


@dataclass(frozen=True, slots=True)
class CronSlot:
    """One due slot of a cron entry and the job to insert for it (if the slot is new).

    Example: ``CronSlot(name="nightly", at=1767236400.0, job=app.new_job(Nightly))``
    """

    name: str
    #: The slot's instant, Unix seconds.
    at: float
    job: NewJob


@dataclass(frozen=True, slots=True)
class QueueState:
    """The instructions every node follows for one queue (a row of ``errands_queues``).

    ``None`` means no instruction: each node keeps its own configuration.
    ``version`` grows with every change, so each node applies a change once.

    Example: ``QueueState("mail", paused=True, limit=None, running=None, version=3, updated_at=0)``
    """

    name: str
    paused: bool | None
    #: Overrides each node's local ``limit`` (``scale_queue``).
    limit: int | None
    #: True: every node runs the queue (``start_queue``); False: none does (``stop_queue``).
    running: bool | None
    version: int
    updated_at: float


#: A callback an engine's listener calls with a queue name when jobs arrive.
WakeUp = Callable[[str], None]

#: The wake-up "queue name" (no real one can be) that tells nodes to re-read queue control.
CONTROL_WAKE = "!control"


@runtime_checkable
class Listener(Protocol):
    """A running notification listener; ``stop`` ends it."""

    def stop(self) -> None:
        """Stop listening; safe to call twice."""


@runtime_checkable
class LoopPath(Protocol):
    """An engine's claim and ack as coroutines on a worker's event loop (optional).

    An engine whose driver has an asyncio API may offer ``loop_path()``,
    called inside the running loop, returning one (or None where that loop
    cannot have one): a worker node then claims (queues without global or
    rate limits) and records outcomes through it instead of a thread hop per
    call.
    Same statements, same fence, same errors as :meth:`Engine.fetch` and
    :meth:`Engine.ack`.

    Example::

        path = engine.loop_path()
        jobs = await path.fetch("default", 10, producer_id, ["app.send"])
        await path.close()
    """

    async def fetch(
        self, queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> list[Job]:
        """Claim up to ``limit`` jobs, as :meth:`Engine.fetch` without limits."""

    async def ack(self, acks: Sequence[Ack]) -> int:
        """Apply a batch of outcomes, as :meth:`Engine.ack`."""

    async def close(self) -> None:
        """Release its connections; safe to call twice."""


class Engine(Protocol):
    """Everything errands asks of its storage. Every method is thread-safe."""

    dialect: str
    #: How often (s) idle producers look for work when no wake-up arrives.
    default_poll_interval: float

    # -- schema -------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade the tables; return the schema version now stored."""

    def check_schema(self) -> None:
        """Raise :class:`~errands.errors.SchemaError` unless the schema is current."""

    def close(self) -> None:
        """Release connections; safe to call twice."""

    # -- jobs -----------------------------------------------------------------
    def insert(self, jobs: Sequence[NewJob], conn: Any = None) -> list[Job]:
        """Insert ``jobs`` in one round trip; inside ``conn``'s transaction when given."""

    async def ainsert(self, jobs: Sequence[NewJob], conn: Any) -> list[Job]:
        """Insert ``jobs`` inside the transaction of the caller's ``conn``, from async code.

        An async connection the engine can drive is awaited on the caller's
        loop; a sync one is used right here, on the calling thread (as
        :meth:`insert` would), since the caller holds it in this thread.
        """

    def insert_cron(self, slots: Sequence[CronSlot]) -> list[Job]:
        """Insert each slot row and, only if it was new, its job, in one transaction.

        Returns the jobs inserted: a slot some node inserted before gets none.
        """

    def prune_cron_slots(self, before: float) -> int:
        """Delete slot rows before ``before`` (Unix seconds) but each entry's latest one."""

    def cron_history(self, names: Sequence[str]) -> dict[str, float]:
        """``{name: latest slot inserted}`` for the entries that have one (Unix seconds)."""

    def fetch(
        self,
        queue: str,
        limit: int,
        producer: str,
        workers: Sequence[str],
        limits: QueueLimits | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` available jobs of ``queue`` whose worker is in ``workers``.

        With ``limits``, the claim also keeps the queue's global and rate limits
        (per partition), counted and claimed atomically against every node.
        """

    def ack(self, acks: Sequence[Ack]) -> int:
        """Apply outcomes in one transaction; return how many were not stale."""

    def release(self, jobs: Sequence[Job], producer: str) -> int:
        """Make claimed jobs that never started available again, attempt given back.

        Fenced like an ack by ``(id, attempt, producer)``; returns how many were
        still held. A producer that claimed ahead of its free slots calls it
        when its queue pauses or stops.
        """

    def stage(self, limit: int) -> list[str]:
        """Make due scheduled/retryable jobs available; return the queues touched."""

    def rescue(self, rescue_after: float) -> RescueCounts:
        """Rescue executing jobs of producers silent for more than ``rescue_after`` s."""

    def rescue_producer(self, producer: str) -> RescueCounts:
        """Rescue the executing jobs of one producer now (it is shutting down)."""

    def prune(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` finished jobs finished more than ``older_than`` s ago."""

    # -- liveness -------------------------------------------------------------
    def register_producer(self, producer: ProducerInfo) -> None:
        """Record a producer as alive now."""

    def heartbeat(self, producers: Sequence[str]) -> None:
        """Mark these producers alive now."""

    def unregister_producers(self, producers: Sequence[str]) -> None:
        """Forget these producers (their node is stopping)."""

    def acquire_leader(self, node: str, ttl: float) -> bool:
        """Take or renew the leader lease for ``ttl`` seconds; True if ``node`` leads."""

    def release_leader(self, node: str) -> None:
        """Give the lease up if ``node`` holds it."""

    # -- inspection and control ------------------------------------------------
    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs matching the filters, newest first."""

    def retry_job(self, job_id: int) -> Job | None:
        """Make a job ``available`` now (with one more attempt if spent)."""

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished."""

    def delete_job(self, job_id: int) -> bool:
        """Delete a job that is not executing; True if a row went."""

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` over the whole table."""

    def unknown_workers(self, queue: str, workers: Sequence[str]) -> list[str]:
        """Worker names of available jobs in ``queue`` that are not in ``workers``."""

    def available_queues(self) -> list[str]:
        """The queues that have jobs available now, by name."""

    def listen(self, wake_up: WakeUp) -> Listener | None:
        """Start calling ``wake_up(queue)`` when other processes insert; None if unsupported."""

    # -- queue control and bulk changes (errands.control, errands.runtime.queue_watch) --
    def queue_states(self) -> list[QueueState]:
        """Every queue's stored instructions, by name."""

    def set_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        limit: int | None = None,
        set_limit: bool = False,
        running: bool | None = None,
        set_running: bool = False,
    ) -> QueueState:
        """Store an instruction for every node (``paused=None`` keeps the stored value)."""

    def notify_control(self) -> None:
        """Ask every node to re-read queue control now (a hint; nodes poll anyway)."""

    def cancelled_jobs(self, ids: Sequence[int]) -> list[int]:
        """Which of ``ids`` are now ``cancelled``."""

    def retry_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Make matching finished/retryable jobs available now; return how many."""

    def cancel_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Cancel matching unfinished jobs (executing ones too); return how many."""

    def delete_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Delete matching jobs that are not executing; return how many."""


def load_sql(dialect: str, name: str) -> str:
    """The text of ``engines/sql/<dialect>/<name>.sql``, its includes expanded.

    ``-- include: _fragment`` lines are replaced by ``_fragment.sql`` of the same
    folder (see :mod:`errands.engines.sql_text`).

    Example: ``load_sql("sqlite", "claimable")`` (with ``_limited_ranked.sql`` in it)
    """
    from errands.engines.sql_text import expand_includes

    text = resources.files("errands.engines").joinpath("sql", dialect, f"{name}.sql").read_text()
    return expand_includes(dialect, text, source=f"{name}.sql")
