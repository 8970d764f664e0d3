"""errands against its peers, side by side in one run: jobs/s and the ratio errands/peer.

Workloads (every figure is the median of ``--runs`` runs; the JSON keeps every run):

- ``bulk``: build and insert ``--jobs`` no-op jobs with the library's bulk API
  (or its fastest documented way) — jobs/s.
- ``single``: insert ``--single`` no-op jobs, one enqueue call each — jobs/s.
- ``drain``: ``--jobs`` pre-inserted no-op jobs (then ``ANALYZE`` on PostgreSQL,
  as autovacuum would soon do), one worker (process, or rq's
  worker pool) at ``--concurrency`` — jobs/s from ``go`` to the first poll of
  the library's own storage that sees them all finished (nothing subtracted;
  polls every elapsed/200, 10-100 ms apart, so the end is seen <= 0.5 % late).

Runs are interleaved (run 1 of every library, then run 2 ...; the order of the
libraries rotates each run), so background noise hits every library alike;
each ratio is the median of the per-run ratios errands/peer.

Example (from the repository root, in the peers venv; benchmarks/peers/run.sh makes it)::

    python -m benchmarks.peers.compare --runs 3 --output benchmarks/peers/results/peers.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.adapters import ADAPTERS, Adapter, load
from benchmarks.peers.adapters.base import ROOT, Settings, go, stop_process

WORKLOADS = ("bulk", "single", "drain")
TITLES = {"bulk": "bulk enqueue", "single": "single enqueue", "drain": "drain"}

#: Peers often compared with errands that this script does not run, and why.
NOT_INCLUDED = {
    "celery": "optional and not included: no bulk enqueue API, and seeing completions "
    "needs a result backend that the other libraries do not pay for",
}

LIBRARIES = (
    "errands",
    "oban",
    "procrastinate",
    "pgqueuer",
    "huey",
    "rq",
    "psycopg",
    "psycopg-pool",
    "asyncpg",
    "redis",
    "uvloop",
    "orjson",
)


# -- environment --------------------------------------------------------------------------
def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def environment(settings: Settings) -> dict[str, Any]:
    """Machine, interpreter, storage servers and library versions."""
    env: dict[str, Any] = {
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    try:
        import psycopg

        with psycopg.connect(settings.pg_url, connect_timeout=5) as conn:
            for setting in ("server_version", "synchronous_commit", "fsync", "shared_buffers"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                env[f"postgres {setting}"] = row[0] if row else "?"
    except Exception as exc:
        env["postgres"] = f"unreachable ({_one_line(exc)})"
    try:
        import redis

        info = redis.Redis.from_url(settings.redis_url, socket_timeout=5).info("server")
        env["redis"] = info.get("redis_version", "?")
    except Exception as exc:
        env["redis"] = f"unreachable ({_one_line(exc)})"
    env["libraries"] = {dist: _version(dist) for dist in LIBRARIES}
    env["errands revision"] = _git_revision()
    return env


# -- one measurement ----------------------------------------------------------------------
def measure_bulk(adapter: Adapter, jobs: int) -> float:
    adapter.reset()
    return jobs / adapter.enqueue_many(jobs)


def measure_single(adapter: Adapter, jobs: int) -> float:
    adapter.reset()
    return jobs / adapter.enqueue_single(jobs)


def measure_drain(
    adapter: Adapter, jobs: int, concurrency: int, timeout: float, poll: float
) -> float:
    """Insert ``jobs`` and settle (untimed), start the worker, time from ``go`` to ``done``."""
    adapter.reset()
    adapter.insert(jobs)
    adapter.settle()
    if adapter.done(jobs):
        raise RuntimeError("done() is already true before the worker started")
    proc = adapter.start_worker(concurrency)
    try:
        started = time.perf_counter()
        go(proc)
        while not adapter.done(jobs):
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with code {proc.returncode}")
            elapsed = time.perf_counter() - started
            if elapsed > timeout:
                raise TimeoutError(f"not drained after {timeout:.0f} s")
            # Poll every elapsed/200 (10 ms to ``poll`` s): the end is seen at most 0.5 %
            # late, the same for every library, and the polls stay a light load.
            time.sleep(min(poll, max(0.01, elapsed / 200)))
        elapsed = time.perf_counter() - started
    finally:
        stop_process(proc)
    return jobs / elapsed


# -- the comparison -----------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def prepare(names: list[str], settings: Settings, say: Callable[[str], None]) -> list[Adapter]:
    """Adapters that can run here; one line for each that cannot, and why."""
    ready: list[Adapter] = []
    for name in names:
        try:
            adapter = load(name)(settings)
        except ImportError as exc:
            say(f"{name}: not measured - cannot import its library ({_one_line(exc)})")
            continue
        try:
            adapter.check()
            adapter.reset()
        except Exception as exc:
            say(f"{name}: not measured - its storage is not usable here ({_one_line(exc)})")
            continue
        ready.append(adapter)
    for name, why in NOT_INCLUDED.items():
        say(f"{name}: not measured - {why}")
    return ready


def ratio(errands: list[float | None], peer: list[float | None]) -> float | None:
    """Median of the per-run ratios errands/peer (runs paired by index)."""
    pairs = [e / p for e, p in zip(errands, peer, strict=False) if e and p]
    return statistics.median(pairs) if pairs else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def measure(adapter: Adapter, workload: str, args: argparse.Namespace) -> float:
    """One figure of one workload for one adapter, in jobs/s."""
    if workload == "bulk":
        return measure_bulk(adapter, args.jobs)
    if workload == "single":
        return measure_single(adapter, args.single)
    return measure_drain(adapter, args.jobs, args.concurrency, args.drain_timeout, args.poll)


def run_all(args: argparse.Namespace, adapters: list[Adapter], say: Callable[[str], None]) -> Any:
    """Every workload on every adapter, ``args.runs`` times, interleaved."""
    samples: dict[str, dict[str, list[float | None]]] = {
        a.name: {w: [] for w in args.workloads} for a in adapters
    }
    errors: dict[str, dict[str, list[str]]] = {
        a.name: {w: [] for w in args.workloads} for a in adapters
    }
    sizes = {"bulk": args.jobs, "single": args.single, "drain": args.jobs}
    for run in range(args.runs):
        order = adapters[run % len(adapters) :] + adapters[: run % len(adapters)]
        for workload in args.workloads:
            for adapter in order:
                rate = None
                for attempt in range(1 + args.retries):
                    try:
                        rate = measure(adapter, workload, args)
                        break
                    except Exception as exc:
                        errors[adapter.name][workload].append(f"run {run + 1}: {_one_line(exc)}")
                        say(
                            f"run {run + 1}/{args.runs} {workload:6} {adapter.name}: "
                            f"FAILED (attempt {attempt + 1}) {_one_line(exc)}"
                        )
                        if args.verbose:
                            traceback.print_exc()
                        with contextlib.suppress(Exception):
                            adapter.teardown()
                        time.sleep(args.retry_pause)
                samples[adapter.name][workload].append(rate)
                if rate is not None:
                    say(
                        f"run {run + 1}/{args.runs} {workload:6} {adapter.name:16} "
                        f"{sizes[workload]:>6} jobs: {rate:>9,.0f} jobs/s"
                    )
    for adapter in adapters:
        adapter.teardown()
    return samples, errors


def table(adapters: list[Adapter], samples: Any, workloads: list[str], args: Any) -> list[str]:
    """The Markdown table: medians and errands/peer ratios."""
    head = ["library", "storage", "API / job", "vs"]
    for w in workloads:
        size = args.single if w == "single" else args.jobs
        label = f"{TITLES[w]} {size:,}" + (f" c={args.concurrency}" if w == "drain" else "")
        head += [f"{label} (jobs/s)", "errands/peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_name = {a.name: a for a in adapters}
    for adapter in adapters:
        base = adapter.baseline if adapter.baseline in by_name else ""
        row = [adapter.name, adapter.storage, adapter.style, base or "-"]
        for w in workloads:
            med = _median(samples[adapter.name][w])
            row.append(f"{med:,.0f}" if med is not None else "failed")
            if not adapter.baseline:
                row.append("-")
            elif not base:
                row.append("n/a")
            else:
                r = ratio(samples[base][w], samples[adapter.name][w])
                row.append(f"{r:.2f}x" if r is not None else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median shown)")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs for bulk and drain")
    parser.add_argument("--single", type=int, default=2_000, help="jobs for single enqueue")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--only", action="append", choices=list(ADAPTERS), help="only these rows (repeatable)"
    )
    parser.add_argument(
        "--workload", dest="workloads", action="append", choices=WORKLOADS, help="repeatable"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PEERS_PG_URL", Settings.pg_url),
        help="an existing database; each library gets its own database beside it",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("PEERS_REDIS_URL", Settings.redis_url)
    )
    parser.add_argument("--workdir", help="SQLite files and worker logs (default: a temp dir)")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument(
        "--poll", type=float, default=0.1, help="longest pause between done() polls (s)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of a failed measurement (a shared server restarted under it, say); "
        "every failure is printed and kept in the JSON",
    )
    parser.add_argument("--retry-pause", type=float, default=10.0, help="seconds before a retry")
    parser.add_argument("--output", help="write the JSON report (every run) here")
    parser.add_argument("--verbose", action="store_true", help="tracebacks for failures")
    args = parser.parse_args(argv)
    args.workloads = args.workloads or list(WORKLOADS)
    workdir = args.workdir or tempfile.mkdtemp(prefix="errands-peers-")
    settings = Settings(pg_url=args.pg_url, redis_url=args.redis_url, workdir=workdir)

    def say(line: str) -> None:
        print(line, flush=True)

    given = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.peers.compare " + " ".join(given)
    env = environment(settings)
    say("# errands vs peers")
    say(f"command: {command.strip()}")
    for key, value in env.items():
        if key == "libraries":
            say("libraries: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            say(f"{key}: {value}")
    say(f"workdir (SQLite files, worker logs): {workdir}")
    names = args.only or list(ADAPTERS)
    adapters = prepare(names, settings, say)
    if not adapters:
        say("nothing to measure")
        return 1
    samples, errors = run_all(args, adapters, say)
    lines = table(adapters, samples, args.workloads, args)
    say("")
    say(f"medians of {args.runs} runs; errands/peer = median of the per-run ratios")
    say("(errands/peer > 1: errands is faster)")
    for line in lines:
        say(line)
    say("")
    say("how each row runs (worker; how the drain's end is seen):")
    for adapter in adapters:
        say(f"- {adapter.name}: {adapter.worker_method}; {adapter.done_method}")
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"load average at end: {env['load average at end']}")
    if args.output:
        report = {
            "command": command.strip(),
            "environment": env,
            "settings": vars(args),
            "rows": {
                a.name: {
                    "library": a.library,
                    "storage": a.storage,
                    "style": a.style,
                    "baseline": a.baseline,
                    "worker": a.worker_method,
                    "done": a.done_method,
                    "runs": samples[a.name],
                    "errors": errors[a.name],
                    "median": {w: _median(samples[a.name][w]) for w in args.workloads},
                    "ratio_errands_over_peer": {
                        w: ratio(samples[a.baseline][w], samples[a.name][w])
                        if a.baseline in samples
                        else None
                        for w in args.workloads
                    },
                }
                for a in adapters
            },
            "table": lines,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        say(f"JSON report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
