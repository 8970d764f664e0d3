"""The ``errands`` command (also ``python -m errands``).

The app is found with ``--app module:attr`` (or ``$ERRANDS_APP``; ``module``
alone means ``module:app``), importing from the current directory. Commands
that only read or change the jobs table (``jobs``, ``job``, ``retry``,
``cancel``, ``delete``, ``queues``, ``migrate``) also work without an app,
given ``--database-url`` (or ``$ERRANDS_DATABASE_URL``). ``--database-url`` is
only used when no ``--app`` is given: an app keeps the database it was built
with (a different URL is reported and ignored). ``worker`` and ``enqueue``
need ``--app``, since only the app knows its workers.

Every :class:`errands.ErrandsError` is shown as one red ``error: ...`` line
with exit code 1; bad command-line arguments exit with 2.

Example::

    errands --app myproject.jobs:app worker --queues default,mail
    errands --app myproject.jobs:app enqueue myproject.jobs.send_email --args '{"to": "a@b.c"}'
    errands --database-url sqlite:///errands.db jobs --state retryable
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape

import errands
from errands.app import App
from errands.bench.run import bench_command
from errands.cli_control import COMMANDS as CONTROL_COMMANDS
from errands.cli_read import READ_COMMANDS
from errands.cli_render import out_console
from errands.cli_worker import check_pin_cpus, hard_exit, queue_list, run_worker, supervise
from errands.config import mask_url, parse_database_url
from errands.demo import MIN_JOBS, DemoTimings, run_demo
from errands.errors import ErrandsError, UnknownWorkerError

__all__ = ["CliError", "cli", "load_app", "main"]

log = logging.getLogger("errands.cli")

#: How long a stopped worker waits for leftover threads before leaving anyway.
_EXIT_JOIN_SECONDS = 1.0


class CliError(click.ClickException):
    """A failure shown as one red ``error: ...`` line on stderr, exit code 1.

    Example: ``raise CliError("no job with id 7")``
    """

    def show(self, file: Any = None) -> None:
        """Print the one-line message (no traceback)."""
        _err().print(f"[bold red]error:[/] {escape(self.message)}")


class ErrandsGroup(click.Group):
    """A click group that turns every :class:`errands.ErrandsError` into a :class:`CliError`.

    Example: ``@click.group(cls=ErrandsGroup)``
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; library errors become one-line messages."""
        try:
            return super().invoke(ctx)
        except ErrandsError as exc:
            raise CliError(str(exc)) from None


def load_app(spec: str) -> App:
    """Import ``module:attr`` (``module`` alone: ``module:app``) from the current directory.

    Example: ``load_app("myproject.jobs:app")``
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise click.UsageError(f"could not import {spec!r}: expected --app module:attr")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise click.UsageError(f"could not import {spec!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(found, App):
        raise click.UsageError(
            f"could not import {spec!r}: {module_name}.{attr} is a {type(found).__name__}, "
            "not an errands.App"
        )
    if found.import_path is None:  # how executor="process" queues' children import it
        found.import_path = f"{module_name}:{attr}"
    return found


@dataclasses.dataclass
class CliState:
    """What the global options chose; builds the app once, on first use.

    Example: ``CliState(None, "sqlite:///errands.db").open().list_jobs()``
    """

    app_spec: str | None
    database_url: str | None
    url_on_command_line: bool = False
    app: App | None = None

    def open(self, *, needs_app: str | None = None, create: bool = False) -> App:
        """The app from ``--app``, else ``App(--database-url)``.

        ``needs_app`` names a command that cannot run without ``--app``;
        ``create=False`` refuses to create a missing SQLite file.
        """
        if self.app is not None:
            return self.app
        if self.app_spec:
            app = load_app(self.app_spec)
            if self.database_url and _normal(self.database_url) != app.database_url.url:
                _err().print(
                    f"[yellow]warning:[/] ignoring --database-url "
                    f"{escape(mask_url(self.database_url))}: the app from --app uses "
                    f"{escape(app.database_url.masked)}"
                )
        elif needs_app:
            raise click.UsageError(
                f"'errands {needs_app}' needs --app module:attr (or $ERRANDS_APP): "
                "only the app knows its workers"
            )
        else:
            app = App(self.database_url)
            url = app.database_url
            missing = url.path != ":memory:" and not os.path.exists(url.path)
            if url.dialect == "sqlite" and missing and not create:
                raise CliError(
                    f"no database at {url.path!r} ({url.url}): pass --database-url "
                    "or set $ERRANDS_DATABASE_URL (errands migrate creates it)"
                )
        self.app = app
        return app

    def close(self) -> None:
        """Close the app's connections, if one was opened."""
        if self.app is not None:
            self.app.close()


def _normal(url: str) -> str:
    try:
        return parse_database_url(url).url
    except ErrandsError:
        return url


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


_job_id = click.argument("job_id", type=click.IntRange(min=1), metavar="ID")


@click.group(cls=ErrandsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--app",
    "app_spec",
    envvar="ERRANDS_APP",
    metavar="MODULE:ATTR",
    show_envvar=True,
    help="The errands.App to use, e.g. myproject.jobs:app.",
)
@click.option(
    "--database-url",
    envvar="ERRANDS_DATABASE_URL",
    metavar="URL",
    show_envvar=True,
    help="Database to use when no --app is given, e.g. sqlite:///errands.db.",
)
@click.version_option(errands.__version__, prog_name="errands")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, database_url: str | None) -> None:
    """Durable background jobs kept in your database.

    \b
    Examples:
      errands --app myproject.jobs:app worker
      errands --database-url sqlite:///errands.db jobs --state retryable
      errands demo
    """
    source = ctx.get_parameter_source("database_url")
    ctx.obj = CliState(
        app_spec or None,
        database_url or None,
        url_on_command_line=source is ParameterSource.COMMANDLINE,
    )
    ctx.call_on_close(ctx.obj.close)


