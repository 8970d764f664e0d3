"""The SQLite engine's inspection and one-job control: get, list, retry, cancel, delete, counts.

A mixin of :class:`~errands.engines.sqlite.SQLiteEngine`, kept apart so the
engine module stays about the hot path.

Example::

    engine = SQLiteEngine("jobs.db")
    engine.get_job(1)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from errands.engines.rows import job_from_row
from errands.engines.sqlite_util import dict_rows, json_list, queues_with_available_jobs, sql
from errands.job import Job

__all__ = ["SQLiteInspect"]


class SQLiteInspect:
    """Reads and single-job changes for the SQLite engine.

    Example: ``SQLiteEngine("jobs.db").queue_counts()``
    """

    if TYPE_CHECKING:

        def _read(self, doing: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, doing: str) -> AbstractContextManager[sqlite3.Connection]: ...

    def _one(self, name: str, params: dict[str, Any], doing: str, *, write: bool) -> Job | None:
        context = self._write(doing) if write else self._read(doing)
        with context as conn:
            rows = dict_rows(conn.execute(sql(name), params))
        return job_from_row(rows[0]) if rows else None

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""
        return self._one("get_job", {"id": job_id}, "reading a job", write=False)

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
        with self._read("listing jobs") as conn:
            return [job_from_row(row) for row in dict_rows(conn.execute(sql("list_jobs"), params))]

    def retry_job(self, job_id: int) -> Job | None:
        """Make a finished or retryable job available now."""
        params = {"id": job_id, "now": time.time()}
        return self._one("retry_job", params, "retrying a job", write=True)

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished."""
        params = {"id": job_id, "now": time.time()}
        return self._one("cancel_job", params, "cancelling a job", write=True)

    def delete_job(self, job_id: int) -> bool:
        """Delete a job unless it is executing."""
        with self._write("deleting a job") as conn:
            return conn.execute(sql("delete_job"), {"id": job_id}).rowcount > 0

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``."""
        counts: dict[str, dict[str, int]] = {}
        with self._read("counting jobs") as conn:
            for queue, state, n in conn.execute(sql("queue_counts")).fetchall():
                counts.setdefault(queue, {})[state] = n
        return counts

    def available_queues(self) -> list[str]:
        """The queues that have jobs available now, by name (see ``available_queues.sql``)."""
        with self._read("looking for queues with available jobs") as conn:
            return queues_with_available_jobs(conn)

    def unknown_workers(self, queue: str, workers: Sequence[str]) -> list[str]:
        """Names of available jobs' workers in ``queue`` that this node does not know."""
        params = {"queue": queue, "workers": json_list(workers)}
        with self._read("looking for unknown workers") as conn:
            return [row[0] for row in conn.execute(sql("unknown_workers"), params).fetchall()]
