"""``errands`` commands that read: jobs, job, queues.

Registered on the ``errands`` group by :mod:`errands.cli`; they work with just
``--database-url`` (no app needed).

Example::

    errands jobs --state retryable
    errands job 42
    errands queues
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from errands.cli_control import control_table
from errands.cli_render import (
    existing_job,
    job_detail,
    job_to_dict,
    jobs_table,
    out_console,
    queues_table,
)
from errands.job import JobState

if TYPE_CHECKING:
    from errands.cli import CliState

__all__ = ["READ_COMMANDS"]

_job_id = click.argument("job_id", type=click.IntRange(min=1), metavar="ID")


@click.command()
@click.option("--state", "job_state", type=click.Choice([s.value for s in JobState]))
@click.option("--queue", help="Only this queue.")
@click.option("--worker", "worker_name", metavar="WORKER", help="Only this worker name.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def jobs(
    state: CliState,
    job_state: str | None,
    queue: str | None,
    worker_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first.

    Example: errands jobs --state retryable --queue mail
    """
    found = state.open().list_jobs(state=job_state, queue=queue, worker=worker_name, limit=limit)
    if as_json:
        click.echo(json.dumps([job_to_dict(job) for job in found], indent=2, default=str))
        return
    console = out_console()
    if not found:
        console.print("no jobs match")
        return
    console.print(jobs_table(found))
    more = " (use --limit for more)" if len(found) == limit else ""
    console.print(f"{len(found)} job(s){more}")


@click.command()
@_job_id
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def job(state: CliState, job_id: int, as_json: bool) -> None:
    """Show one job in full: args, result, and every error with its traceback.

    Example: errands job 42
    """
    found = existing_job(state.open(), job_id)
    if as_json:
        click.echo(json.dumps(job_to_dict(found), indent=2, default=str))
    else:
        out_console().print(job_detail(found))


@click.command()
@click.pass_obj
def queues(state: CliState) -> None:
    """Job counts by queue and state (with --app: each queue's limit too), and the
    pause/scale/start/stop instructions every node follows.

    Example: errands queues
    """
    app = state.open()
    limits = {name: c.limit for name, c in app.queues.items()} if state.app_spec else None
    counts = app.queue_counts()
    controls = app.queue_states()
    if not counts and not limits:
        out_console().print("no jobs")
    else:
        out_console().print(queues_table(counts, limits))
    if controls:
        out_console().print(control_table(controls))


READ_COMMANDS = (jobs, job, queues)
