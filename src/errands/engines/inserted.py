"""Jobs as an insert just stored them, built here instead of read back from the database.

A new row holds nothing the client does not know but its id, its state and its
two times: the engines' inserts return (or reserve) only those, and the
:class:`~errands.job.Job` objects are built from the :class:`~errands.job.NewJob`
that was sent. Decoding whole rows (jsonb, timestamps, nulls) cost more than the
insert itself on the bulk path.

The result must equal what ``get_job`` reads later, so args, meta and tags are
decoded from the JSON that was stored (not the caller's objects, which they may
still mutate), and numbers stored in REAL/float columns come back as floats.

PostgreSQL keeps times as microseconds since 2000-01-01; :func:`pg_micros` is the
rounding ``to_timestamp(float8)`` applies, so a time computed here is the one the
server would store, and :func:`unix_seconds` is what a timestamptz read back
through ``datetime.timestamp()`` gives.

Example::

    job = inserted_job(new, 42, JobState.AVAILABLE, inserted_at=now, scheduled_at=now)
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from errands.errors import InvalidJobError
from errands.job import Job, JobState, NewJob

__all__ = ["PG_EPOCH_US", "POSITIONAL", "inserted_job", "paused_gc", "pg_micros", "unix_seconds"]

#: Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
PG_EPOCH_US = 946_684_800 * 1_000_000
_PG_EPOCH_S = 946_684_800.0
_US = 1_000_000
_loads = orjson.loads

#: The leading fields of Job, in the order the hot paths pass them positionally
#: (inserted_job here, job_from_claim in pg_claim and sqlite_util): a keyword
#: call costs about a microsecond more per job. Checked once, at import.
POSITIONAL = (
    "id",
    "worker",
    "queue",
    "args",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "meta",
    "tags",
    "errors",
    "result",
    "timeout",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "finished_at",
    "attempted_by",
)
if tuple(field.name for field in dataclasses.fields(Job))[: len(POSITIONAL)] != POSITIONAL:
    raise ImportError("errands.job.Job's fields changed order: update POSITIONAL's users")


def pg_micros(at: float) -> int:
    """Unix seconds as PostgreSQL's ``to_timestamp(at)`` stores them (µs since 2000).

    The same float operations as the server's ``float8_timestamptz``: shift to
    the 2000 epoch, scale, round half to even.
    """
    return round((at - _PG_EPOCH_S) * 1e6)


def unix_seconds(unix_us: int) -> float:
    """Unix seconds for a time in Unix microseconds, as ``datetime.timestamp()`` computes it."""
    # An exact int/int division: correctly rounded, like timedelta.total_seconds().
    return unix_us / _US


def inserted_job(
    new: NewJob, job_id: int, state: JobState, inserted_at: float, scheduled_at: float
) -> Job:
    """The stored job ``new`` became: attempt 0, no errors, no result.

    Raises :class:`InvalidJobError` if ``new`` carries JSON that does not parse
    (only a hand-made ``NewJob`` can): the caller is mid-insert and rolls back.
    """
    try:
        args, meta, tags = _loads(new.args_json), _loads(new.meta_json), _loads(new.tags_json)
    except orjson.JSONDecodeError:
        raise _bad_json(new) from None
    timeout = new.timeout
    # Positional: a microsecond per job cheaper than keywords (3.0 -> 1.9 µs per
    # job, measured), which bulk inserts of many thousands notice; POSITIONAL
    # pins the field order this relies on.
    return Job(
        job_id,
        new.worker,
        new.queue,
        args,
        state,
        new.priority,
        0,  # attempt
        new.max_attempts,
        meta,
        tags,
        [],  # errors
        None,  # result
        None if timeout is None else float(timeout),
        inserted_at,
        scheduled_at,
    )


def _bad_json(new: NewJob) -> InvalidJobError:
    for field in ("args", "meta", "tags"):
        try:
            _loads(getattr(new, f"{field}_json"))
        except orjson.JSONDecodeError as exc:
            return InvalidJobError(f"{field} of {new.worker!r} is not valid JSON: {exc}")
    return InvalidJobError(f"a field of {new.worker!r} is not valid JSON")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk insert builds its jobs.

    Each job brings five new containers (the job, args, meta, tags, errors);
    tens of thousands of them set off repeated full collections of the whole
    heap, which cost more than building the jobs (measured: 5 µs per job with
    the collector, 2 µs without). Nothing built here is garbage, so pausing
    frees nothing late. The collector is resumed only if it was running.
    """
    running = gc.isenabled()
    if running:
        gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()
