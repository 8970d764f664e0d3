"""Cron (invariant 6) on every engine: a slot is inserted at most once across nodes,
missed slots are caught up within the window and never beyond it, and a running
node really runs its cron jobs.

The plugin's clock is injected and ``run_once()`` (one tick) is called directly,
so no test waits for a real minute to pass.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import errands
from errands import ConfigError, JobState
from errands.cron import cron_job
from errands.plugins.cron import Cron


async def _no_call_db(fn: Callable[..., Any], *args: Any) -> Any:  # run_once needs none
    return fn(*args)


def at(hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 5, 4, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


class Clock:
    """A settable clock for the plugin."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_cron(app: errands.App, clock: Clock, catch_up: float | None = None) -> Cron:
    """A cron loop as a node would make it at its start, ``clock.now``."""
    return Cron(
        app.engine,
        _no_call_db,
        entries=app.cron,
        make_job=functools.partial(cron_job, app),
        catch_up=app.settings.cron_catch_up if catch_up is None else catch_up,
        now=clock,
    )


def with_report(app: errands.App) -> errands.App:
    @app.job(name="report")
    def report(kind: str = "plain") -> str:
        return kind

    app.ensure_schema()
    return app


def slots_of(app: errands.App) -> list[str]:
    return sorted(job.meta["cron"]["slot"] for job in app.list_jobs(limit=1000))


def test_two_nodes_ticking_the_same_slots_insert_each_once(
    make_app: Callable[..., errands.App],
) -> None:
    cron = [
        ("*/5 * * * *", "report", {"args": {"kind": "five"}, "name": "five"}),
        ("0 * * * *", "report", {"name": "hourly", "queue": "reports", "priority": 3}),
    ]
    apps = [with_report(make_app(cron=cron)) for _ in range(2)]
    clock = Clock(at(9, 59, 30))  # the nodes start
    plugins = [make_cron(app, clock) for app in apps for _ in range(3)]  # 6 tickers, 2 nodes
    clock.now = at(10, 30, 20)  # and tick (late) for the first time

    results: list[list[errands.Job]] = [[] for _ in plugins]
    barrier = threading.Barrier(len(plugins))

    def tick(index: int) -> None:
        barrier.wait()
        results[index] = plugins[index].run_once()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(plugins))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    inserted = [job for result in results for job in result]
    # Since the start: 10:00 .. 10:30 every five minutes, and 10:00 hourly.
    assert len(inserted) == 7 + 1
    jobs = apps[0].list_jobs(limit=1000)
    assert sorted(job.id for job in jobs) == sorted(job.id for job in inserted)
    by_name: dict[str, list[errands.Job]] = {}
    for job in jobs:
        by_name.setdefault(job.meta["cron"]["name"], []).append(job)
    five = sorted(by_name["five"], key=lambda job: job.scheduled_at)
    assert [job.scheduled_time for job in five] == [
        at(10) + timedelta(minutes=5 * n) for n in range(7)
    ]
    assert all(job.args == {"kind": "five"} and job.queue == "default" for job in five)
    (hourly,) = by_name["hourly"]
    assert hourly.scheduled_time == at(10)
    assert (hourly.queue, hourly.priority, hourly.state) == ("reports", 3, JobState.AVAILABLE)
    assert hourly.meta["cron"] == {"name": "hourly", "slot": "2026-05-04T10:00:00+00:00"}

    # Ticking again, on any node, inserts nothing more until the next slot.
    clock.now = at(10, 34, 59)
    assert [plugin.run_once() for plugin in plugins] == [[]] * len(plugins)
    clock.now = at(10, 35, 1)
    again = [job for plugin in plugins for job in plugin.run_once()]
    assert [job.scheduled_time for job in again] == [at(10, 35)]
    assert len(apps[1].list_jobs(limit=1000)) == 9


def test_missed_slots_are_caught_up_within_the_window_only(
    make_app: Callable[..., errands.App],
) -> None:
    app = with_report(make_app(cron=[("0 * * * *", "report", {"name": "h"})], cron_catch_up=7200))
    clock = Clock(at(8, 59))
    cron = make_cron(app, clock)
    assert cron.run_once() == []
    clock.now = at(9, 0, 1)
    assert [job.scheduled_time for job in cron.run_once()] == [at(9)]
    # Every node stops after 9:00 and one comes back at 12:30: 11:00 and 12:00 fell
    # due within the 2 h window and run once; 10:00 is too old and never runs.
    clock.now = at(12, 30)
    first = make_cron(app, clock).run_once()
    assert [job.scheduled_time for job in first] == [at(11), at(12)]
    assert slots_of(app) == [
        "2026-05-04T09:00:00+00:00",
        "2026-05-04T11:00:00+00:00",
        "2026-05-04T12:00:00+00:00",
    ]
    assert app.drain() == {"completed": 3}

    # Another node starting later catches up the same window: nothing runs twice.
    clock.now = at(12, 59)
    assert make_cron(app, clock).run_once() == []
    assert len(app.list_jobs(limit=100)) == 3


def test_a_new_entry_does_not_catch_up_the_time_before_it_existed(
    make_app: Callable[..., errands.App],
) -> None:
    app = with_report(make_app(cron=[("*/10 * * * *", "report", {"name": "new"})]))
    clock = Clock(at(8, 55))
    cron = make_cron(app, clock)  # catch-up 3600 s, but the entry never ran before
    assert cron.run_once() == []
    clock.now = at(9, 0, 2)
    assert [job.scheduled_time for job in cron.run_once()] == [at(9)]


