"""Queues with ``executor="process"``: sync jobs run in child processes of the node.

The jobs live in a module written to ``tmp_path`` (a fresh name per test), so
the spawned children can import the app the way a real deployment would: by
the import path found from the workers' module.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import errands
from errands.cli import load_app
from errands.runtime import claim_ahead
from errands.runtime.affinity import core_for
from errands.runtime.node import Node
from errands.runtime.process_child import resolve_import_path
from tests.support import wait_for

pytestmark = pytest.mark.slow

JOB_MODULE = textwrap.dedent(
    """
    import os, time
    import errands

    app = errands.App(
        @URL@,
        schema=@SCHEMA@,
        auto_migrate=True,
        queues={
            "cpu": {"limit": 2, "executor": "process"},
            "solo": {"limit": 1, "executor": "process"},
            "threads": 2,
        },
        rescue_after=5.0,
        stage_interval=0.05,
        poll_interval=0.05,
        grace_period=2.0,
    )

    def record(event: str) -> None:
        line = f"{event} {errands.current_job().id} {os.getpid()}\\n".encode()
        fd = os.open(@SINK@, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    @app.job(queue="cpu")
    def whoami() -> int:
        return os.getpid()

    @app.job(queue="cpu")
    async def on_loop() -> int:
        return os.getpid()

    @app.job(queue="cpu")
    def cores() -> list:
        return sorted(os.sched_getaffinity(0))

    @app.job(queue="cpu")
    async def loop_cores() -> list:
        return sorted(os.sched_getaffinity(0))

    @app.job(queue="threads")
    def thread_cores() -> list:
        return sorted(os.sched_getaffinity(0))

    @app.job(queue="cpu")
    def spin(cpu_seconds: float) -> dict:
        start = time.time()
        end = time.process_time() + cpu_seconds
        while time.process_time() < end:
            pass
        return {"pid": os.getpid(), "start": start, "end": time.time()}

    @app.job(queue="solo", timeout=0.5)
    def sleepy(seconds: float) -> int:
        record("start")
        time.sleep(seconds)
        return os.getpid()

    @app.job(queue="cpu")
    def hang(seconds: float) -> int:
        record("start")
        time.sleep(seconds)
        return os.getpid()

    @app.job(queue="cpu")
    def outcome(kind: str) -> object:
        if kind == "value":
            return {"pid": os.getpid(), "data": [1, 2.5, None, "\\u00e9"]}
        if kind == "snooze":
            raise errands.Snooze(60)
        if kind == "cancel":
            raise errands.Cancel("no longer needed")
        if kind == "discard":
            raise errands.Discard("bad data")
        if kind == "unjson":
            return {1, 2}
        if kind == "exit":
            raise SystemExit(3)
        raise ValueError("boom from the child")

    @app.register
    class Custom(errands.Worker, queue="cpu", name="custom"):
        def perform(self, job: errands.Job) -> None:
            raise KeyError(job.args["key"])

        def backoff(self, job: errands.Job) -> float:
            # Runs where the body ran: the real exception is there to look at.
            return 1000.0 if isinstance(job.exception, KeyError) else 1.0
    """
)


@pytest.fixture
def jobs(
    tmp_path: Path, database_url: str, schema: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The job module, imported here; children import it by the same name."""
    name = f"pe_jobs_{uuid.uuid4().hex[:10]}"
    source = (
        JOB_MODULE.replace("@URL@", repr(database_url))
        .replace("@SCHEMA@", repr(schema))
        .replace("@SINK@", repr(str(tmp_path / "sink.log")))
    )
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    module.app.migrate()
    yield module
    module.app.close()
    sys.modules.pop(name, None)


@asynccontextmanager
async def running(app: errands.App, queues: list[str] | None = None) -> AsyncIterator[Node]:
    node = await app.start(queues)
    try:
        yield node
    finally:
        await app.stop()


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_pids(sink: Path) -> list[int]:
    if not sink.exists():
        return []
    return [int(line.split()[2]) for line in sink.read_text().splitlines()]


def settled(app: errands.App, ids: list[int]) -> bool:
    states = [app.get_job(i).state for i in ids]  # type: ignore[union-attr]
    return all(state not in ("available", "executing") for state in states)


def test_sync_jobs_run_in_child_processes_and_async_jobs_on_the_loop(
    jobs: ModuleType, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    sync = app.enqueue_many([jobs.whoami.new() for _ in range(6)])
    loop_job = jobs.on_loop.enqueue()

    async def scenario() -> list[int]:
        async with running(app) as node:
            pool = node.process_pools["cpu"]
            assert len(pool.pids) == 2 and os.getpid() not in pool.pids
            ids = [job.id for job in [*sync, loop_job]]
            await until(lambda: settled(app, ids), 30, message="jobs to finish")
            assert set(pool.pids) >= {app.get_job(job.id).result for job in sync}
            return pool.pids

    children = arun(scenario(), 60)
    results = [app.get_job(job.id) for job in sync]
    assert [job.state for job in results] == ["completed"] * 6
    pids = {job.result for job in results}
    assert len(pids) == 2, "both children of a limit-2 queue run jobs"
    assert os.getpid() not in pids
    assert app.get_job(loop_job.id).result == os.getpid(), "async jobs run on the node's loop"
    # Stopping the node stops (and reaps) its children.
    for pid in children:
        assert not pid_exists(pid), f"child {pid} outlived the node"


def test_quick_jobs_claimed_ahead_still_run_only_in_child_processes(
    jobs: ModuleType,
    arun: Callable[..., Any],
    until: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread queue's threads start jobs claimed ahead themselves; a process queue's never."""
    # Jobs count as quick from the start, and ten batches of the queue's two slots
    # are claimed ahead of them: most of the 300 wait claimed before they start.
    monkeypatch.setattr(claim_ahead, "QUICK", 10.0)
    monkeypatch.setattr(claim_ahead, "AHEAD", 10.0)
    app = jobs.app
    quick = app.enqueue_many([jobs.whoami.new() for _ in range(300)])

    async def scenario() -> None:
        async with running(app) as node:
            await until(lambda: settled(app, [job.id for job in quick]), 60, message="jobs")
            producer = node.producers["cpu"]
            assert producer.fetched > 4 * producer.claims, "it claimed well ahead of 2 slots"

    arun(scenario(), 90)
    results = [app.get_job(job.id) for job in quick]
    assert {job.state for job in results} == {"completed"}  # type: ignore[union-attr]
    assert os.getpid() not in {job.result for job in results}  # type: ignore[union-attr]


# The engine plays no part in how children share the cores; one copy of this test
# (not one per engine, spinning in parallel under xdist) keeps the measure fair.
@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_cpu_bound_jobs_run_in_two_processes_at_once(
    jobs: ModuleType, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    """Two children work at the same time (their run intervals overlap).

    How much faster that is on two cores is a benchmark's business
    (``errands bench --workload "cpu 10ms process c=2"``), not a timed test's.
    """
    app = jobs.app
    batch = app.enqueue_many([jobs.spin.new(cpu_seconds=0.2) for _ in range(8)])
    ids = [job.id for job in batch]

    async def scenario() -> None:
        async with running(app):
            await until(lambda: settled(app, ids), 60, message="spin jobs to finish")

    arun(scenario(), 120)
    results = [app.get_job(i).result for i in ids]
    pids = {r["pid"] for r in results}
    assert len(pids) == 2 and os.getpid() not in pids
    overlapping = [
        (a["pid"], b["pid"])
        for a in results
        for b in results
        if a["pid"] != b["pid"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "the two children never ran jobs at the same time"


def test_a_timeout_kills_the_child_and_frees_the_slot(
    jobs: ModuleType, tmp_path: Path, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    sink = tmp_path / "sink.log"
    runaway = jobs.sleepy.enqueue(seconds=30)
    after = jobs.whoami.options(queue="solo").enqueue()  # waits behind it (limit 1)

    async def scenario() -> tuple[int, float]:
        async with running(app) as node:
            pool = node.process_pools["solo"]
            first = pool.pids[0]
            await until(lambda: started_pids(sink), 30, message="the runaway to start")
            began = time.monotonic()
            await until(lambda: app.get_job(runaway.id).state == "retryable", 10)
            await until(lambda: not pid_exists(first), 10, message="its child to be gone")
            await until(lambda: app.get_job(after.id).state == "completed", 10)
            return first, time.monotonic() - began

    killed, took = arun(scenario(), 60)
    assert started_pids(sink) == [killed]
    assert took < 10, f"the next job waited {took:.1f}s behind a killed runaway"
    failed = app.get_job(runaway.id)
    assert failed.attempt == 1
    assert failed.errors[-1]["type"].endswith("JobTimeoutError")
    assert failed.errors[-1]["message"] == f"job {runaway.id} ran past its timeout of 0.5s"
    assert failed.scheduled_at > time.time() + 5, "retryable with the normal backoff"
    assert app.get_job(after.id).result not in (killed, os.getpid())


def test_a_child_killed_mid_job_fails_the_attempt_and_is_replaced(
    jobs: ModuleType, tmp_path: Path, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    sink = tmp_path / "sink.log"
    victim = jobs.hang.enqueue(seconds=30)

    async def scenario() -> tuple[int, list[int]]:
        async with running(app) as node:
            pool = node.process_pools["cpu"]
            pids = await until(lambda: started_pids(sink), 30, message="the job to start")
            os.kill(pids[0], signal.SIGKILL)
            await until(lambda: app.get_job(victim.id).state == "retryable", 10)
            later = app.enqueue_many([jobs.whoami.new() for _ in range(4)])
            ids = [job.id for job in later]
            await until(lambda: settled(app, ids), 20, message="jobs after the kill")
            assert [app.get_job(i).state for i in ids] == ["completed"] * 4
            await until(lambda: len(pool.pids) == 2, 10, message="the pool to be whole again")
            return pids[0], pool.pids

    dead, now = arun(scenario(), 60)
    assert dead not in now and not pid_exists(dead)
    failed = app.get_job(victim.id)
    assert failed.errors[-1]["type"].endswith("WorkerProcessDiedError")
    message = failed.errors[-1]["message"]
    assert message == f"worker process died (exit code -9) while running job {victim.id}"
    assert failed.attempt == 1 and failed.scheduled_at > time.time() + 5


def test_cancelling_a_running_job_stops_its_child(
    jobs: ModuleType, tmp_path: Path, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    victim = jobs.hang.enqueue(seconds=30)

    async def scenario() -> tuple[int, list[int]]:
        async with running(app) as node:
            pool = node.process_pools["cpu"]
            pids = await until(lambda: started_pids(tmp_path / "sink.log"), 30)
            assert app.cancel_job(victim.id) is not None
            await until(lambda: not pid_exists(pids[0]), 10, message="its child to be stopped")
            after = jobs.whoami.enqueue()
            await until(lambda: app.get_job(after.id).state == "completed", 10)
            await until(lambda: len(pool.pids) == 2, 10, message="the pool to be whole again")
            return pids[0], pool.pids

    stopped, now = arun(scenario(), 60)
    assert stopped not in now
    assert app.get_job(victim.id).state == "cancelled"


def test_a_process_queue_started_at_run_time_gets_a_pool(
    jobs: ModuleType, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    job = jobs.whoami.options(queue="solo").enqueue()

    async def scenario() -> list[int]:
        async with running(app, queues=["cpu"]) as node:
            assert "solo" not in node.process_pools
            app.start_queue("solo", local=True)
            await until(lambda: app.get_job(job.id).state == "completed", 30)
            return node.process_pools["solo"].pids

    pids = arun(scenario(), 60)
    assert app.get_job(job.id).result in pids
    assert app.get_job(job.id).result != os.getpid()


def test_stop_past_the_grace_hands_the_job_back_and_kills_its_child(
    jobs: ModuleType, tmp_path: Path, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    victim = jobs.hang.enqueue(seconds=30)

    async def scenario() -> tuple[int, float]:
        await app.start()
        pids = await until(lambda: started_pids(tmp_path / "sink.log"), 30)
        began = time.monotonic()
        await app.stop(grace=0.2)
        return pids[0], time.monotonic() - began

    child, took = arun(scenario(), 60)
    assert took < 5, f"stop took {took:.1f}s with a 30 s job running in a child"
    wait_for(lambda: not pid_exists(child), 5)
    back = app.get_job(victim.id)
    assert back.state == "available" and back.errors[-1]["type"] == "errands.Shutdown"


def test_errands_worker_runs_process_queues_with_the_app_from_dash_dash_app(
    jobs: ModuleType, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    command = [sys.executable, "-m", "errands", "--app", f"{jobs.__name__}:app", "worker"]
    worker = subprocess.Popen(
        [*command, "--queues", "cpu"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        batch = jobs.app.enqueue_many([jobs.whoami.new() for _ in range(4)])
        ids = [job.id for job in batch]
        wait_for(lambda: settled(jobs.app, ids), 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode(errors="replace")[-2000:]
    done = [jobs.app.get_job(i) for i in ids]
    assert [job.state for job in done] == ["completed"] * 4
    pids = {job.result for job in done}
    assert not pids & {worker.pid, os.getpid()}, "sync jobs ran in the worker's children"
    wait_for(lambda: not any(pid_exists(pid) for pid in pids), 10)


def _run_worker(jobs: ModuleType, tmp_path: Path, *options: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    command = [sys.executable, "-m", "errands", "--app", f"{jobs.__name__}:app", "worker"]
    return subprocess.Popen(
        [*command, "--queues", "cpu,threads", *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _results(
    jobs: ModuleType, worker: subprocess.Popen[bytes], ids: list[int]
) -> tuple[list[Any], str]:
    """Wait for the jobs, stop the worker: the jobs' results in order, and its error output."""
    try:
        wait_for(lambda: settled(jobs.app, ids), 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    log = err.decode(errors="replace")
    assert worker.returncode == 0, log[-2000:]
    done = [jobs.app.get_job(i) for i in ids]
    assert all(job is not None and job.state == "completed" for job in done), log[-2000:]
    return [job.result for job in done if job is not None], log


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="--pin-cpus is Linux only")
def test_a_pinned_worker_runs_on_one_core_and_its_job_bodies_on_every_core(
    jobs: ModuleType, tmp_path: Path
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    worker = _run_worker(jobs, tmp_path, "--pin-cpus")
    ids = [jobs.loop_cores.enqueue().id, jobs.thread_cores.enqueue().id, jobs.cores.enqueue().id]
    (on_loop, in_thread, in_child), _ = _results(jobs, worker, ids)
    assert on_loop == [core_for(0, allowed)], "the worker's loop is pinned"
    assert in_thread == allowed, "def bodies' threads take every core back"
    assert in_child == allowed, "process-executor children get every core back"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="--pin-cpus is Linux only")
def test_each_supervised_worker_process_is_pinned_to_its_own_core(
    jobs: ModuleType, tmp_path: Path
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    worker = _run_worker(jobs, tmp_path, "--processes", "2", "--pin-cpus")
    ids = [job.id for job in jobs.app.enqueue_many([jobs.loop_cores.new() for _ in range(20)])]
    results, log = _results(jobs, worker, ids)
    assert f"worker process 0 pinned to core {core_for(0, allowed)}" in log, log[-2000:]
    assert f"worker process 1 pinned to core {core_for(1, allowed)}" in log, log[-2000:]
    assert {tuple(cores) for cores in results} <= {(core_for(0, allowed),), (core_for(1, allowed),)}


KINDS = ["value", "snooze", "cancel", "discard", "unjson", "exit", "boom"]


def _enqueue_outcomes(jobs: ModuleType) -> dict[str, int]:
    ids = {kind: jobs.outcome.enqueue(kind=kind).id for kind in KINDS}
    ids["spent"] = jobs.outcome.options(max_attempts=1).enqueue(kind="boom").id
    ids["custom"] = jobs.app.enqueue("custom", {"key": "missing"}).id
    return ids


def _summary(app: errands.App, job_id: int) -> dict[str, Any]:
    job = app.get_job(job_id)
    assert job is not None
    result = dict(job.result, pid=None) if isinstance(job.result, dict) else job.result
    return {
        "state": job.state,
        "attempt": job.attempt,
        "result": result,
        "errors": [
            (e["type"], e["message"], e["attempt"], (e["traceback"] or "").strip()[-60:])
            for e in job.errors
        ],
        "due_in": round((job.scheduled_at - time.time()) / 100) * 100,
    }


def test_outcomes_are_classified_like_the_thread_executor(
    jobs: ModuleType, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    app = jobs.app
    in_children = _enqueue_outcomes(jobs)

    async def scenario() -> None:
        async with running(app):
            ids = list(in_children.values())
            await until(lambda: settled(app, ids), 30, message="outcome jobs to settle")

    arun(scenario(), 60)
    in_threads = _enqueue_outcomes(jobs)
    assert sum(app.drain().values()) == len(in_threads)  # drain runs sync bodies in threads

    for kind in in_children:
        assert _summary(app, in_children[kind]) == _summary(app, in_threads[kind]), kind
    outcome = {kind: app.get_job(i) for kind, i in in_children.items()}
    expected = {
        "value": "completed",
        "snooze": "scheduled",
        "cancel": "cancelled",
        "discard": "discarded",
        "unjson": "retryable",
        "exit": "retryable",
        "boom": "retryable",
        "spent": "discarded",
        "custom": "retryable",
    }
    assert {kind: job.state for kind, job in outcome.items()} == expected
    assert outcome["value"].result["pid"] != os.getpid()
    assert outcome["value"].result["data"] == [1, 2.5, None, "\u00e9"]
    snoozed = outcome["snooze"]
    assert (snoozed.attempt, snoozed.max_attempts) == (1, 21), "a snooze spends no attempt"
    boom = outcome["boom"].errors[0]
    assert (boom["type"], boom["message"]) == ("ValueError", "boom from the child")
    assert 'raise ValueError("boom from the child")' in boom["traceback"]
    assert jobs.__name__ in boom["traceback"] or jobs.__file__ in boom["traceback"]
    assert outcome["exit"].errors[0]["type"] == "SystemExit"
    assert outcome["unjson"].errors[0]["type"] == "errands.InvalidJobError"
    assert outcome["cancel"].errors[0]["message"] == "no longer needed"
    # The worker's own backoff() ran with the real KeyError (1000 s, not its 1 s fallback).
    assert outcome["custom"].scheduled_at > time.time() + 900


SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    import errands

    here = os.path.dirname(os.path.abspath(__file__))
    app = errands.App(
        f"sqlite:///{here}/script.db",
        queues={"cpu": {"limit": 1, "executor": "process"}},
        poll_interval=0.05,
    )

    @app.job(queue="cpu")
    def whoami() -> int:
        return os.getpid()

    async def main() -> None:
        job = whoami.enqueue()
        await app.start()
        try:
            for _ in range(600):
                done = app.get_job(job.id)
                if done.state == "completed":
                    break
                await asyncio.sleep(0.05)
        finally:
            await app.stop()
        print(whoami.name, done.state, done.result, os.getpid())

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def test_a_script_run_as_main_finds_its_app_for_the_children(tmp_path: Path) -> None:
    (tmp_path / "pe_script.py").write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, "pe_script.py"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    name, state, child, parent = run.stdout.decode().split()
    assert (name, state) == ("pe_script.whoami", "completed")
    assert child != parent, "the job ran in a child process, which imported pe_script:app"


def test_the_import_path_comes_from_the_option_the_cli_or_the_workers_module(
    jobs: ModuleType,
) -> None:
    assert jobs.app.import_path is None
    assert resolve_import_path(jobs.app) == f"{jobs.__name__}:app"
    assert load_app(jobs.__name__).import_path == f"{jobs.__name__}:app"
    given = errands.App("sqlite:///:memory:", import_path="somewhere.else:app")
    assert resolve_import_path(given) == "somewhere.else:app"


@pytest.mark.parametrize("bad", ["jobs", "jobs:", ":app", "my jobs:app", "a:b:c", 42])
def test_a_malformed_import_path_is_refused_at_the_app(bad: Any) -> None:
    with pytest.raises(errands.ConfigError, match=r"import_path must be 'module:attr'.*got"):
        errands.App("sqlite:///:memory:", import_path=bad)


def _process_app(tmp_path: Path, **options: Any) -> errands.App:
    app = errands.App(
        f"sqlite:///{tmp_path}/start.db",
        queues={"cpu": {"limit": 1, "executor": "process"}},
        **options,
    )

    @app.job(queue="cpu")
    def work() -> None: ...

    return app


@pytest.mark.parametrize(
    ("import_path", "reason"),
    [
        ("no_such_module_xyz:app", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("os:sep", "os:sep is a str, not an errands.App"),
    ],
)
def test_an_app_the_children_cannot_import_fails_at_start(
    tmp_path: Path, arun: Callable[..., Any], import_path: str, reason: str
) -> None:
    app = _process_app(tmp_path, import_path=import_path)
    with pytest.raises(errands.ConfigError) as caught:
        arun(app.start(), 60)
    message = str(caught.value)
    assert f"import_path {import_path!r}" in message and reason in message
    assert "queue 'cpu' has executor='process'" in message
    assert app.node is None
    app.close()


def test_an_app_without_an_import_path_fails_at_start(
    tmp_path: Path, arun: Callable[..., Any]
) -> None:
    app = _process_app(tmp_path)  # a local variable: no module global names it
    with pytest.raises(errands.ConfigError, match=r"import_path='module:attr'") as caught:
        arun(app.start(), 60)
    assert "queue 'cpu' has executor='process'" in str(caught.value)
    assert app.node is None
    app.close()


def test_thread_queues_start_no_processes(tmp_path: Path, arun: Callable[..., Any]) -> None:
    app = errands.App(f"sqlite:///{tmp_path}/t.db", queues={"default": 2})

    async def scenario() -> dict[str, Any]:
        async with running(app) as node:
            await asyncio.sleep(0)
            return dict(node.process_pools)

    assert arun(scenario(), 30) == {}
    app.close()
