"""``errands`` commands that change jobs and queues: retry, cancel, delete, pause, resume, scale.

Registered on the ``errands`` group by :mod:`errands.cli`. They work with just
``--database-url`` (no app needed). ``retry``, ``cancel`` and ``delete`` take
one job ``ID``, or filters (``--queue``, ``--worker``, ``--state``, repeatable)
to change every matching job in one statement; with neither they refuse.
``pause``, ``resume`` and ``scale`` act on every node through the
``errands_queues`` table.

Example::

    errands retry 42
    errands retry --queue mail --state discarded
    errands delete --state completed --state cancelled
    errands pause mail; errands resume mail
    errands scale mail 20; errands scale mail --reset
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from errands.bulk import BULK_STATES
from errands.cli_render import existing_job, out_console
from errands.engines.base import QueueState
from errands.errors import ErrandsError

if TYPE_CHECKING:
    from errands.app import App
    from errands.cli import CliState

__all__ = ["COMMANDS", "control_table"]


_EXAMPLE_STATE = {"retry": "discarded", "cancel": "scheduled", "delete": "completed"}


def _filters(
    command: str, job_id: int | None, queue: str | None, worker: str | None, states: tuple[str, ...]
) -> bool:
    """True for a bulk call; refuses both an ID and filters, and neither."""
    filtered = bool(queue or worker or states)
    if job_id is not None and filtered:
        raise click.UsageError(
            f"errands {command}: give a job ID or filters (--queue, --worker, --state), not both"
        )
    if job_id is None and not filtered:
        raise click.UsageError(
            f"errands {command} needs a job ID, or filters to {command} many jobs: "
            f"--queue, --worker, --state (e.g. errands {command} --queue mail --state "
            f"{_EXAMPLE_STATE[command]})"
        )
    return filtered


def _bulk_command(command: str, summary: str, one: Callable[[App, int], str]) -> click.Command:
    states = BULK_STATES[f"{command}_jobs"]
    done = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}[command]

    @click.command(name=command, help=summary)
    @click.argument("job_id", type=click.IntRange(min=1), metavar="[ID]", required=False)
    @click.option("--queue", help="Only jobs of this queue.")
    @click.option("--worker", "worker_name", metavar="WORKER", help="Only jobs of this worker.")
    @click.option(
        "--state",
        "job_states",
        multiple=True,
        type=click.Choice(states),
        help=f"Only jobs in this state (repeatable; default: {', '.join(states)}).",
    )
    @click.pass_obj
    def run(
        state: CliState,
        job_id: int | None,
        queue: str | None,
        worker_name: str | None,
        job_states: tuple[str, ...],
    ) -> None:
        if not _filters(command, job_id, queue, worker_name, job_states):
            assert job_id is not None
            out_console().print(one(state.open(), job_id))
            return
        bulk = getattr(state.open(), f"{command}_jobs")
        count = bulk(queue=queue, worker=worker_name, state=list(job_states) or None)
        out_console().print(f"{done} {count} job(s)")

    return run


def _retry_one(app: App, job_id: int) -> str:
    before = existing_job(app, job_id)
    after = app.retry_job(job_id)
    if after is None:
        raise ErrandsError(f"job {job_id} cannot be retried (state {before.state})")
    return f"job {job_id} retried: {before.state} -> {after.state}"


def _cancel_one(app: App, job_id: int) -> str:
    before = existing_job(app, job_id)
    if app.cancel_job(job_id) is None:
        raise ErrandsError(f"job {job_id} cannot be cancelled (state {before.state})")
    return f"job {job_id} cancelled (was {before.state})"


def _delete_one(app: App, job_id: int) -> str:
    before = existing_job(app, job_id)
    if not app.delete_job(job_id):
        raise ErrandsError(f"job {job_id} cannot be deleted (state {before.state})")
    return f"job {job_id} deleted (was {before.state})"


retry = _bulk_command(
    "retry",
    "Run a retryable or finished job again now, or every job matching the filters.\n\n"
    "Example: errands retry 42; errands retry --queue mail --state discarded",
    _retry_one,
)
cancel = _bulk_command(
    "cancel",
    "Cancel a job that has not finished (executing ones too), or every matching job.\n\n"
    "Example: errands cancel 42; errands cancel --worker reports.Nightly",
    _cancel_one,
)
delete = _bulk_command(
    "delete",
    "Delete a job that is not executing, or every matching one.\n\n"
    "Example: errands delete 42; errands delete --state completed --state cancelled",
    _delete_one,
)


@click.command()
@click.argument("queue")
@click.pass_obj
def pause(state: CliState, queue: str) -> None:
    """Stop claiming jobs of QUEUE on every node (running jobs finish; survives restarts).

    Example: errands pause mail
    """
    state.open().pause_queue(queue)
    out_console().print(f"queue {escape(queue)} paused on every node")


@click.command()
@click.argument("queue")
@click.pass_obj
def resume(state: CliState, queue: str) -> None:
    """Claim jobs of QUEUE again on every node. Example: errands resume mail"""
    state.open().resume_queue(queue)
    out_console().print(f"queue {escape(queue)} resumed on every node")


@click.command()
@click.argument("queue")
@click.argument("limit", type=click.IntRange(min=1), required=False, metavar="[N]")
@click.option("--reset", is_flag=True, help="Back to each node's configured limit.")
@click.pass_obj
def scale(state: CliState, queue: str, limit: int | None, reset: bool) -> None:
    """Run up to N jobs of QUEUE at once on every node.

    Example: errands scale mail 20; errands scale mail --reset
    """
    if (limit is None) == (not reset):
        raise click.UsageError("errands scale takes a limit N or --reset (one of them)")
    state.open().scale_queue(queue, limit)
    if limit is None:
        out_console().print(f"queue {escape(queue)} back to each node's configured limit")
    else:
        out_console().print(
            f"queue {escape(queue)} runs up to {limit} job(s) at once on every node"
        )


def _yes_no(value: bool | None, yes: str, no: str) -> str:
    return "-" if value is None else (yes if value else no)


def control_table(states: Mapping[str, QueueState]) -> Table:
    """What ``errands queues`` shows under the counts: the instructions every node follows.

    Example: ``console.print(control_table(app.queue_states()))``
    """
    table = Table(title="queue control (every node)", header_style="bold")
    for column in ("queue", "paused", "limit override", "running", "changed"):
        table.add_column(column, justify="left" if column in ("queue", "changed") else "right")
    for name, state in sorted(states.items()):
        changed = dt.datetime.fromtimestamp(state.updated_at, dt.UTC)
        table.add_row(
            name,
            _yes_no(state.paused, "yes", "no"),
            "-" if state.limit is None else str(state.limit),
            _yes_no(state.running, "started", "stopped"),
            changed.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    return table


#: The commands :mod:`errands.cli` adds to its group.
COMMANDS: tuple[click.Command, ...] = (retry, cancel, delete, pause, resume, scale)
