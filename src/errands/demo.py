"""``errands demo``: a few dozen example jobs run live, showing every outcome.

The demo app has sync, async and class-based workers, and a handful of jobs
that each show one behaviour: a job that fails twice then succeeds, one that
always fails and is discarded, one scheduled a few seconds ahead, one that
snoozes, one that cancels itself, one cancelled before it runs, and two with
opposite priorities. It runs them with ``await app.start()`` under a live
progress bar, stops when every job is finished (or at a time cap), and
reports whether each one ended as expected (the report itself is
:mod:`errands.demo_report`).

Example::

    from errands.demo import DemoTimings, run_demo

    exit_code = run_demo(n_jobs=20, timings=DemoTimings(schedule_in=1, snooze=0.5))
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import errands
from errands.cli_render import state_text
from errands.demo_report import PRIORITY_LAST, print_report
from errands.job import FINISHED_STATES

__all__ = [
    "DEMO_QUEUES",
    "MIN_JOBS",
    "DemoTimings",
    "Expected",
    "build_demo_app",
    "enqueue_demo_jobs",
    "run_demo",
]

#: The demo's queues and their local limits.
DEMO_QUEUES: dict[str, int] = {"default": 10, "mail": 5, "reports": 3}

#: The demo's one-behaviour jobs; ``n_jobs`` must be at least this.
MIN_JOBS = 8


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """The demo's clock, in seconds; tests shrink it.

    Example: ``DemoTimings(schedule_in=0.5, snooze=0.3, work=(0.0, 0.01))``
    """

    #: Delay between attempts of the demo's failing jobs (their ``backoff()``).
    retry_backoff: float = 1.0
    #: How far ahead the scheduled job is enqueued.
    schedule_in: float = 3.0
    #: How long the snoozing job snoozes.
    snooze: float = 2.0
    #: Range of how long a bulk job's body takes.
    work: tuple[float, float] = (0.05, 0.4)
    rescue_after: float = 5.0
    stage_interval: float = 0.2
    poll_interval: float = 0.1
    #: How often the progress bar reads the jobs table.
    refresh: float = 0.2
    #: Stop waiting after this long, whatever state the jobs are in.
    timeout: float = 45.0


@dataclass(frozen=True, slots=True)
class Expected:
    """How one demo job should end: its state, and its attempt count when it matters.

    Example: ``Expected(7, "fails twice, then succeeds", "completed", attempt=3)``
    """

    job_id: int
    label: str
    state: str
    attempt: int | None = None
    #: The last attempt must start at least this many seconds after the insert.
    not_before: float | None = None

    def problem(self, job: errands.Job | None) -> str | None:
        """Why ``job`` did not end as expected, or ``None`` when it did."""
        if job is None:
            return "missing"
        if job.state != self.state:
            return f"ended {job.state}"
        if self.attempt is not None and job.attempt != self.attempt:
            return f"attempt {job.attempt}, not {self.attempt}"
        if self.not_before is not None:
            # 50 ms of slack: insert and fetch times come from two clock reads.
            ran_after = (job.attempted_at or 0.0) - job.inserted_at
            if ran_after < self.not_before - 0.05:
                return f"ran {ran_after:.1f}s after insert, not >= {self.not_before:g}s"
        return None

    def met_by(self, job: errands.Job | None) -> bool:
        """True when ``job`` ended as expected."""
        return self.problem(job) is None


def build_demo_app(database_url: str, timings: DemoTimings | None = None) -> errands.App:
    """The demo app: queues ``default``, ``mail``, ``reports`` and the ``demo.*`` workers.

    Example: ``app = build_demo_app("sqlite:///demo.db"); app.drain()``
    """
    clock = timings or DemoTimings()
    app = errands.App(
        database_url,
        queues=DEMO_QUEUES,
        rescue_after=clock.rescue_after,
        stage_interval=clock.stage_interval,
        poll_interval=clock.poll_interval,
        grace_period=2.0,
    )
    snoozed: set[int] = set()
    low, high = clock.work

    @app.job(name="demo.send_email", queue="mail")
    def send_email(to: str, subject: str) -> dict[str, str]:
        time.sleep(random.uniform(low, high))
        return {"sent_to": to, "subject": subject}

    @app.job(name="demo.fetch_page")
    async def fetch_page(url: str) -> dict[str, Any]:
        await asyncio.sleep(random.uniform(low, high))
        return {"url": url, "status": 200}

    @app.job(name="demo.remind", queue="mail")
    def remind(note: str) -> str:
        return f"reminded: {note}"

    class QuickRetry(errands.Worker):
        """Failing demo jobs retry after ``retry_backoff`` s instead of the default ~17 s."""

        def backoff(self, job: errands.Job) -> float:
            return clock.retry_backoff

    @app.register
    class Report(errands.Worker, name="demo.Report", queue="reports", max_attempts=3):
        def perform(self, job: errands.Job) -> dict[str, Any]:
            time.sleep(random.uniform(low, high))
            return {"report": job.args["name"], "priority": job.priority}

    @app.register
    class Flaky(QuickRetry, name="demo.Flaky", max_attempts=5):
        def perform(self, job: errands.Job) -> str:
            if job.attempt < 3:
                raise ConnectionError(f"upstream timed out (attempt {job.attempt})")
            return f"succeeded on attempt {job.attempt}"

    @app.register
    class Doomed(QuickRetry, name="demo.Doomed", max_attempts=2):
        def perform(self, job: errands.Job) -> None:
            raise ValueError("this job always fails")

    @app.register
    class Snoozy(errands.Worker, name="demo.Snoozy"):
        async def perform(self, job: errands.Job) -> dict[str, int]:
            if job.id not in snoozed:
                snoozed.add(job.id)
                raise errands.Snooze(clock.snooze)
            return {"snoozes": 1}

    @app.register
    class Unwanted(errands.Worker, name="demo.Unwanted"):
        def perform(self, job: errands.Job) -> None:
            raise errands.Cancel("the customer closed their account")

    return app


def enqueue_demo_jobs(
    app: errands.App, n_jobs: int = 40, timings: DemoTimings | None = None
) -> list[Expected]:
    """Insert ``n_jobs`` demo jobs (a bulk batch plus the one-behaviour jobs).

    Example: ``expected = enqueue_demo_jobs(build_demo_app(url), 20)``
    """
    timings = timings or DemoTimings()
    if n_jobs < MIN_JOBS:
        raise errands.ConfigError(f"the demo needs at least {MIN_JOBS} jobs, got {n_jobs}")
    rest = n_jobs - MIN_JOBS
    emails, pages = rest // 2, rest * 3 // 10
    batch = [
        app.new_job("demo.send_email", {"to": f"user{i}@example.com", "subject": "welcome"})
        for i in range(emails)
    ]
    batch += [
        app.new_job("demo.fetch_page", {"url": f"https://example.com/page/{i}"})
        for i in range(pages)
    ]
    batch += [
        app.new_job("demo.Report", {"name": f"report-{i}"}, priority=(i % 3) * 4)
        for i in range(rest - emails - pages)
    ]
    expected = [Expected(job.id, "bulk", "completed", 1) for job in app.enqueue_many(batch)]

    def add(
        label: str,
        state: str,
        attempt: int | None,
        job: errands.Job,
        not_before: float | None = None,
    ) -> None:
        expected.append(Expected(job.id, label, state, attempt, not_before))

    add(
        "fails twice, then succeeds",
        "completed",
        3,
        app.enqueue("demo.Flaky", {"service": "payments"}),
        2 * timings.retry_backoff,
    )
    add("always fails (max_attempts=2)", "discarded", 2, app.enqueue("demo.Doomed"))
    add(
        f"scheduled {timings.schedule_in:g}s ahead",
        "completed",
        1,
        app.enqueue("demo.remind", {"note": "water the plants"}, schedule_in=timings.schedule_in),
        timings.schedule_in,
    )
    add(
        f"snoozes {timings.snooze:g}s once",
        "completed",
        2,  # a snooze spends no attempt, but attempt counts every run
        app.enqueue("demo.Snoozy"),
        timings.snooze,
    )
    add("raises errands.Cancel", "cancelled", 1, app.enqueue("demo.Unwanted"))
    victim = app.enqueue("demo.send_email", {"to": "nobody@example.com", "subject": "never"})
    app.cancel_job(victim.id)
    add("cancelled before it ran", "cancelled", 0, victim)
    add("priority 0", "completed", 1, app.enqueue("demo.Report", {"name": "urgent"}, priority=0))
    add(PRIORITY_LAST, "completed", 1, app.enqueue("demo.Report", {"name": "whenever"}, priority=9))
    return expected


def _snapshot(app: errands.App, ids: Sequence[int]) -> dict[int, errands.Job]:
    wanted = set(ids)
    found = {job.id: job for job in app.list_jobs(limit=len(wanted)) if job.id in wanted}
    for job_id in wanted - found.keys():
        job = app.get_job(job_id)
        if job is not None:
            found[job_id] = job
    return found


def _state_line(jobs: dict[int, errands.Job]) -> str:
    counts = Counter(str(job.state) for job in jobs.values())
    return "  ".join(f"{state_text(s).markup} {n}" for s, n in sorted(counts.items()))


async def _run(
    app: errands.App, expected: Sequence[Expected], timings: DemoTimings, console: Console
) -> tuple[dict[int, errands.Job], Counter[str]]:
    ids = [item.job_id for item in expected]
    loop = asyncio.get_running_loop()
    node = await app.start()
    deadline = loop.time() + timings.timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[states]}"),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("finished", total=len(ids), states="")
            while True:
                jobs = await asyncio.to_thread(_snapshot, app, ids)
                done = sum(job.state in FINISHED_STATES for job in jobs.values())
                progress.update(task, completed=done, states=_state_line(jobs))
                if done == len(ids) or loop.time() >= deadline:
                    break
                await asyncio.sleep(timings.refresh)
    finally:
        await app.stop()
    return await asyncio.to_thread(_snapshot, app, ids), node.outcomes


def run_demo(
    database_url: str | None = None,
    n_jobs: int = 40,
    *,
    timings: DemoTimings | None = None,
    keep: bool = False,
    console: Console | None = None,
) -> int:
    """Run the demo; return 0 when every job ended as expected, else 1.

    ``database_url`` defaults to a fresh temporary SQLite file, deleted at the
    end unless ``keep``. Example: ``sys.exit(run_demo(n_jobs=20))``
    """
    timings = timings or DemoTimings()
    console = console or Console()
    tmpdir: str | None = None
    if database_url is None:
        tmpdir = tempfile.mkdtemp(prefix="errands-demo-")
        database_url = f"sqlite:///{os.path.join(tmpdir, 'demo.db')}"
    try:
        app = build_demo_app(database_url, timings)
        try:
            limits = ", ".join(f"{name}({limit})" for name, limit in DEMO_QUEUES.items())
            console.print(
                f"[bold]errands demo[/]: {n_jobs} jobs on queues {limits}, "
                f"database {escape(app.database_url.masked)}",
                soft_wrap=True,
            )
            app.migrate()  # PostgreSQL apps do not migrate on their own
            started = time.monotonic()
            expected = enqueue_demo_jobs(app, n_jobs, timings)
            jobs, outcomes = asyncio.run(_run(app, expected, timings, console))
            code = print_report(console, expected, jobs, outcomes, time.monotonic() - started)
        finally:
            app.close()
    finally:
        if tmpdir is not None and not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
    url = app.database_url.url
    if tmpdir is None or keep:
        console.print(
            f"next: [cyan]errands --database-url {escape(url)} jobs --state discarded"
            f"[/]  (or [cyan]queues[/], [cyan]job ID[/], [cyan]retry ID[/])",
            soft_wrap=True,
        )
    else:
        console.print(
            "next: [cyan]errands demo --keep[/] keeps the database, to look at it "
            "with [cyan]errands jobs[/] and [cyan]errands job ID[/]",
            soft_wrap=True,
        )
    return code
