"""The chaos scenarios: each starts real workers, injects one kind of fault, and is judged.

Every scenario is a function ``(cluster, scale, rng) -> None`` that drives the
workers and injects its faults; :func:`run_scenario` builds the
:class:`~tests.chaos.harness.Cluster` with the scenario's settings, runs it and
returns the :class:`~tests.chaos.harness.Result` of the checks. ``scale``
multiplies the number of jobs and faults (1 = the CI size).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.chaos.harness import (
    Cluster,
    Fault,
    Result,
    held_connections,
    read_sink,
    terminate_backends,
)
from tests.support import POSTGRES_URL

ScenarioFn = Callable[[Cluster, float, random.Random], None]


@dataclass(frozen=True)
class Scenario:
    """A named fault drill, the engines it applies to, and the cluster settings it needs."""

    name: str
    fn: ScenarioFn
    engines: tuple[str, ...]
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: Per-engine overrides of ``settings``.
    engine_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def workload(
    n: int, rng: random.Random, ms: tuple[int, int], *, mixed: bool = True, **extra: Any
) -> list[dict[str, Any]]:
    """``n`` job args: sleep ``ms`` (a range), mostly ``complete``, some other outcomes."""
    specs = []
    for _ in range(n):
        spec: dict[str, Any] = {"ms": rng.randint(*ms), **extra}
        if mixed:
            roll = rng.random()
            if roll < 0.07:
                spec["outcome"] = "fail_once"
            elif roll < 0.12:
                spec["outcome"] = "discard"
            elif roll < 0.16:
                spec["outcome"] = "cancel"
        specs.append(spec)
    return specs


def _count(base: float, scale: float) -> int:
    return max(1, round(base * scale))


def _orphan_deadline(cluster: Cluster) -> float:
    # lease expiry (rescue_after) + silence (rescue_after) + a lifeline tick, with room.
    return 3 * cluster.rescue_after + 8


# -- the scenarios ------------------------------------------------------------------------
def kill_workers(c: Cluster, scale: float, rng: random.Random) -> None:
    """SIGKILL a busy worker again and again; start a fresh one each time.

    Each kill gets a fresh wave of work and waits for the victim's jobs to be
    rescued before the next, so every fault hits a loaded system and the
    recovery times do not pile up.
    """
    for _ in range(3):
        c.spawn()
    kills = _count(4, scale)
    for _ in range(kills):
        c.enqueue(workload(round(150 * scale / kills), rng, (50, 400)))
        victim = c.busy_worker()
        fault = c.signal(victim, signal.SIGKILL)
        c.watch_orphans(fault, _orphan_deadline(c))
        c.spawn(wait=False)
        c.settle(fault)


def kill_leader(c: Cluster, scale: float, rng: random.Random) -> None:
    """SIGKILL the leader (which runs the lifeline) while it runs jobs; a follower takes over."""
    for _ in range(3):
        c.spawn()
    kills = _count(2, scale)
    for _ in range(kills):
        c.enqueue(workload(round(120 * scale / kills), rng, (50, 400)))
        leader = c.wait_for(c.leader_pid, 15, "a leader")
        proc = next(p for p in c.workers() if p.pid == leader)
        c.wait_for(lambda p=proc: c.running(p.pid), 10, "the leader to run a job")
        fault = c.signal(proc, signal.SIGKILL, kind="kill leader")
        c.watch_orphans(fault, _orphan_deadline(c))
        c.spawn(wait=False)
        c.wait_for(
            lambda v=leader: c.leader_pid() not in (None, v),
            _orphan_deadline(c),
            "a new leader",
        )
        c.settle(fault)


def sigterm_past_grace(c: Cluster, scale: float, rng: random.Random) -> None:
    """SIGTERM workers whose jobs outlast the grace period: they must hand the jobs back.

    The jobs come in waves smaller than the free slots, so a handed-back job is
    claimed by an idle worker at once: if the stopping process still ran the
    body then, the sink shows two runs at the same time.
    """
    for _ in range(3):
        c.spawn()
    grace = float(c.defaults["CHAOS_GRACE"])
    for _ in range(_count(3, scale)):
        c.enqueue(workload(6, rng, (1500, 2500), mixed=False, tick_ms=2))
        # Some worker holds two of the six jobs (more jobs than workers); pick it,
        # whichever it is: notifications wake every worker at once.
        victim = c.wait_for(
            lambda: next((w for w in c.workers() if len(c.running(w.pid)) >= 2), None),
            20,
            "two jobs on one worker",
        )
        fault = c.signal(victim, signal.SIGTERM, kind="sigterm")
        c.watch_orphans(fault, grace + 10)
        if not victim.wait(grace + 10):
            c.problems.append(f"worker {victim.pid} still alive {grace + 10:g}s after SIGTERM")
        c.spawn()
        c.wait_progress(1.0, timeout=30)


def pg_terminate(c: Cluster, scale: float, rng: random.Random) -> None:
    """``pg_terminate_backend`` every connection of the workers, several times."""
    for _ in range(2):
        c.spawn()
    times = _count(3, scale)
    for _ in range(times):
        c.enqueue(workload(round(200 * scale / times), rng, (20, 150)))
        c.wait_start_after(time.time())
        at = time.time()
        killed = terminate_backends(c.application_name)
        if killed == 0:
            c.problems.append("pg_terminate_backend found no errands connection to terminate")
        c.faults.append(Fault("terminate backends", at, time.time()))
        c.wait_start_after(time.time())


def pg_restart(c: Cluster, scale: float, rng: random.Random) -> None:
    """Restart the PostgreSQL server under running workers (once per run: it disturbs others)."""
    for _ in range(2):
        c.spawn()
    c.enqueue(workload(_count(200, scale), rng, (20, 100)))
    c.wait_progress(0.3)
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    at = time.time()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    c.faults.append(Fault("postgres restart", at, time.time()))


def pool_exhaustion(c: Cluster, scale: float, rng: random.Random) -> None:
    """Tiny pools under wide queues, job bodies that use the pool, and idle connections held."""
    with held_connections(15) as hogs:
        c.spawn(CHAOS_POOL_MAX="1", CHAOS_LIMIT="10")
        c.spawn(CHAOS_POOL_MAX="2", CHAOS_LIMIT="20")
        at = time.time()
        c.enqueue(workload(_count(250, scale), rng, (0, 30), reads=5))
        peak = 0
        while c.progress() < 1.0 and time.time() - at < 120:
            peak = max(peak, _connections(c.application_name))
            time.sleep(0.05)
        c.faults.append(Fault(f"pool exhaustion (+{len(hogs)} idle conns)", at, None))
    # Per worker: its engine's pool (max_size), its loop path's (claims and acks, at most
    # min(2, max_size)) and a listener: 1 + 1 + 1 and 2 + 2 + 1. No pool may grow past that.
    if peak > 8:
        c.problems.append(
            f"the workers held {peak} connections, more than pools of (1 + 1) + (2 + 2) "
            "and two listeners allow"
        )
    if peak == 0:
        c.problems.append("never saw the workers' connections: the check is blind")


def _connections(application_name: str) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True, application_name="chaos-driver") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def lock_rows(c: Cluster, scale: float, rng: random.Random) -> None:
    """PostgreSQL: another transaction holds row locks on available and executing jobs."""
    for _ in range(2):
        c.spawn()
    for _ in range(_count(1, scale)):
        c.enqueue(workload(150, rng, (20, 150)))
        c.wait_start_after(time.time())
        fault = _hold_pg_locks(c, seconds=3.0)
        # The locked jobs run once released, before the next wave locks anything.
        c.wait_for(
            lambda f=fault: all(
                any(r.job == j and r.start > f.at for r in read_sink(c.sink)[0].values())
                for j in f.affected
            ),
            30,
            "the locked jobs to start",
        )


def _hold_pg_locks(c: Cluster, seconds: float) -> Fault:
    jobs = f'"{c.schema}".errands_jobs'
    with psycopg.connect(POSTGRES_URL, application_name="chaos-locker") as conn:
        available = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM {jobs} WHERE state = 'available' ORDER BY id LIMIT 15 FOR UPDATE"
            ).fetchall()
        ]
        executing = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM {jobs} WHERE state = 'executing' LIMIT 4 FOR UPDATE"
            ).fetchall()
        ]
        at = time.time()  # every lock is held from here
        time.sleep(seconds)  # the fault itself: locks held this long
        released = time.time()
        conn.commit()
    runs, _ = read_sink(c.sink)
    during = [r for r in runs.values() if at + 0.2 < r.start < released]
    if not during:
        c.problems.append(f"no job started while {len(available)} rows were locked: stalled")
    early = [r for r in runs.values() if r.job in available and at < r.start < released]
    for run in early:
        c.problems.append(f"job {run.job} started at {run.start:.3f}, locked until {released:.3f}")
    fault = Fault("rows locked FOR UPDATE", at, released, affected=set(available))
    c.faults.append(fault)
    if not available or not executing:
        c.problems.append(
            f"locked {len(available)} available and {len(executing)} executing rows: "
            "the workload was too small to test both"
        )
    return fault


def sqlite_write_lock(c: Cluster, scale: float, rng: random.Random) -> None:
    """SQLite: another connection holds the write lock, first within busy_timeout, then past it."""
    for _ in range(2):
        c.spawn()
    busy = c.busy_timeout or 10.0
    for _ in range(_count(1, scale)):
        c.enqueue(workload(150, rng, (20, 150)))
        c.wait_start_after(time.time())
        before = {p.pid: len(p.stderr()) for p in c.procs}
        _hold_sqlite_lock(c, busy * 0.5, "write lock < busy_timeout")
        c.wait_start_after(time.time())
        for proc in c.procs:
            if "locked" in proc.stderr()[before.get(proc.pid, 0) :]:
                c.problems.append(f"worker {proc.pid} failed a write within busy_timeout")
        _hold_sqlite_lock(c, busy * 2.0, "write lock > busy_timeout")
        c.wait_start_after(time.time())
    logged = [p.pid for p in c.procs if "locked" in p.stderr()]
    if not logged:
        c.problems.append("no worker logged 'database is locked' during the long lock")


def _hold_sqlite_lock(c: Cluster, seconds: float, kind: str) -> None:
    conn = sqlite3.connect(c.path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        at = time.time()
        time.sleep(seconds)  # the fault itself: the write lock held this long
        released = time.time()
        conn.execute("COMMIT")
    finally:
        conn.close()
    c.faults.append(Fault(kind, at, released))


def writer_killed(c: Cluster, scale: float, rng: random.Random) -> None:
    """SQLite: SIGKILL the writers (workers and an inserter) mid-commit, repeatedly."""
    batches, size = _count(40, scale), 25
    workers = [c.spawn(CHAOS_LIMIT="8") for _ in range(2)]
    inserter = c.spawn("inserter", CHAOS_BATCHES=f"0:{batches}", CHAOS_BATCH_SIZE=str(size))
    kills = _count(10, scale)
    for _ in range(kills):
        time.sleep(rng.uniform(0.15, 0.5))  # the fault's timing is random on purpose
        targets = [p for p in [*workers, inserter] if p.alive]
        victim = rng.choice(targets)
        fault = c.signal(victim, signal.SIGKILL, kind="kill writer")
        verdict = c.integrity()
        if verdict != "ok":
            c.problems.append(f"integrity_check after killing {victim.role}: {verdict}")
        if victim.role == "worker":
            c.watch_orphans(fault, _orphan_deadline(c))
            workers = [p for p in workers if p is not victim]
            workers.append(c.spawn(CHAOS_LIMIT="8", wait=False))
        else:
            inserter = _resume_inserter(c, batches, size)
    # Let the inserter finish every batch (restarting it if it was killed last).
    c.wait_for(lambda: not inserter.alive, 60, "the inserter to finish")
    if _missing_batches(c, batches):
        inserter = _resume_inserter(c, batches, size)
        c.wait_for(lambda: not inserter.alive, 60, "the inserter to finish")
    _check_batches(c, batches, size)


def _batch_counts(c: Cluster) -> dict[int, int]:
    rows = c.query("SELECT json_extract(args, '$.batch'), count(*) FROM {jobs} GROUP BY 1") or []
    return {int(b): int(n) for b, n in rows if b is not None}


def _missing_batches(c: Cluster, batches: int) -> list[int]:
    present = _batch_counts(c)
    return [b for b in range(batches) if b not in present]


def _resume_inserter(c: Cluster, batches: int, size: int) -> Any:
    missing = _missing_batches(c, batches)
    first = missing[0] if missing else batches
    return c.spawn("inserter", CHAOS_BATCHES=f"{first}:{batches}", CHAOS_BATCH_SIZE=str(size))


def _check_batches(c: Cluster, batches: int, size: int) -> None:
    present = _batch_counts(c)
    for batch, n in present.items():
        if n != size:
            c.problems.append(f"batch {batch} has {n} jobs, not {size}: a torn insert")
    _, committed = read_sink(c.sink)
    for batch, pid, _ in committed:
        if batch not in present:
            c.problems.append(f"batch {batch}, committed by {pid}, is missing")
    missing = [b for b in range(batches) if b not in present]
    if missing:
        c.problems.append(f"batches never inserted: {missing}")
    rows = c.query("SELECT id FROM {jobs} WHERE json_extract(args, '$.batch') IS NOT NULL")
    for (job_id,) in rows or []:
        c.expected[int(job_id)] = "completed"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "kill-worker",
            kill_workers,
            ("sqlite", "postgres"),
            "SIGKILL a busy worker (of 3) repeatedly, replacing it",
        ),
        Scenario(
            "kill-leader",
            kill_leader,
            ("sqlite", "postgres"),
            "SIGKILL the leader while it runs jobs; a follower takes the lease and rescues",
        ),
        Scenario(
            "sigterm-past-grace",
            sigterm_past_grace,
            ("sqlite", "postgres"),
            "SIGTERM a worker whose jobs outlast the 0.5 s grace period",
            settings={"grace": 0.5},
        ),
        Scenario(
            "terminate-backends",
            pg_terminate,
            ("postgres",),
            "pg_terminate_backend every errands connection of the workers, 3 times",
            settings={"rescue_after": 2.0},
        ),
        Scenario(
            "postgres-restart",
            pg_restart,
            ("postgres",),
            "restart the PostgreSQL server under load",
            settings={"rescue_after": 15.0},
        ),
        Scenario(
            "pool-exhaustion",
            pool_exhaustion,
            ("postgres",),
            "pools of 1-2 connections under queue limits 10-20, bodies using the pool, "
            "15 idle connections held",
            settings={"rescue_after": 2.0},
        ),
        Scenario(
            "row-locks",
            lock_rows,
            ("postgres",),
            "another transaction holds FOR UPDATE locks on 15 available and 4 executing jobs, 3 s",
            settings={"rescue_after": 2.0},
        ),
        Scenario(
            "sqlite-write-lock",
            sqlite_write_lock,
            ("sqlite",),
            "BEGIN IMMEDIATE held 1 s (< busy_timeout 2 s), then 4 s (> busy_timeout)",
            # A live node whose heartbeats are locked out longer than rescue_after is,
            # by design, dead: keep rescue_after above the longest hold.
            settings={"rescue_after": 8.0, "busy_timeout": 2.0},
        ),
        Scenario(
            "writer-killed",
            writer_killed,
            ("sqlite",),
            "SIGKILL workers and a batch inserter mid-commit, 10 times, then integrity_check",
            settings={"rescue_after": 1.5},
        ),
    ]
}


def pg_restart_allowed() -> str | None:
    """Why the server restart scenario cannot run here, or None."""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        return "restarting PostgreSQL needs root and pg_ctlcluster"
    if not os.path.isdir("/etc/postgresql"):
        return "no /etc/postgresql cluster configuration"
    return None


def run_scenario(
    name: str, engine: str, scale: float = 1.0, *, workdir: Path | None = None, seed: int = 0
) -> Result:
    """Run scenario ``name`` on ``engine`` and return the judged :class:`Result`."""
    scenario = SCENARIOS[name]
    if engine not in scenario.engines:
        raise ValueError(f"scenario {name} does not apply to {engine}")
    settings = {**scenario.settings, **scenario.engine_settings.get(engine, {})}
    rng = random.Random(f"{name}/{engine}/{seed}")
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-")) if workdir is None else workdir
    try:
        with Cluster(engine, directory, name, **settings) as cluster:
            scenario.fn(cluster, scale, rng)
            return cluster.finish()
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


def all_runs() -> list[tuple[str, str]]:
    """Every ``(scenario, engine)`` pair, in table order."""
    return [(s.name, engine) for s in SCENARIOS.values() for engine in s.engines]
