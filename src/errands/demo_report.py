"""The report printed at the end of ``errands demo``: did every job end as expected?

It prints the demo's jobs by queue and state, one row per kind of job (what
was expected, what happened), the attempt outcomes the node saw, and a
verdict. Running the demo lives in :mod:`errands.demo`.

Example::

    from errands.demo_report import print_report

    code = print_report(console, expected, jobs, outcomes, elapsed=4.2)   # 0 or 1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import errands
from errands.cli_render import queues_table, state_text

if TYPE_CHECKING:
    # Only for annotations: errands.demo imports this module at run time.
    from errands.demo import Expected

__all__ = ["PRIORITY_LAST", "print_report"]

#: Label of the demo job enqueued with priority 9; the report checks that it
#: started after every other job of its queue.
PRIORITY_LAST = "priority 9 (last in queue)"


def _priority_held(jobs: dict[int, errands.Job], last: Expected) -> bool:
    job = jobs.get(last.job_id)
    if job is None or job.attempted_at is None:
        return False
    others = [
        j.attempted_at
        for j in jobs.values()
        if j.queue == job.queue and j.id != job.id and j.attempted_at is not None
    ]
    return all(at <= job.attempted_at for at in others)


def print_report(
    console: Console,
    expected: Sequence[Expected],
    jobs: dict[int, errands.Job],
    outcomes: Counter[str],
    elapsed: float,
) -> int:
    """Print the demo's tables and verdict; return 0 when every job ended as expected, else 1.

    ``jobs`` maps ids to their final rows, ``outcomes`` counts the attempt
    outcomes the node saw, ``elapsed`` is seconds since the jobs were enqueued.
    Example: ``code = print_report(Console(), expected, jobs, node.outcomes, 4.2)``
    """
    counts: dict[str, dict[str, int]] = {}
    for job in jobs.values():
        row = counts.setdefault(job.queue, {})
        row[str(job.state)] = row.get(str(job.state), 0) + 1
    console.print(queues_table(counts, title="demo jobs by queue and state"))

    scenarios = Table(title="what each kind of job did", header_style="bold")
    for name in ("job", "id", "expected", "got", "att.", "ok"):
        scenarios.add_column(
            name, justify="right" if name in ("id", "att.") else "left", overflow="fold"
        )
    bulk = [item for item in expected if item.label == "bulk"]
    failed = [item for item in expected if not item.met_by(jobs.get(item.job_id))]
    if bulk:
        good = sum(item.met_by(jobs.get(item.job_id)) for item in bulk)
        scenarios.add_row(
            f"{len(bulk)} bulk jobs (enqueue_many)",
            "",
            state_text("completed"),
            f"{good} completed",
            "",
            _mark(None if good == len(bulk) else f"{len(bulk) - good} not"),
        )
    for item in expected:
        if item.label == "bulk":
            continue
        found = jobs.get(item.job_id)
        problem = item.problem(found)
        if problem is None and item.label == PRIORITY_LAST and not _priority_held(jobs, item):
            problem = "started before a lower number"
            failed.append(item)
        scenarios.add_row(
            item.label,
            str(item.job_id),
            state_text(item.state),
            state_text(str(found.state)) if found else "missing",
            str(found.attempt) if found else "-",
            _mark(problem),
        )
    console.print(scenarios)
    console.print(
        "attempt outcomes seen by the worker: "
        + ", ".join(f"{state} {n}" for state, n in sorted(outcomes.items()))
    )
    if failed:
        console.print(
            f"[bold red]{len(failed)} job(s) did not end as expected[/] "
            f"(after {elapsed:.1f}s): ids {', '.join(str(i.job_id) for i in failed)}"
        )
        return 1
    console.print(f"[bold green]all {len(expected)} jobs ended as expected[/] in {elapsed:.1f}s")
    return 0


def _mark(problem: str | None) -> str:
    return "[green]yes[/]" if problem is None else f"[bold red]NO[/]: {escape(problem)}"
