"""Bulk changes: retry, cancel or delete every job matching some filters, in one statement.

A mixin of :class:`errands.App`. Each method takes optional ``queue``,
``worker`` and ``state`` filters (``state`` may be one state or a list) and
returns how many jobs changed. Without ``state`` it acts on every state the
operation allows:

- ``retry_jobs``: ``retryable``, ``discarded``, ``cancelled``, ``completed``
  (made available now; a job that spent its attempts gets one more);
- ``cancel_jobs``: ``scheduled``, ``available``, ``retryable``, ``executing``
  (running ones are stopped by their node within about a second);
- ``delete_jobs``: every state but ``executing``, which is never deleted.

Example::

    app.retry_jobs(queue="mail", state="discarded")     # -> 12
    app.cancel_jobs(worker="reports.Nightly")
    app.delete_jobs(state=["completed", "cancelled"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from errands.engines.base import CONTROL_WAKE
from errands.errors import InvalidJobError
from errands.job import JobState

if TYPE_CHECKING:
    from errands.engines import Engine
    from errands.runtime.node import Node

__all__ = ["BULK_STATES", "BulkJobs"]

#: The states each bulk operation may change, in the order shown in errors.
BULK_STATES: dict[str, tuple[str, ...]] = {
    "retry_jobs": ("retryable", "discarded", "cancelled", "completed"),
    "cancel_jobs": ("scheduled", "available", "retryable", "executing"),
    "delete_jobs": ("scheduled", "available", "retryable", "completed", "cancelled", "discarded"),
}

StateFilter = str | JobState | Sequence[str | JobState] | None


def bulk_filters(
    call: str, queue: Any, worker: Any, state: Any
) -> tuple[list[str], str | None, str | None]:
    """Validated ``(states, queue, worker)`` for bulk operation ``call``.

    Example: ``bulk_filters("retry_jobs", "mail", None, "discarded")``
    """
    allowed = BULK_STATES[call]
    for option, value in (("queue", queue), ("worker", worker)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidJobError(f"{call} {option} must be a non-empty str or None, got {value!r}")
    if state is None:
        return list(allowed), queue, worker
    given = [state] if isinstance(state, str) else state
    if not isinstance(given, Sequence) or not given:
        raise InvalidJobError(
            f"{call} state must be a state name or a non-empty list of them, got {state!r}"
        )
    states: list[str] = []
    for item in given:
        value = item.value if isinstance(item, JobState) else item
        if value not in allowed:
            raise InvalidJobError(f"{call} state must be one of {', '.join(allowed)}, got {item!r}")
        if value not in states:
            states.append(value)
    return states, queue, worker


class BulkJobs:
    """Bulk job methods of :class:`errands.App` (see the module docs).

    Example: ``app.delete_jobs(queue="mail", state="completed")``
    """

    if TYPE_CHECKING:

        @property
        def engine(self) -> Engine: ...

        @property
        def node(self) -> Node | None: ...

        def ensure_schema(self) -> None: ...

    def retry_jobs(
        self, queue: str | None = None, worker: str | None = None, state: StateFilter = None
    ) -> int:
        """Run every matching finished or retryable job again now; return how many.

        Example: ``app.retry_jobs(queue="mail", state="discarded")``
        """
        states, queue, worker = bulk_filters("retry_jobs", queue, worker, state)
        self.ensure_schema()
        count = self.engine.retry_jobs(states=states, queue=queue, worker=worker)
        node = self.node
        if count and node is not None:
            node.wake("*" if queue is None else queue)
        return count

    def cancel_jobs(
        self, queue: str | None = None, worker: str | None = None, state: StateFilter = None
    ) -> int:
        """Cancel every matching unfinished job, executing ones too; return how many.

        Example: ``app.cancel_jobs(worker="reports.Nightly", state="scheduled")``
        """
        states, queue, worker = bulk_filters("cancel_jobs", queue, worker, state)
        self.ensure_schema()
        count = self.engine.cancel_jobs(states=states, queue=queue, worker=worker)
        node = self.node
        if count and node is not None and "executing" in states:
            node.wake(CONTROL_WAKE)
        return count

    def delete_jobs(
        self, queue: str | None = None, worker: str | None = None, state: StateFilter = None
    ) -> int:
        """Delete every matching job that is not executing; return how many.

        Example: ``app.delete_jobs(state=["completed", "cancelled"])``
        """
        states, queue, worker = bulk_filters("delete_jobs", queue, worker, state)
        self.ensure_schema()
        return self.engine.delete_jobs(states=states, queue=queue, worker=worker)