# -- worker ---------------------------------------------------------------------------
@cli.command()
@click.option(
    "--queues",
    "queue_names",
    metavar="Q1,Q2",
    help="Run only these queues (default: the app's queues).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run up to N jobs at once per queue, overriding each queue's limit.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run N worker processes under one supervisor (every core).",
)
@click.option(
    "--pin-cpus",
    is_flag=True,
    envvar="ERRANDS_PIN_CPUS",
    help="Keep each worker process's loop and database threads on a core of its own "
    "(Linux; def job bodies still use every core; see docs/multi-node.md).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="At shutdown, wait this long for running jobs (default: the app's).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.pass_obj
def worker(
    state: CliState,
    queue_names: str | None,
    concurrency: int | None,
    processes: int,
    pin_cpus: bool,
    grace: float | None,
    log_level: str,
) -> None:
    """Run the app's queues until SIGTERM or Ctrl-C.

    Example: errands --app myproject.jobs:app worker --queues default,mail --processes 2
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    queues = queue_list(queue_names)
    if pin_cpus:
        check_pin_cpus()  # in the supervisor too: not N children failing one by one
    app = state.open(needs_app="worker")
    if processes > 1:
        assert state.app_spec is not None  # open(needs_app=...) refused otherwise
        code = supervise(
            state.app_spec,
            processes,
            queue_names=queue_names,
            concurrency=concurrency,
            pin_cpus=pin_cpus,
            grace=grace,
            log_level=log_level,
        )
        state.close()
        sys.exit(code)
    run_worker(
        app, queues, concurrency=concurrency, pin_cpus=pin_cpus, grace=grace, console=out_console()
    )
    state.close()
    hard_exit(0)


# -- enqueue --------------------------------------------------------------------------
@cli.command()
@click.argument("worker_name", metavar="WORKER")
@click.option(
    "--args",
    "args_json",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="The job's args, a JSON object.",
)
@click.option("--queue", help="Queue (default: the worker's).")
@click.option("--priority", type=int, help="0 (first) to 9 (last).")
@click.option(
    "--in",
    "schedule_in",
    type=float,
    metavar="SECONDS",
    help="Run no sooner than this many seconds from now.",
)
@click.option("--max-attempts", type=int, help="Attempts before the job is discarded.")
@click.pass_obj
def enqueue(
    state: CliState,
    worker_name: str,
    args_json: str,
    queue: str | None,
    priority: int | None,
    schedule_in: float | None,
    max_attempts: int | None,
) -> None:
    """Insert a job for a registered WORKER and print its id.

    Example: errands --app tasks:app enqueue tasks.add --args '{"a": 1, "b": 2}' --in 60
    """
    try:
        args = json.loads(args_json)
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON ({args_json!r}): {exc}", param_hint="--args"
        ) from None
    if not isinstance(args, dict):
        raise click.BadParameter(
            f"must be a JSON object like '{{\"x\": 1}}', got {args_json!r}", param_hint="--args"
        )
    given: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "schedule_in": schedule_in,
        "max_attempts": max_attempts,
    }
    options = {name: value for name, value in given.items() if value is not None}
    app = state.open(needs_app="enqueue")
    try:
        job = app.enqueue(worker_name, args, **options)
    except UnknownWorkerError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(str(job.id))
    _err().print(
        f"enqueued job {job.id}: {escape(job.worker)} on queue {escape(job.queue)} ({job.state})"
    )


# jobs, job, queues: see errands.cli_read; retry, cancel, delete (one job or many),
# pause, resume, scale: see errands.cli_control
for _command in (*READ_COMMANDS, *CONTROL_COMMANDS, bench_command):
    cli.add_command(_command)


@cli.command()
@click.pass_obj
def migrate(state: CliState) -> None:
    """Create or upgrade errands' tables and print the schema version.

    Example: errands --database-url postgresql://localhost/app migrate
    """
    app = state.open(create=True)
    version = app.migrate()
    out_console().print(f"schema version {version} ({escape(app.database_url.masked)})")


@cli.command()
@click.option(
    "--database-url",
    "demo_url",
    metavar="URL",
    help="Database for the demo (default: a fresh temporary SQLite file).",
)
@click.option(
    "--jobs",
    "n_jobs",
    type=click.IntRange(min=MIN_JOBS),
    default=40,
    show_default=True,
    help="How many jobs to enqueue.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary database to look at afterwards.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=45.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.pass_context
def demo(ctx: click.Context, demo_url: str | None, n_jobs: int, keep: bool, timeout: float) -> None:
    """Enqueue a few dozen example jobs and run them live: retries, snoozes, cancels.

    Exit code 0 when every job ended as expected. Example: errands demo --keep
    """
    state: CliState = ctx.obj
    url = demo_url or (state.database_url if state.url_on_command_line else None)
    ctx.exit(run_demo(url, n_jobs, timings=DemoTimings(timeout=timeout), keep=keep))


def main(argv: Sequence[str] | None = None) -> None:
    """The console-script entry point.

    Example: ``main(["jobs", "--state", "retryable"])``
    """
    cli.main(args=list(argv) if argv is not None else None, prog_name="errands")
