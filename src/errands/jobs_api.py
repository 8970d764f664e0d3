"""Reading and changing one job by id: get, list, retry, cancel, delete, counts.

A mixin of :class:`errands.App`; bulk changes by filter live in
:mod:`errands.bulk`, queue-wide control in :mod:`errands.control`.

Example::

    job = app.get_job(42)
    app.retry_job(42); app.cancel_job(43); app.delete_job(44)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from errands.engines.base import CONTROL_WAKE
from errands.errors import InvalidJobError
from errands.job import Job, JobState

if TYPE_CHECKING:
    from errands.engines import Engine
    from errands.runtime.node import Node

__all__ = ["JobAccess"]


def _possible_id(job_id: Any) -> bool:
    """False for ids no row can have (both engines use signed 64-bit ids)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidJobError(f"job id must be an int, got {job_id!r}")
    return 1 <= job_id < 2**63


class JobAccess:
    """Single-job reads and changes for :class:`errands.App`.

    Example: ``app.list_jobs(state="retryable", queue="mail", limit=20)``
    """

    if TYPE_CHECKING:
        _node: Node | None

        @property
        def engine(self) -> Engine: ...

        def ensure_schema(self) -> None: ...

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""
        if not _possible_id(job_id):
            return None
        self.ensure_schema()
        return self.engine.get_job(job_id)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs matching the filters, newest first: ``app.list_jobs(state="retryable")``."""
        if state is not None:
            try:
                JobState(state)
            except ValueError:
                known = ", ".join(s.value for s in JobState)
                raise InvalidJobError(f"state must be one of {known}, got {state!r}") from None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidJobError(f"limit must be an int >= 1, got {limit!r}")
        self.ensure_schema()
        return self.engine.list_jobs(state=state, queue=queue, worker=worker, limit=limit)

    def retry_job(self, job_id: int) -> Job | None:
        """Run a retryable or finished job again now; ``None`` if it cannot be retried."""
        if not _possible_id(job_id):
            return None
        self.ensure_schema()
        job = self.engine.retry_job(job_id)
        if job is not None and self._node is not None:
            self._node.wake(job.queue)
        return job

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished; ``None`` if it already had."""
        if not _possible_id(job_id):
            return None
        self.ensure_schema()
        job = self.engine.cancel_job(job_id)
        if job is not None and job.attempted_by is not None:
            # It may be executing somewhere: its node's queue watch stops it.
            self.engine.notify_control()
            if self._node is not None:
                self._node.wake(CONTROL_WAKE)
        return job

    def delete_job(self, job_id: int) -> bool:
        """Delete a job that is not executing; True if it was deleted."""
        if not _possible_id(job_id):
            return False
        self.ensure_schema()
        return self.engine.delete_job(job_id)

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Job counts by queue and state: ``{"mail": {"available": 3, ...}}``."""
        self.ensure_schema()
        return self.engine.queue_counts()
