"""Run one job attempt and turn what happened into an :class:`~errands.engines.base.Ack`.

``async def`` bodies run on the event loop (:func:`execute`), where a timeout
cancels them. ``def`` bodies run on pool threads through
:class:`~errands.runtime.sync_runner.SyncRunner` — for a worker node and for
``app.drain()`` alike: a sync body cannot be killed, so at its timeout the
attempt is recorded as failed at once, ``job.cancelled()`` turns true for the
body to notice, and the runaway thread is counted until it returns (see
:func:`thread_timed_out`). In a queue with ``executor="process"`` a ``def``
body runs in a child process instead (:mod:`errands.runtime.process_pool`,
through :func:`execute`), which a timeout really kills. Every path classifies
outcomes with the same :func:`classify`.

Example::

    ack = await execute(job, worker_cls, producer_id)             # an async def body
    ack = await execute(job, worker_cls, producer_id, processes)  # def, executor="process"
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any

import errands
from errands import codec
from errands.engines.base import Ack
from errands.job import Cancel, CancelFlag, Discard, Job, JobState, Snooze
from errands.worker import Worker, _current_job, job_timeout

if TYPE_CHECKING:
    from errands.runtime.process_pool import ProcessPool

__all__ = [
    "JobTimeoutError",
    "RunawayCounter",
    "classify",
    "error_record",
    "execute",
    "thread_timed_out",
]

log = logging.getLogger("errands.executor")

_MAX_MESSAGE = 2_000
_MAX_TRACEBACK = 8_000
#: The stored result of a body that returned None (what codec.encode(None) gives).
_NULL = b"null"


class JobTimeoutError(TimeoutError):
    """A job ran past its timeout."""


class RunawayCounter:
    """Sync bodies still running after their attempt was recorded (timed out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def change(self, delta: int) -> None:
        """Add ``delta`` (thread-safe)."""
        with self._lock:
            self.count += delta


def _clean(text: str, limit: int) -> str:
    # Lone surrogates cannot be stored as JSON text; keep them visible, escaped.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PLUMBING = (
    _PACKAGE_DIR,
    os.path.dirname(asyncio.__file__),
    os.path.dirname(concurrent.futures.__file__),
)


