"""The PostgreSQL engine's inspection and one-job control: get, list, retry, cancel, delete.

A mixin of :class:`~errands.engines.postgres.PostgresEngine`, kept apart so the
engine module stays about the hot path.

Example::

    engine = PostgresEngine("postgresql://localhost/app")
    engine.get_job(1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from errands.engines.pg_connect import Row
from errands.engines.rows import job_from_row
from errands.job import Job

__all__ = ["PgInspect", "job_from_pg_row"]

_TIMES = ("inserted_at", "scheduled_at", "attempted_at", "finished_at")


def job_from_pg_row(row: Row) -> Job:
    """A :class:`Job` from a row of ``errands_jobs`` (timestamps become Unix seconds)."""
    for key in _TIMES:
        value = row[key]
        if isinstance(value, datetime):
            row[key] = value.timestamp()
    return job_from_row(row)


class PgInspect:
    """Reads and single-job changes for the PostgreSQL engine.

    Example: ``PostgresEngine("postgresql://localhost/app").queue_counts()``
    """

    if TYPE_CHECKING:

        @property
        def _channel(self) -> str | None: ...

        def _all(self, name: str, params: Mapping[str, Any], doing: str) -> list[Row]: ...

        def _count(self, name: str, params: Mapping[str, Any], doing: str) -> int: ...

        def _one(self, name: str, params: Mapping[str, Any], doing: str) -> Job | None: ...

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""
        return self._one("get_job", {"id": job_id}, "reading a job")

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs matching the filters, newest first."""
        params = {"state": state, "queue": queue, "worker": worker, "limit": limit}
        return [job_from_pg_row(row) for row in self._all("list_jobs", params, "listing jobs")]

    def retry_job(self, job_id: int) -> Job | None:
        """Make a finished or retryable job available now, and notify its queue."""
        params = {"id": job_id, "channel": self._channel}
        return self._one("retry_job", params, "retrying a job")

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished."""
        return self._one("cancel_job", {"id": job_id}, "cancelling a job")

    def delete_job(self, job_id: int) -> bool:
        """Delete a job unless it is executing."""
        return self._count("delete_job", {"id": job_id}, "deleting a job") > 0

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``."""
        counts: dict[str, dict[str, int]] = {}
        for row in self._all("queue_counts", {}, "counting jobs"):
            counts.setdefault(row["queue"], {})[row["state"]] = int(row["n"])
        return counts

    def available_queues(self) -> list[str]:
        """The queues that have jobs available now, by name (see ``available_queues.sql``)."""
        rows = self._all("available_queues", {}, "looking for queues with available jobs")
        return [row["queue"] for row in rows]

    def unknown_workers(self, queue: str, workers: Sequence[str]) -> list[str]:
        """Names of available jobs' workers in ``queue`` that this node does not know."""
        params = {"queue": queue, "workers": list(workers)}
        rows = self._all("unknown_workers", params, "looking for unknown workers")
        return [row["worker"] for row in rows]
