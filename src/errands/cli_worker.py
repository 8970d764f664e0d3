"""What ``errands worker`` runs: one worker in this process, or N under a supervisor.

Example::

    run_worker(app, ["default"], concurrency=None, grace=None, console=Console())
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter

import click
from rich.console import Console
from rich.markup import escape

from errands.app import App
from errands.errors import ConfigError
from errands.runtime.affinity import check_supported, pin_worker, worker_index
from errands.runtime.ready import ReadyPipe
from errands.runtime.startup import start_when_reachable
from errands.runtime.supervisor import Supervisor

__all__ = ["check_pin_cpus", "hard_exit", "queue_list", "run_worker", "supervise"]

log = logging.getLogger("errands.cli")

#: How long a stopped worker waits for leftover threads before leaving anyway.
_EXIT_JOIN_SECONDS = 1.0


def queue_list(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None (all the app's queues)."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter(
            f"expected queue names separated by commas, got {value!r}", param_hint="--queues"
        )
    return names


def check_pin_cpus() -> None:
    """``--pin-cpus`` where this system cannot pin processes: a usage error naming it."""
    try:
        check_supported()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _pin_this_worker() -> None:
    try:
        index = worker_index()
        core = pin_worker(index)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    log.info("worker process %d pinned to core %d", index, core)


def hard_exit(code: int) -> None:
    """Leave now if threads are left over (a sync job stuck in a call), after flushing."""
    deadline = time.monotonic() + _EXIT_JOIN_SECONDS
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not main_thread and t.is_alive()]
    if not stuck:
        return
    log.warning(
        "%d thread(s) still running at exit (%s); exiting anyway",
        len(stuck),
        ", ".join(sorted(stuck)),
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


async def _work(
    app: App,
    queues: list[str] | None,
    grace: float | None,
    console: Console,
    ready: ReadyPipe,
) -> Counter[str]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():  # a second signal while stopping: leave at once
            console.print(f"[red]signal {signum} again: exiting without waiting for jobs[/]")
            sys.stdout.flush()
            os._exit(128 + signum)
        log.info("signal %d received: stopping (send it again to exit at once)", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, int(sig))
    try:
        # A database that cannot be reached yet (restarting, DNS not ready) is waited
        # for; a signal meanwhile stops the worker as if it had run no job.
        # Under --processes N, the supervisor learns this child has started right
        # before its first claim, so a job that kills the process is a crash.
        node = await start_when_reachable(
            lambda: app._start(queues, ready.report, grace=grace), stop
        )
        if node is None:
            return Counter()
        limits = ", ".join(f"{name}({c.limit})" for name, c in node.queue_configs.items())
        console.print(
            f"errands worker {escape(node.name)} started: queues {escape(limits)}; "
            f"{len(app.registry)} worker(s); database {escape(app.database_url.masked)}"
        )
        sys.stdout.flush()
        await stop.wait()
        outcomes = node.outcomes
    finally:
        try:
            await app.stop(grace)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return outcomes


def run_worker(
    app: App,
    queues: list[str] | None,
    *,
    concurrency: int | None,
    grace: float | None,
    console: Console,
    pin_cpus: bool = False,
) -> None:
    """Run ``app``'s queues in this process until SIGTERM/SIGINT; print a summary.

    While the database cannot be reached at start-up, keeps trying (see
    :func:`~errands.runtime.startup.start_when_reachable`); other start-up
    errors are raised. Under ``--processes N``, tells the supervisor once the
    node is about to claim its first job (see :mod:`errands.runtime.ready`).
    With ``pin_cpus``, first pins this process to a core of its own (see
    :mod:`errands.runtime.affinity`).
    """
    if pin_cpus:
        _pin_this_worker()
    ready = ReadyPipe.from_env()  # set when a supervisor started this process
    if concurrency is not None:
        chosen = queues if queues is not None else list(app.queues)
        app.queues = {
            **app.queues,
            **{
                name: dataclasses.replace(app.queue_config(name), limit=concurrency)
                for name in chosen
            },
        }
    if not len(app.registry):
        log.warning("the app registers no workers: jobs will wait for a worker that knows them")
    outcomes = asyncio.run(_work(app, queues, grace, console, ready))
    summary = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items())) or "no jobs run"
    console.print(f"errands worker stopped ({summary})")


def supervise(
    app_spec: str,
    processes: int,
    *,
    queue_names: str | None,
    concurrency: int | None,
    grace: float | None,
    log_level: str,
    pin_cpus: bool = False,
) -> int:
    """Run ``processes`` copies of this worker command; return the worst exit code."""
    command = [sys.executable, "-m", "errands", "--app", app_spec, "worker"]
    command += ["--log-level", log_level]
    if pin_cpus:
        command.append("--pin-cpus")  # each child pins itself, by its ERRANDS_WORKER_INDEX
    if queue_names is not None:
        command += ["--queues", queue_names]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if grace is not None:
        command += ["--grace", str(grace)]
    log.info("supervising %d worker processes", processes)
    return Supervisor(command, processes).run()
