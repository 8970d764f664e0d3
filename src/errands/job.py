"""The job record, its states, per-call options and the outcome exceptions.

A job body reports its outcome by returning (``completed``) or raising: any
exception makes the attempt fail (``retryable`` or ``discarded``), while
:class:`Snooze`, :class:`Cancel` and :class:`Discard` say something more
precise.

Example::

    @app.job()
    def charge(order_id: int) -> None:
        if not ready(order_id):
            raise errands.Snooze(30)   # try again in 30 s; no attempt spent
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from errands.errors import InvalidJobError
from errands.unique import Unique, check_replace

__all__ = [
    "Cancel",
    "Discard",
    "Job",
    "JobOptions",
    "JobState",
    "NewJob",
    "Snooze",
]

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_MAX_ATTEMPTS = 20
#: 9999-12-31T23:59:59Z: the last due time every engine (and Python's datetime) can hold.
LAST_TIME = 253_402_300_799.0


class JobState(StrEnum):
    """The seven states of a job (DESIGN.md section 2)."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    EXECUTING = "executing"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"


FINISHED_STATES = (JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED)
#: Each state by its stored text: a dict lookup, cheaper than ``JobState(text)`` on the
#: paths that build thousands of jobs a second (claims, bulk inserts).
STATES_BY_VALUE: dict[str, JobState] = {state.value: state for state in JobState}


class Snooze(Exception):  # noqa: N818 - an outcome, not an error
    """Put the job back to ``scheduled`` for ``seconds`` without spending an attempt.

    The attempt counter still grows (it fences acks); ``max_attempts`` grows with it.

    Example: ``raise errands.Snooze(60)``
    """

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise InvalidJobError(f"Snooze seconds must be a number >= 0, got {seconds!r}")
        super().__init__(seconds)
        self.seconds = float(seconds)


class Cancel(Exception):  # noqa: N818 - an outcome, not an error
    """Stop the job for good as ``cancelled``. Example: ``raise errands.Cancel("user gone")``."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Discard(Exception):  # noqa: N818 - an outcome, not an error
    """Stop the job for good as ``discarded``. Example: ``raise errands.Discard("bad data")``."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


def _utc(ts: float | None) -> dt.datetime | None:
    if ts is None:
        return None
    if math.isinf(ts):  # PostgreSQL's 'infinity' / '-infinity'
        return (dt.datetime.max if ts > 0 else dt.datetime.min).replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class CancelFlag:
    """Set once when a running attempt is asked to stop; ``job.cancelled()`` reads it.

    A plain attribute instead of a ``threading.Event``: one is made per job
    on the hot path, and nobody waits on it (bodies poll ``job.cancelled()``).
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Ask the attempt to stop."""
        self._set = True

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._set


@dataclass(slots=True)
class Job:
    """One job as stored: what to run, with which args, and how it went.

    Times are Unix seconds (floats); ``scheduled_time`` and friends give
    timezone-aware datetimes. ``errors`` holds one dict per failed attempt
    (``type``, ``message``, ``traceback``, ``at``, ``attempt``).

    Example::

        job = app.get_job(job_id)
        if job.state == "retryable":
            print(job.errors[-1]["message"])
    """

    id: int
    worker: str
    queue: str
    args: dict[str, Any]
    state: JobState
    priority: int = 0
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    meta: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    timeout: float | None = None
    inserted_at: float = 0.0
    scheduled_at: float = 0.0
    attempted_at: float | None = None
    finished_at: float | None = None
    attempted_by: str | None = None
    conflict: bool = False
    #: Set while a job runs: the exception of the current attempt, for ``backoff()``.
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    _cancel_event: CancelFlag | threading.Event | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def scheduled_time(self) -> dt.datetime:
        """``scheduled_at`` as an aware UTC datetime."""
        value = _utc(self.scheduled_at)
        assert value is not None
        return value

    @property
    def inserted_time(self) -> dt.datetime:
        """``inserted_at`` as an aware UTC datetime."""
        value = _utc(self.inserted_at)
        assert value is not None
        return value

    @property
    def finished_time(self) -> dt.datetime | None:
        """``finished_at`` as an aware UTC datetime, or ``None``."""
        return _utc(self.finished_at)

    def cancelled(self) -> bool:
        """True once this running attempt was asked to stop (timeout or shutdown).

        Long sync jobs should check it between steps: a thread cannot be killed.
        """
        return self._cancel_event is not None and self._cancel_event.is_set()


