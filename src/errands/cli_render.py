"""Rich renderings for the ``errands`` command: job tables, one job in full, queue counts.

Pure functions from records to renderables, so the command code stays about
arguments and errors, and the demo can reuse the same tables.

Example::

    from rich.console import Console
    Console().print(jobs_table(app.list_jobs(limit=20)))
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from errands.errors import ErrandsError
from errands.job import Job, JobState

if TYPE_CHECKING:
    from errands.app import App

__all__ = [
    "STATES",
    "ago",
    "existing_job",
    "job_detail",
    "job_to_dict",
    "jobs_table",
    "out_console",
    "queues_table",
    "short_error",
    "state_text",
]

#: Every state, in lifecycle order (table columns follow it).
STATES: tuple[str, ...] = tuple(state.value for state in JobState)

_STATE_STYLES = {
    "scheduled": "cyan",
    "available": "blue",
    "executing": "bold yellow",
    "retryable": "magenta",
    "completed": "green",
    "cancelled": "dim",
    "discarded": "red",
}

# Job fields shown and exported; `exception` and `_cancel_event` only live in a worker.
_FIELDS = (
    "id",
    "worker",
    "queue",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "args",
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
    "conflict",
)


def state_text(state: str) -> Text:
    """A state name in its colour. Example: ``state_text("discarded")`` is red."""
    return Text(str(state), style=_STATE_STYLES.get(str(state), ""))


def ago(ts: float | None, now: float | None = None) -> str:
    """A Unix time relative to now: ``"in 3s"``, ``"2m ago"``, ``"-"`` for None.

    >>> ago(100.0, now=160.0)
    '1m ago'
    """
    unusual = _unusual_time(ts)
    if unusual is not None:
        return unusual
    assert ts is not None
    delta = ts - (time.time() if now is None else now)
    size = abs(delta)
    if size < 1:
        return "now"
    if size < 60:
        amount = f"{size:.0f}s"
    elif size < 3600:
        amount = f"{size / 60:.0f}m"
    elif size < 86400:
        amount = f"{size / 3600:.0f}h"
    else:
        amount = f"{size / 86400:.0f}d"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def _unusual_time(ts: object) -> str | None:
    """How to show a time that is not an ordinary Unix time, or None if it is one."""
    if ts is None:
        return "-"
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return f"{ts!r:.40} (not a time)"  # a row written by hand (SQLite keeps text)
    if math.isinf(ts):  # PostgreSQL's endless times
        return "never" if ts > 0 else "since always"
    return None


def _when(ts: float | None, now: float) -> str:
    unusual = _unusual_time(ts)
    if unusual is not None:
        return unusual
    assert ts is not None
    local = dt.datetime.fromtimestamp(ts).astimezone()
    return f"{local.isoformat(timespec='milliseconds')} ({ago(ts, now)})"


def short_error(job: Job, width: int = 60) -> str:
    """The last error as one short line (``type: message``), or ``""``.

    Example: ``short_error(job)`` -> ``"ValueError: this job always fails"``
    """
    if not job.errors:
        return ""
    last = job.errors[-1]
    message = str(last.get("message") or "").strip().splitlines()
    line = f"{last.get('type', 'error')}: {message[0] if message else ''}".rstrip(": ")
    return line if len(line) <= width else line[: width - 1] + "…"


def job_to_dict(job: Job) -> dict[str, Any]:
    """The stored fields of a job as plain JSON-ready values (for ``--json``).

    Example: ``json.dumps(job_to_dict(app.get_job(1)))``
    """
    data = {name: getattr(job, name) for name in _FIELDS}
    data["state"] = str(job.state)
    return data


def jobs_table(jobs: Iterable[Job], now: float | None = None, title: str | None = None) -> Table:
    """One row per job: id, state, queue, worker, attempt/max, priority, scheduled, last error.

    Example: ``console.print(jobs_table(app.list_jobs(state="retryable")))``
    """
    now = time.time() if now is None else now
    table = Table(title=title, header_style="bold", box=None, padding=(0, 1), show_edge=False)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("queue", overflow="fold")
    table.add_column("worker", overflow="fold", min_width=12)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("prio", justify="right", no_wrap=True)
    table.add_column("scheduled", no_wrap=True)
    table.add_column("last error", overflow="fold", min_width=16)
    for job in jobs:
        table.add_row(
            str(job.id),
            state_text(job.state),
            job.queue,
            job.worker,
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            ago(job.scheduled_at, now),
            Text(short_error(job), style="red"),
        )
    return table


def job_detail(job: Job, now: float | None = None) -> RenderableType:
    """Every field of one job; args, meta and result as JSON; each error with its traceback.

    Example: ``console.print(job_detail(app.get_job(7)))``
    """
    now = time.time() if now is None else now
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", str(job.id)),
        ("worker", job.worker),
        ("queue", job.queue),
        ("state", state_text(job.state)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("priority", str(job.priority)),
        ("tags", ", ".join(job.tags) or "-"),
        ("timeout", "-" if job.timeout is None else f"{job.timeout:g}s"),
        ("inserted", _when(job.inserted_at, now)),
        ("scheduled", _when(job.scheduled_at, now)),
        ("attempted", _when(job.attempted_at, now)),
        ("finished", _when(job.finished_at, now)),
        ("attempted by", job.attempted_by or "-"),
    ]
    if job.conflict:
        rows.append(("conflict", "yes (a unique job already existed)"))
    for name, value in rows:
        fields.add_row(name, value)
    parts: list[RenderableType] = [fields]
    for label, data in (("args", job.args), ("meta", job.meta), ("result", job.result)):
        parts.append(Text(f"\n{label}:", style="bold"))
        parts.append(JSON.from_data(data, indent=2, default=str))
    parts.append(Text(f"\nerrors ({len(job.errors)}):", style="bold"))
    for error in job.errors:
        at = error.get("at")
        head = f"attempt {error.get('attempt', '?')}"
        if isinstance(at, (int, float)):
            head += f" at {_when(float(at), now)}"
        parts.append(
            Text(f"- {head}: {error.get('type', 'error')}: {error.get('message', '')}", style="red")
        )
        trace = error.get("traceback")
        if trace:
            parts.append(Syntax(str(trace).rstrip(), "pytb", word_wrap=True, padding=(0, 2)))
    return Group(*parts)


def queues_table(
    counts: Mapping[str, Mapping[str, int]],
    limits: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Table:
    """Rows are queues, columns the states that occur (plus ``limit`` when known), and totals.

    Example: ``console.print(queues_table(app.queue_counts()))``
    """
    names = sorted(set(counts) | set(limits or {}))
    states = [s for s in STATES if any(counts.get(name, {}).get(s) for name in names)]
    table = Table(title=title, header_style="bold", show_footer=len(names) > 1)
    table.add_column("queue", footer="total", no_wrap=True)
    if limits is not None:
        table.add_column("limit", justify="right")
    for state in states:
        total = sum(counts.get(name, {}).get(state, 0) for name in names)
        table.add_column(state_text(state), justify="right", footer=str(total))
    table.add_column(
        "total", justify="right", footer=str(sum(sum(c.values()) for c in counts.values()))
    )
    for name in names:
        row = counts.get(name, {})
        cells: list[str] = [name]
        if limits is not None:
            limit = limits.get(name)
            cells.append("-" if limit is None else str(limit))
        cells += [str(row.get(state, 0)) for state in states]
        cells.append(str(sum(row.values())))
        table.add_row(*cells)
    return table


def out_console() -> Console:
    """The console for command output: one-line messages stay one line (greppable)."""
    return Console(highlight=False, soft_wrap=True)


def existing_job(app: App, job_id: int) -> Job:
    """The job with this id, or an :class:`~errands.errors.ErrandsError` saying there is none."""
    job = app.get_job(job_id)
    if job is None:
        raise ErrandsError(f"no job with id {job_id}")
    return job