def test_without_catch_up_only_slots_since_the_last_tick_run(
    make_app: Callable[..., errands.App],
) -> None:
    app = with_report(make_app(cron=[("*/10 * * * *", "report", {"name": "t"})], cron_catch_up=0))
    clock = Clock(at(7, 59))
    first = make_cron(app, clock)
    assert first.run_once() == []
    clock.now = at(8, 0, 1)
    assert [job.scheduled_time for job in first.run_once()] == [at(8)]
    # A node that starts at 8:15 does not catch up 8:10, missed while none ran.
    clock.now = at(8, 15)
    cron = make_cron(app, clock)
    assert cron.run_once() == []
    clock.now = at(8, 19, 50)
    assert cron.run_once() == []
    # A late tick covers the time since the previous tick (at least a minute back)...
    clock.now = at(8, 20, 45)
    assert [job.scheduled_time for job in cron.run_once()] == [at(8, 20)]
    # ...but never more than a minute after a long gap (a database outage, say):
    # 8:30, 8:40 and 8:50 are lost, 9:00 runs.
    clock.now = at(9, 0, 30)
    assert [job.scheduled_time for job in cron.run_once()] == [at(9, 0)]
    assert len(app.list_jobs(limit=100)) == 3


def test_slot_rows_are_pruned_after_two_windows(make_app: Callable[..., errands.App]) -> None:
    app = with_report(make_app(cron=[("* * * * *", "report", {"name": "m"})], cron_catch_up=120))
    clock = Clock(at(6, 58, 30))
    cron = make_cron(app, clock)
    clock.now = at(7, 0, 30)
    assert len(cron.run_once()) == 2  # 6:59 and 7:00
    assert app.engine.cron_history(["m", "other"]) == {"m": at(7).timestamp()}
    assert app.engine.prune_cron_slots(at(6, 59, 30).timestamp()) == 1
    assert app.engine.prune_cron_slots(at(6, 59, 30).timestamp()) == 0
    # Each entry's latest slot stays, however old: it is where catch-up starts.
    assert app.engine.prune_cron_slots(at(8).timestamp()) == 0
    assert app.engine.cron_history(["m"]) == {"m": at(7).timestamp()}
    # The plugin prunes on its own: rows older than 2 x 120 s go.
    clock.now = at(7, 10, 30)
    assert len(cron.run_once()) == 2  # 7:09 and 7:10 (window: 120 s)
    assert app.engine.prune_cron_slots(at(7, 5).timestamp()) == 0  # 7:00 went already


def test_a_unique_cron_job_is_not_inserted_beside_its_duplicate(
    make_app: Callable[..., errands.App],
) -> None:
    app = make_app(cron=[("* * * * *", "single", {"name": "s"})])

    @app.job(name="single", unique=errands.Unique())
    def single() -> None: ...

    app.ensure_schema()
    clock = Clock(at(5, 57, 30))
    cron = make_cron(app, clock, catch_up=180)
    clock.now = at(6, 0, 30)
    inserted = cron.run_once()
    assert len(inserted) == 1 and inserted[0].scheduled_time == at(5, 58)
    assert len(app.list_jobs()) == 1
    assert sorted(app.engine.cron_history(["s"])) == ["s"]  # the slots were still claimed


def test_a_running_node_runs_its_cron_jobs(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Any
) -> None:
    ran: list[dict[str, Any]] = []
    app = make_app(cron=[("* * * * *", "minutely", {"args": {"n": 7}})], cron_catch_up=120)

    @app.job(name="minutely")
    def minutely(n: int) -> int:
        ran.append(errands.current_job().meta["cron"])
        return n

    @app.job(cron="* * * * *", name="by_decorator")
    def by_decorator() -> None:
        ran.append(errands.current_job().meta["cron"])

    # This entry ran before: a past node left slots about two minutes ago.
    past = datetime.now(UTC) - timedelta(seconds=130)
    clock = Clock(past - timedelta(seconds=70))
    seed = make_cron(app, clock)
    clock.now = past
    app.ensure_schema()
    seeded = len(seed.run_once())
    assert seeded >= 2

    async def main() -> None:
        node = await app.start()
        try:
            # The node's first tick catches up the last two minutes' slots of both
            # entries, then runs them and the seeded ones.
            await until(lambda: len(ran) >= seeded + 4, 15, message="cron jobs to run")
            (cron,) = [plugin for plugin in node.plugins if isinstance(plugin, Cron)]
            assert cron.inserted >= 4
        finally:
            await app.stop()

    arun(main())
    # (A minute may turn during the test: then a third slot of each entry runs too.)
    runs = Counter(entry["name"] for entry in ran)
    assert set(runs) == {"by_decorator", "minutely * * * * *"}
    assert min(runs.values()) >= 3
    assert len({(entry["name"], entry["slot"]) for entry in ran}) == len(ran)  # none twice
    done = app.list_jobs(state="completed", worker="minutely")
    assert len(done) >= 2 and all(job.result == 7 for job in done)


def test_a_node_refuses_to_start_with_an_unknown_cron_worker(
    make_app: Callable[..., errands.App], arun: Callable[..., Any]
) -> None:
    app = make_app(cron=[("@daily", "not.registered", {"name": "nightly"})])
    with pytest.raises(ConfigError, match="cron entry 'nightly': no worker named"):
        arun(app.start())
    assert app.node is None