def _user_traceback(exc: BaseException) -> TracebackType | None:
    """The traceback from the first frame outside errands, asyncio and concurrent."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PLUMBING):
        tb = tb.tb_next
    return tb or exc.__traceback__


def _type_name(kind: type[BaseException]) -> str:
    name = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    if kind.__module__.startswith("errands.") and getattr(errands, kind.__qualname__, None) is kind:
        return f"errands.{kind.__qualname__}"  # the public name users import
    return name


def error_record(
    exc: BaseException, attempt: int, *, with_traceback: bool = True
) -> dict[str, Any]:
    """The dict kept on the job for one failed attempt (the traceback starts in user code)."""
    kind = type(exc)
    trace = (
        "".join(traceback.format_exception(kind, exc, _user_traceback(exc)))
        if with_traceback
        else None
    )
    return {
        "type": _type_name(kind),
        "message": _clean(str(exc), _MAX_MESSAGE),
        "traceback": None if trace is None else _clean(trace, _MAX_TRACEBACK),
        "at": time.time(),
        "attempt": attempt,
    }


async def _run_async(worker: Worker, job: Job) -> Any:
    _current_job.set(job)
    return await worker.perform(job)


async def _perform(job: Job, worker: Worker) -> Any:
    """Run an async body, cancelled at its timeout."""
    timeout = job_timeout(job, type(worker))
    # Each job already runs in a task of its own (its own context): no extra
    # task or wait_for on the hot path.
    if timeout is None:
        return await _run_async(worker, job)
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _run_async(worker, job)
    except TimeoutError:
        if not deadline.expired():  # the body's own TimeoutError
            raise
        raise JobTimeoutError(f"job {job.id} ran past its timeout of {timeout:g}s") from None


def thread_timed_out(job: Job, timeout: float) -> JobTimeoutError:
    """Tell a sync body in a thread to stop (``job.cancelled()``); the error to record.

    A thread cannot be killed: the body runs on until it returns, counted as a
    runaway by the caller.
    """
    if job._cancel_event is not None:
        job._cancel_event.set()
    log.warning(
        "job %s (%s) ran past its timeout of %gs; its thread keeps running until it returns",
        job.id,
        job.worker,
        timeout,
    )
    return JobTimeoutError(f"job {job.id} ran past its timeout of {timeout:g}s")


def _backoff(worker: Worker, job: Job) -> float:
    try:
        delay = float(worker.backoff(job))
    except Exception:
        log.exception("backoff() of %s failed; using the default", job.worker)
        return Worker.backoff(worker, job)
    if not math.isfinite(delay):
        log.error("backoff() of %s returned %r; using the default", job.worker, delay)
        return Worker.backoff(worker, job)
    return max(delay, 0.0)


def _shutting_down() -> bool:
    """True when our own task is being cancelled (shutdown), not the job's own code."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def classify(
    job: Job, worker: Worker, producer: str, result: Any = None, exc: BaseException | None = None
) -> Ack:
    """Turn one attempt's return value (or its exception ``exc``) into an :class:`Ack`.

    Every executor uses it (threads, the loop, and child processes of
    :mod:`errands.runtime.process_pool`), so an outcome means the same
    wherever the body ran. A failure's ``backoff()`` runs here, with
    ``job.exception`` set.

    Example: ``ack = classify(job, worker, producer_id, exc=ValueError("bad"))``
    """

    def ack(state: JobState, **outcome: Any) -> Ack:
        return Ack(id=job.id, attempt=job.attempt, producer=producer, state=state, **outcome)

    if exc is None:
        if result is None:  # most bodies return nothing: skip encoding and its checks
            return Ack(job.id, job.attempt, producer, JobState.COMPLETED, _NULL)
        try:
            encoded = codec.encode(result, f"result of {job.worker}")
        except Exception as error:
            exc = error
        else:
            return ack(JobState.COMPLETED, result=encoded)
    if isinstance(exc, Snooze):
        return ack(JobState.SCHEDULED, scheduled_at=time.time() + exc.seconds, snoozed=True)
    if isinstance(exc, Cancel):
        return ack(JobState.CANCELLED, error=error_record(exc, job.attempt, with_traceback=False))
    if isinstance(exc, Discard):
        return ack(JobState.DISCARDED, error=error_record(exc, job.attempt, with_traceback=False))
    record = error_record(exc, job.attempt)
    if job.attempt >= job.max_attempts:
        return ack(JobState.DISCARDED, error=record)
    job.exception = exc
    job.errors = [*job.errors, record]
    return ack(JobState.RETRYABLE, error=record, scheduled_at=time.time() + _backoff(worker, job))


async def execute(
    job: Job,
    worker_cls: type[Worker],
    producer: str,
    processes: ProcessPool | None = None,
) -> Ack:
    """Perform one attempt of an ``async def`` job, or of a ``def`` one in ``processes``.

    ``processes`` is the pool of a queue whose executor is ``"process"``; a
    ``def`` body without one runs on a
    :class:`~errands.runtime.sync_runner.SyncRunner` instead.
    ``asyncio.CancelledError`` (shutdown) propagates: the caller leaves the job
    to be returned or rescued.
    """
    if not worker_cls.is_async():
        if processes is None:
            raise TypeError(f"{job.worker}: def bodies run on a SyncRunner or a ProcessPool")
        return await processes.execute(job, worker_cls, producer)
    job._cancel_event = CancelFlag()
    worker = worker_cls()
    try:
        result = await _perform(job, worker)
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt from a job body fails that attempt; it
        # must not take the worker down. Only our own cancellation propagates.
        if isinstance(exc, asyncio.CancelledError) and _shutting_down():
            raise
        return classify(job, worker, producer, exc=exc)
    return classify(job, worker, producer, result)
