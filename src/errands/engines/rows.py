"""Stored rows into :class:`~errands.job.Job` objects, and claimed rows a runtime can run.

Every engine reads jobs back as rows: :func:`job_from_row` for a row with the
jobs table's columns (times as Unix seconds), and :func:`claimed_jobs` for the
rows of a claim, which sets aside, as discards, the rows written by hand that
no worker could run, so they never strand the rest of their batch.

Example::

    jobs, rejects = claimed_jobs(rows, producer_id, convert=job_from_claim)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from errands import codec
from errands.engines.base import Ack
from errands.job import Job, JobState

__all__ = ["KeyedRow", "claimed_jobs", "job_from_row"]

log = logging.getLogger("errands.engines")


def job_from_row(row: Mapping[str, Any]) -> Job:
    """Build a :class:`Job` from a row with the jobs table's columns (times as Unix seconds)."""
    return Job(
        id=row["id"],
        worker=row["worker"],
        queue=row["queue"],
        args=codec.decode(row["args"]),
        state=JobState(row["state"]),
        priority=row["priority"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        meta=codec.decode(row["meta"]),
        tags=codec.decode(row["tags"]),
        errors=codec.decode(row["errors"]),
        result=codec.decode(row["result"]),
        timeout=row["timeout"],
        inserted_at=row["inserted_at"],
        scheduled_at=row["scheduled_at"],
        attempted_at=row["attempted_at"],
        finished_at=row["finished_at"],
        attempted_by=row["attempted_by"],
    )


def _check_runnable(job: Job) -> None:
    """Raise ValueError for a stored job the runtime cannot run as it is."""
    if not isinstance(job.args, dict):
        raise ValueError(f"args is {type(job.args).__name__}, not a JSON object")
    if not isinstance(job.meta, dict):
        raise ValueError(f"meta is {type(job.meta).__name__}, not a JSON object")
    if not isinstance(job.errors, list) or not isinstance(job.tags, list):
        raise ValueError("errors and tags must be JSON arrays")
    # Text in a SQLite REAL column, or PostgreSQL's 'infinity'/'NaN' ("Infinity" in
    # the claim's JSON), written by hand.
    for name in ("timeout", "inserted_at", "scheduled_at", "attempted_at", "finished_at"):
        value = getattr(job, name)
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"{name} is {value!r}, not a number of seconds")
    if job.attempt > job.max_attempts:
        raise ValueError(f"attempt {job.attempt} is past max_attempts {job.max_attempts}")


class KeyedRow(Protocol):
    """A row whose columns can be read by name (a dict, a ``sqlite3.Row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


def claimed_jobs(
    rows: Sequence[KeyedRow],
    producer: str,
    convert: Callable[[Any], Job] = job_from_row,
) -> tuple[list[Job], list[Ack]]:
    """Decode claimed rows: the jobs to run, and discards for rows that cannot run.

    A row written by hand (bad JSON numbers, text in a time column, spent
    attempts) must not strand the rest of its batch in ``executing``: it is
    discarded with an ``errands.MalformedJob`` error, through the same fenced
    ack as any outcome, and the others run. Jobs come back in claim order.
    """
    jobs: list[Job] = []
    rejects: list[Ack] = []
    for row in rows:
        try:
            job = convert(row)
            _check_runnable(job)
        except Exception as exc:
            message = f"the stored job cannot be run: {exc}"
            log.error("job %s discarded: %s", row["id"], message)
            attempt = int(row["attempt"])
            rejects.append(
                Ack(
                    id=int(row["id"]),
                    attempt=attempt,
                    producer=producer,
                    state=JobState.DISCARDED,
                    error={
                        "type": "errands.MalformedJob",
                        "message": message[:2000],
                        "traceback": None,
                        "at": time.time(),
                        "attempt": attempt,
                    },
                )
            )
            continue
        jobs.append(job)
    jobs.sort(key=lambda job: (job.priority, job.scheduled_at, job.id))
    return jobs, rejects