def _check_number(name: str, value: Any, *, minimum: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidJobError(f"{name} must be a number >= {minimum:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-call options; ``None`` means "use the worker's default".

    Example: ``send_email.options(priority=2, schedule_in=60).enqueue(to="x")``
    """

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    schedule_in: float | None = None
    scheduled_at: dt.datetime | float | None = None
    timeout: float | None = None
    tags: tuple[str, ...] | None = None
    meta: dict[str, Any] | None = None
    #: An :class:`errands.Unique`; ``False`` turns a worker's default uniqueness off.
    unique: Unique | bool | None = None
    #: On a duplicate unique enqueue, update these fields of the existing job (if not running).
    replace: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (
            self.unique is not None
            and self.unique is not False
            and not isinstance(self.unique, Unique)
        ):
            raise InvalidJobError(
                f"unique must be an errands.Unique(...) or False, got {self.unique!r}"
            )
        if self.replace is not None:
            object.__setattr__(self, "replace", check_replace(self.replace))
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise InvalidJobError(f"queue must be a non-empty string, got {self.queue!r}")
        if self.priority is not None and (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY
        ):
            raise InvalidJobError(
                f"priority must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                f"got {self.priority!r}"
            )
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidJobError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        _check_number("schedule_in", self.schedule_in, minimum=0, allow_none=True)
        _check_number("timeout", self.timeout, minimum=0, allow_none=True)
        if self.timeout == 0:
            raise InvalidJobError("timeout must be > 0 seconds, got 0")
        if self.schedule_in is not None and self.scheduled_at is not None:
            raise InvalidJobError("give schedule_in or scheduled_at, not both")
        if self.scheduled_at is not None:
            if isinstance(self.scheduled_at, dt.datetime):
                if self.scheduled_at.tzinfo is None:
                    raise InvalidJobError(
                        f"scheduled_at must be timezone-aware, got naive {self.scheduled_at!r}"
                    )
            else:
                _check_number("scheduled_at", self.scheduled_at, minimum=0)
        if self.tags is not None and (
            isinstance(self.tags, str) or not all(isinstance(tag, str) for tag in self.tags)
        ):
            raise InvalidJobError(f"tags must be a list of strings, got {self.tags!r}")
        if self.meta is not None and not isinstance(self.meta, dict):
            raise InvalidJobError(f"meta must be a dict, got {self.meta!r}")

    def merged(self, other: JobOptions) -> JobOptions:
        """These options with every option ``other`` sets laid over them."""
        changes = {
            name: getattr(other, name)
            for name in self.__slots__
            if getattr(other, name) is not None
        }
        # A new due time, given either way, replaces the old one given either way.
        if other.schedule_in is not None:
            changes["scheduled_at"] = None
        elif other.scheduled_at is not None:
            changes["schedule_in"] = None
        return replace(self, **changes)

    def run_at(self, now: float | None = None) -> float | None:
        """The Unix time the job is due, or ``None`` for "now"."""
        if self.schedule_in is not None:
            return (time.time() if now is None else now) + float(self.schedule_in)
        if isinstance(self.scheduled_at, dt.datetime):
            return self.scheduled_at.timestamp()
        if self.scheduled_at is not None:
            return float(self.scheduled_at)
        return None


@dataclass(slots=True)
class NewJob:
    """A job ready to insert: validated, args already encoded.

    Built by ``fn.new(...)`` or ``app.new_job(...)`` and passed to
    ``app.enqueue_many``.
    """

    worker: str
    queue: str
    args: dict[str, Any]
    args_json: bytes
    meta_json: bytes
    tags_json: bytes
    priority: int
    max_attempts: int
    scheduled_at: float | None
    timeout: float | None
    #: The unique key (hex SHA-256) and state bitmask; ``None`` for a job that is not unique.
    unique_hash: str | None = None
    unique_states: int = 0
    #: Fields to update on the existing job when this unique job is a duplicate.
    replace: tuple[str, ...] = ()
