"""The chaos driver's tools: a database, real worker processes, a sink, and the checks.

A :class:`Cluster` owns one fresh database (a SQLite file, or a PostgreSQL
schema), starts worker processes (``python -m tests.chaos.worker``), enqueues
jobs, injects faults and, at the end, checks what happened against two
independent records: the sink file every job body writes its starts and ends
to, and the jobs table itself.

What :meth:`Cluster.finish` checks (each failure is one line in
``Result.problems``):

- every job reached the terminal state it was sent to (``lost`` otherwise);
- no job ran twice at the same time: two runs of one job whose
  ``[start, end]`` intervals overlap (a run with no ``end`` line lasted until
  its process died) count as a concurrent ``duplicate``;
- a run after an earlier run that did not end in a deliberate failure is a
  sequential ``re-run`` (at-least-once after a crash: allowed, counted);
- attempts grow run after run, stay ``<= max_attempts``, and every run that
  never ended left an ``errands.Rescued``/``errands.Shutdown`` record for
  that attempt on the job;
- a completed job's result (the pid of the process that ran it) names a
  process whose run of that job ended ``ok``;
- no job is left ``executing`` and, on SQLite, ``PRAGMA integrity_check`` says ``ok``;
- after each fault, jobs held by a dead process leave ``executing`` within a
  deadline (:meth:`Cluster.watch_orphans`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

import errands
from tests.support import POSTGRES_URL

REPO = Path(__file__).resolve().parents[2]
#: The worker name the chaos worker module registers (tests/chaos/worker.py).
WORKER = "chaos.work"
TERMINAL = ("completed", "cancelled", "discarded")
#: The terminal state each ``outcome`` arg sends a job to.
EXPECTED_STATE = {
    "complete": "completed",
    "fail_once": "completed",
    "discard": "discarded",
    "cancel": "cancelled",
}
_NODE = re.compile(r"^chaos-(\d+)/")


class ClientWork(errands.Worker, name=WORKER, max_attempts=25):
    """The driver's stand-in for the worker module's class: only its name is used."""

    def perform(self, job: errands.Job) -> None:
        raise AssertionError("the driver never runs jobs")


@dataclass
class Run:
    """One execution of a job body, as the sink recorded it."""

    job: int
    attempt: int
    pid: int
    start: float
    end: float | None = None
    outcome: str | None = None
    #: When the run stopped: its ``end`` line, else the death of its process.
    stopped: float | None = None
    #: The last ``tick`` line (bodies that tick): proof the body was still running.
    last_tick: float | None = None


@dataclass
class Fault:
    """One injected fault: struck ``at``, over (server back, lock released) at ``cleared``."""

    kind: str
    at: float
    #: None for a condition that lasts the whole scenario (no moment of recovery).
    cleared: float | None
    #: The pid a kill or SIGTERM hit: only its running jobs count as hit.
    victim: int | None = None
    #: Jobs the fault held back (locked rows), besides the runs it hit.
    affected: set[int] = field(default_factory=set)
    #: When no job was left executing on the victim (for kills), from the DB.
    orphans_cleared: float | None = None


@dataclass
class Result:
    """What one scenario run on one engine came to."""

    scenario: str
    engine: str
    jobs: int = 0
    lost: int = 0
    duplicates: int = 0
    reruns: int = 0
    recovery: float | None = None
    faults: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        rec = "-" if self.recovery is None else f"{self.recovery:.2f}s"
        head = (
            f"{self.scenario}/{self.engine}: {self.jobs} jobs, {self.faults} faults, "
            f"lost {self.lost}, duplicates {self.duplicates}, re-runs {self.reruns}, "
            f"recovery {rec}, {self.seconds:.1f}s"
        )
        if not self.problems:
            return head
        shown = "\n  ".join(self.problems[:25])
        more = f"\n  ... and {len(self.problems) - 25} more" if len(self.problems) > 25 else ""
        return f"{head}\n  {shown}{more}"


class Proc:
    """A worker (or inserter) process; a thread notes the moment it exits."""

    def __init__(self, popen: subprocess.Popen[bytes], role: str, stderr_path: Path) -> None:
        self.popen = popen
        self.role = role
        self.stderr_path = stderr_path
        self.started_at = time.time()
        self.exited_at: float | None = None
        self.signalled: int | None = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        self.popen.wait()
        self.exited_at = time.time()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.exited_at is None

    def wait(self, timeout: float) -> bool:
        self._waiter.join(timeout)
        return not self._waiter.is_alive()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def read_sink(path: Path) -> tuple[dict[tuple[int, int, int], Run], list[tuple[int, int, float]]]:
    """Runs keyed by ``(job, attempt, pid)``, and ``(batch, pid, time)`` inserter commits."""
    runs: dict[tuple[int, int, int], Run] = {}
    batches: list[tuple[int, int, float]] = []
    if not path.exists():
        return runs, batches
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a line without its newline is still being written
    for line in lines:
        parts = line.split()
        if parts[0] == "start":
            job, attempt, pid = int(parts[1]), int(parts[2]), int(parts[3])
            runs[(job, attempt, pid)] = Run(job, attempt, pid, float(parts[4]))
        elif parts[0] == "end":
            key = (int(parts[1]), int(parts[2]), int(parts[3]))
            run = runs[key]
            run.end = run.stopped = float(parts[4])
            run.outcome = parts[5]
        elif parts[0] == "tick":
            key = (int(parts[1]), int(parts[2]), int(parts[3]))
            runs[key].last_tick = float(parts[4])
        elif parts[0] == "batch":
            batches.append((int(parts[1]), int(parts[2]), float(parts[3])))
    return runs, batches


class Cluster:
    """One database, the processes working it, and everything needed to judge them.

    Example::

        with Cluster("sqlite", tmp_path, "demo") as c:
            workers = [c.spawn() for _ in range(2)]
            c.enqueue([{"ms": 10}] * 50)
            c.kill(workers[0])
            result = c.finish()
    """

    def __init__(
        self,
        engine: str,
        workdir: Path,
        scenario: str,
        *,
        rescue_after: float = 1.0,
        grace: float = 1.0,
        limit: int = 4,
        busy_timeout: float | None = None,
        poll: float = 0.05,
    ) -> None:
        if engine not in ("sqlite", "postgres"):
            raise ValueError(f"engine must be sqlite or postgres, got {engine!r}")
        self.engine = engine
        self.scenario = scenario
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex[:10]
        self.rescue_after = rescue_after
        self.busy_timeout = busy_timeout
        self.defaults = {
            "CHAOS_LIMIT": str(limit),
            "CHAOS_RESCUE_AFTER": str(rescue_after),
            "CHAOS_GRACE": str(grace),
            "CHAOS_POLL": str(poll),
        }
        self.sink = workdir / f"sink-{self.tag}.log"
        self.schema: str | None = None
        if engine == "sqlite":
            self.path = workdir / f"chaos-{self.tag}.db"
            query = "" if busy_timeout is None else f"?busy_timeout={busy_timeout:g}"
            self.worker_url = f"sqlite:///{self.path}{query}"
            client_url = f"sqlite:///{self.path}"
        else:
            self.schema = f"errands_chaos_{self.tag}"
            # Workers' connections carry this name, so faults can target them alone.
            self.application_name = f"errands-chaos-{self.tag}"
            self.worker_url = f"{POSTGRES_URL}?application_name={self.application_name}"
            client_url = POSTGRES_URL
        self.client = errands.App(client_url, schema=self.schema, auto_migrate=True)
        self.client.register(ClientWork)
        self.client.migrate()
        self.procs: list[Proc] = []
        self.faults: list[Fault] = []
        self.expected: dict[int, str] = {}
        self.problems: list[str] = []
        self.started = time.monotonic()
        self._pg: psycopg.Connection[Any] | None = None
        self._watchers: list[threading.Thread] = []
        self._watching: dict[int, threading.Thread] = {}
        self._closed = False

    # -- context -------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill whatever still runs, close connections, drop the schema. Safe twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.wait(10)
        for watcher in self._watchers:
            watcher.join(timeout=1)
        self.client.close()
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.close()
        if self.schema is not None:
            with (
                contextlib.suppress(Exception),
                psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as conn,
            ):
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    # -- reading the database ---------------------------------------------------------
    def _table(self, name: str) -> str:
        return name if self.schema is None else f'"{self.schema}".{name}'

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]] | None:
        """Rows of ``sql`` (``{jobs}``, ``{producers}``, ``{leader}`` name the tables).

        ``None`` when the database cannot answer right now (PostgreSQL restarting).
        """
        text = sql.format(
            jobs=self._table("errands_jobs"),
            producers=self._table("errands_producers"),
            leader=self._table("errands_leader"),
        )
        if self.engine == "sqlite":
            try:
                with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
                    return conn.execute(text, tuple(params)).fetchall()
            except sqlite3.Error:
                return None
        try:
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(
                    POSTGRES_URL,
                    autocommit=True,
                    connect_timeout=3,
                    application_name="chaos-driver",
                )
            return self._pg.execute(text.replace("?", "%s"), tuple(params)).fetchall()
        except psycopg.Error:
            if self._pg is not None:
                with contextlib.suppress(Exception):
                    self._pg.close()
            self._pg = None
            return None

    def counts(self) -> dict[str, int] | None:
        rows = self.query("SELECT state, count(*) FROM {jobs} GROUP BY state")
        return None if rows is None else {state: int(n) for state, n in rows}

    def rows(self) -> dict[int, dict[str, Any]]:
        """Every job row, decoded: ``{id: {"state", "attempt", ..., "errors", "args"}}``."""
        found = self.query(
            "SELECT id, state, attempt, max_attempts, attempted_by, result, errors, args "
            "FROM {jobs}"
        )
        if found is None:
            raise AssertionError("the database did not answer when reading the final rows")
        out: dict[int, dict[str, Any]] = {}
        for id_, state, attempt, max_attempts, by, result, errors, args in found:
            out[int(id_)] = {
                "state": state,
                "attempt": attempt,
                "max_attempts": max_attempts,
                "attempted_by": by,
                "result": _json(result),
                "errors": _json(errors) or [],
                "args": _json(args) or {},
            }
        return out

    def executing_by_pid(self) -> dict[int, set[int]] | None:
        """Executing job ids grouped by the pid of the node holding them (-1: no such node)."""
        rows = self.query("SELECT id, attempted_by FROM {jobs} WHERE state = 'executing'")
        if rows is None:
            return None
        held: dict[int, set[int]] = defaultdict(set)
        for job_id, by in rows:
            match = _NODE.match(by or "")
            held[int(match.group(1)) if match else -1].add(int(job_id))
        return held

    def leader_pid(self) -> int | None:
        """The pid of the node whose leader lease has not expired."""
        now = "now()" if self.engine == "postgres" else repr(time.time())
        rows = self.query(f"SELECT node FROM {{leader}} WHERE expires_at > {now}")
        if not rows:
            return None
        match = re.match(r"^chaos-(\d+)$", rows[0][0])
        return int(match.group(1)) if match else None

    def producer_pids(self) -> set[int]:
        rows = self.query("SELECT id FROM {producers}") or []
        return {int(m.group(1)) for (pid,) in rows if (m := _NODE.match(pid))}

    def integrity(self) -> str:
        """``PRAGMA integrity_check`` of the SQLite file (``ok`` when intact)."""
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(row[0]) for row in rows)

    # -- processes --------------------------------------------------------------------
    def spawn(self, role: str = "worker", *, wait: bool = True, **env: str) -> Proc:
        """Start a worker (or ``role="inserter"``); with ``wait``, until its producer is up."""
        full = dict(os.environ)
        full.update(self.defaults)
        full.update(
            CHAOS_URL=self.worker_url,
            CHAOS_SCHEMA=self.schema or "",
            CHAOS_SINK=str(self.sink),
            CHAOS_ROLE=role,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        full.update(env)
        stderr_path = self.workdir / f"{role}-{len(self.procs)}-{self.tag}.err"
        with stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.worker"],
                cwd=REPO,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        proc = Proc(popen, role, stderr_path)
        self.procs.append(proc)
        if wait and role == "worker":
            self.wait_for(
                lambda: proc.pid in self.producer_pids() or not proc.alive,
                30,
                f"worker {proc.pid} to register its producer",
            )
            if not proc.alive:
                raise AssertionError(f"worker {proc.pid} died at start:\n{proc.stderr()[-3000:]}")
        return proc

    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.role == "worker" and p.alive]

    def signal(self, proc: Proc, sig: int = signal.SIGKILL, kind: str | None = None) -> Fault:
        """Send ``sig`` to ``proc`` and record the fault (a SIGKILL waits for the death)."""
        at = time.time()
        proc.signalled = sig
        os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(10)
        name = kind or ("kill" if sig == signal.SIGKILL else signal.Signals(sig).name.lower())
        fault = Fault(name, at, at, victim=proc.pid)
        self.faults.append(fault)
        return fault

    def stop(self, proc: Proc, timeout: float = 30) -> None:
        """SIGTERM and wait (a graceful stop at the end of a scenario)."""
        if proc.role == "worker":
            # Before app.run() installs its handlers SIGTERM kills outright: wait for it.
            with contextlib.suppress(AssertionError):
                self.wait_for(
                    lambda: proc.pid in self.producer_pids() or not proc.alive,
                    30,
                    f"worker {proc.pid} to start",
                )
        if proc.alive:
            proc.signalled = signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        if not proc.wait(timeout):
            self.problems.append(f"{proc.role} {proc.pid} ignored SIGTERM for {timeout}s")
            proc.popen.kill()
            proc.wait(10)

    # -- jobs -------------------------------------------------------------------------
    def enqueue(self, specs: list[dict[str, Any]]) -> list[int]:
        """Insert one job per args dict (``ms``, ``outcome``, ``reads``); return the ids."""
        jobs = self.client.enqueue_many([self.client.new_job(WORKER, spec) for spec in specs])
        for job, spec in zip(jobs, specs, strict=True):
            self.expected[job.id] = EXPECTED_STATE[spec.get("outcome", "complete")]
        return [job.id for job in jobs]

    def progress(self) -> float:
        """The finished fraction of the jobs in the table (0 when it cannot tell)."""
        counts = self.counts()
        if not counts:
            return 0.0
        return sum(counts.get(state, 0) for state in TERMINAL) / sum(counts.values())

    def wait_progress(self, fraction: float, timeout: float = 60) -> None:
        self.wait_for(lambda: self.progress() >= fraction, timeout, f"{fraction:.0%} finished")

    def running(self, pid: int | None = None) -> dict[int, Run]:
        """Runs the sink shows started and not ended (on ``pid``), by job id."""
        runs, _ = read_sink(self.sink)
        return {
            run.job: run
            for run in runs.values()
            if run.end is None and (pid is None or run.pid == pid)
        }

    def busy_worker(self, timeout: float = 10, exclude: set[int] | None = None) -> Proc:
        """A live worker running at least one job right now (waits for one)."""

        def pick() -> Proc | None:
            running = {run.pid for run in self.running().values()}
            for proc in self.workers():
                if proc.pid in running and proc.pid not in (exclude or set()):
                    return proc
            return None

        return self.wait_for(pick, timeout, "a worker with a running job")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.scenario}/{self.engine}: timed out waiting for {what}")
            time.sleep(0.02)

    def watch_orphans(self, fault: Fault, deadline: float) -> None:
        """In the background, note when the victim's jobs leave ``executing`` (or complain)."""
        assert fault.victim is not None

        def watch() -> None:
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                held = self.executing_by_pid()
                if held is not None and not held.get(fault.victim or 0):
                    fault.orphans_cleared = time.time()
                    return
                time.sleep(0.05)
            self.problems.append(
                f"jobs of killed process {fault.victim} still executing {deadline:g}s after "
                f"the {fault.kind} (rescue_after={self.rescue_after:g}s)"
            )

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self._watchers.append(thread)
        self._watching[id(fault)] = thread

    def settle(self, fault: Fault) -> None:
        """Wait until the jobs a killed process held left ``executing`` (or the watch gave up)."""
        thread = self._watching.get(id(fault))
        if thread is not None:
            thread.join()

    def wait_start_after(self, at: float, timeout: float = 30) -> None:
        """Wait until some job body started after ``at`` (the work goes on)."""
        self.wait_for(
            lambda: any(run.start > at for run in read_sink(self.sink)[0].values()),
            timeout,
            "a job to start",
        )

    def wait_all_done(self, timeout: float) -> None:
        """Wait until every job in the table is finished (a problem after ``timeout``)."""
        try:
            self.wait_for(
                lambda: (
                    (c := self.counts()) is not None
                    and sum(c.values()) > 0
                    and all(state in TERMINAL for state in c)
                ),
                timeout,
                "every job to finish",
            )
        except AssertionError as exc:
            self.problems.append(f"{exc}: counts {self.counts()}")

    # -- judging ----------------------------------------------------------------------
    def finish(self, *, done_timeout: float = 90) -> Result:
        """Wait for the jobs, stop every process gracefully, then check everything."""
        self.wait_all_done(done_timeout)
        for proc in self.procs:
            if proc.alive:
                self.stop(proc)
        for watcher in self._watchers:
            watcher.join(timeout=60)
        return self.judge()

    def judge(self) -> Result:
        result = Result(self.scenario, self.engine, faults=len(self.faults))
        problems = result.problems
        problems.extend(self.problems)
        runs, _ = read_sink(self.sink)
        exit_times = {p.pid: p.exited_at for p in self.procs}
        now = time.time()
        for run in runs.values():
            if run.stopped is None:
                died = exit_times.get(run.pid)
                run.stopped = died if died is not None else now
                if died is None:
                    problems.append(f"run {run} never ended and its process is alive")
        by_job: dict[int, list[Run]] = defaultdict(list)
        for run in runs.values():
            by_job[run.job].append(run)
        for job_runs in by_job.values():
            job_runs.sort(key=lambda r: r.start)
        rows = self.rows()
        result.jobs = len(self.expected)
        for job_id, expected in sorted(self.expected.items()):
            row = rows.get(job_id)
            if row is None or row["state"] != expected:
                result.lost += 1
                got = "missing" if row is None else f"{row['state']} (attempt {row['attempt']})"
                problems.append(f"job {job_id}: expected {expected}, found {got}")
        for job_id, row in rows.items():
            job_runs = by_job.get(job_id, [])
            self._check_job(job_id, row, job_runs, result)
        result.recovery = self._recovery(by_job, problems)
        stray = sorted(set(rows) - set(self.expected))
        if stray:
            problems.append(f"{len(stray)} job(s) in the table nobody enqueued: {stray[:10]}")
        if self.engine == "sqlite":
            verdict = self.integrity()
            if verdict != "ok":
                problems.append(f"PRAGMA integrity_check: {verdict}")
        for proc in self.procs:
            err = proc.stderr()
            if "Traceback" in err:
                problems.append(f"{proc.role} {proc.pid} printed a traceback:\n{err[-2500:]}")
            if proc.signalled == signal.SIGTERM and proc.popen.returncode != 0:
                problems.append(
                    f"{proc.role} {proc.pid} exited {proc.popen.returncode} after SIGTERM:\n"
                    f"{err[-1500:]}"
                )
        result.seconds = time.monotonic() - self.started
        return result

    def _check_job(
        self, job_id: int, row: dict[str, Any], job_runs: list[Run], result: Result
    ) -> None:
        problems = result.problems
        if row["state"] == "executing":
            problems.append(f"job {job_id} still executing at the end (by {row['attempted_by']})")
        if row["attempt"] > row["max_attempts"]:
            problems.append(f"job {job_id}: attempt {row['attempt']} > {row['max_attempts']}")
        if row["state"] in TERMINAL and not job_runs:
            problems.append(f"job {job_id} is {row['state']} but no process ever ran it")
        attempts = [run.attempt for run in job_runs]
        if attempts != sorted(set(attempts)):
            problems.append(f"job {job_id}: attempts in start order {attempts} are not increasing")
        if attempts and max(attempts) > row["attempt"]:
            problems.append(f"job {job_id}: ran attempt {max(attempts)}, row says {row['attempt']}")
        overlapping = False
        for i, first in enumerate(job_runs):
            for second in job_runs[i + 1 :]:
                assert first.stopped is not None
                if second.start < first.stopped:
                    overlapping = True
                    proof = ""
                    if first.last_tick is not None and first.last_tick > second.start:
                        proof = (
                            f"; the first body still ticked "
                            f"{(first.last_tick - second.start) * 1000:.0f} ms after the second "
                            "started"
                        )
                    how = "ended" if first.end is not None else "its process exited"
                    problems.append(
                        f"job {job_id} ran concurrently: attempt {first.attempt} on pid "
                        f"{first.pid} [{first.start:.3f}, {first.stopped:.3f} {how}] and "
                        f"attempt {second.attempt} on pid {second.pid} from {second.start:.3f} "
                        f"({(first.stopped - second.start) * 1000:.0f} ms overlap{proof})"
                    )
        result.duplicates += overlapping
        for before, _ in itertools.pairwise(job_runs):
            if before.outcome != "fail":
                result.reruns += 1
        handed_back = {
            error.get("attempt")
            for error in row["errors"]
            if error.get("type") in ("errands.Rescued", "errands.Shutdown")
        }
        for run in job_runs:
            if run.end is None and run.attempt not in handed_back:
                problems.append(
                    f"job {job_id}: attempt {run.attempt} on pid {run.pid} never ended, yet the "
                    f"job has no Rescued/Shutdown record for it (errors: {row['errors']})"
                )
        if row["state"] == "completed":
            ok_pids = {run.pid for run in job_runs if run.outcome == "ok"}
            if row["result"] not in ok_pids:
                problems.append(
                    f"job {job_id} completed with result {row['result']!r}, but only "
                    f"{sorted(ok_pids)} finished it"
                )

    def _recovery(self, by_job: dict[int, list[Run]], problems: list[str]) -> float | None:
        """Seconds from the end of each fault until work went on (the worst fault).

        "Went on" means: a job started after the fault was over, the jobs a
        killed process held left ``executing`` (rescued or handed back), and
        the jobs the fault held back (locked rows) started. Every run the fault
        cut short must have run again, whatever the time.
        """
        starts = sorted(run.start for runs in by_job.values() for run in runs)
        worst: float | None = None
        for fault in self.faults:
            for job_id, runs in by_job.items():
                cut = [
                    run
                    for run in runs
                    if run.end is None
                    and run.start <= fault.at
                    and (fault.victim is None or run.pid == fault.victim)
                ]
                if cut and not any(run.start > fault.at for run in runs):
                    problems.append(f"job {job_id}, cut short by the {fault.kind}, never ran again")
            if fault.cleared is None:
                continue
            back = fault.cleared
            after = [t for t in starts if t > fault.cleared]
            if after:
                back = max(back, after[0])
            if fault.victim is not None and fault.orphans_cleared is not None:
                back = max(back, fault.orphans_cleared)
            for job_id in fault.affected:
                later = [run.start for run in by_job.get(job_id, []) if run.start > fault.at]
                if later:
                    back = max(back, min(later))
                else:
                    problems.append(f"job {job_id}, held back by the {fault.kind}, never ran")
            worst = max(worst or 0.0, back - fault.cleared)
        return worst


def _json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (dict, list, int, float)):
        return value
    return orjson.loads(value)


@contextlib.contextmanager
def held_connections(count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """Hold up to ``count`` idle PostgreSQL connections, leaving 30 slots free for others."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as probe:
        limit = int(probe.execute("SHOW max_connections").fetchone()[0])
        used = int(probe.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])
    count = max(0, min(count, limit - used - 30))
    conns: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            conns.append(psycopg.connect(POSTGRES_URL, application_name="chaos-hog"))
        yield conns
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def terminate_backends(application_name: str) -> int:
    """``pg_terminate_backend`` every connection named ``application_name`` (errands%)."""
    assert application_name.startswith("errands")
    with psycopg.connect(POSTGRES_URL, autocommit=True, application_name="chaos-driver") as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'errands%%' AND application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)
