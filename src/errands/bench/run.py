"""Run the benchmark suite several times and report medians beside the machine they ran on.

Every figure is the median of ``runs`` runs; the JSON report keeps every run.

Example::

    python -m errands.bench.run --engine sqlite --runs 3 --output benchmarks/results/x.json
    errands bench --engine all --runs 3
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from errands.bench.calibrate import calibrate
from errands.bench.workloads import Target, drain, enqueue, latency

__all__ = ["WORKLOADS", "bench", "environment"]

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Workload:
    """A named workload: a function of a target returning figures."""

    name: str
    run: Callable[[Target, bool], dict[str, float]]


def _scale(quick: bool, full: int) -> int:
    return max(full // 10, 100) if quick else full


def _two_processes(target: Target, jobs: int, *, pin_cpus: bool = False) -> dict[str, float]:
    """Two worker processes, and their speed-up over one drained just before.

    The target is a ratio, so each run measures both sides back to back: on a
    shared host the speed drifts between workloads run minutes apart, far less
    between two drains run seconds apart. ``speedup_vs_one_process`` is then
    the median of the per-run ratios.

    A second process helps only while the machine has CPU to spare, so the run
    also says where the machine's ceiling is: ``cpu_ceiling_jobs_s``, the rate
    at which the two processes and the database together would keep every core
    busy at the CPU per job they spent, and ``of_cpu_ceiling``, how much of it
    they reached (near 1: the cores, not errands, set the speed).

    With ``pin_cpus`` both drains run as ``errands worker --pin-cpus`` would:
    each worker process on a core of its own, the one process included.
    """
    one = drain(target, jobs=jobs, concurrency=10, pin_cpus=pin_cpus)
    two = drain(target, jobs=jobs, concurrency=10, processes=2, pin_cpus=pin_cpus)
    ceiling = (os.cpu_count() or 1) * 1e6 / two["host_cpu_us_per_job"]
    return {
        **two,
        "one_process_jobs_s": one["jobs_s"],
        "speedup_vs_one_process": two["jobs_s"] / one["jobs_s"],
        "cpu_ceiling_jobs_s": ceiling,
        "of_cpu_ceiling": two["jobs_s"] / ceiling,
    }


WORKLOADS = [
    Workload(
        "enqueue",
        lambda t, q: enqueue(t, single=_scale(q, 5_000), many=_scale(q, 20_000)),
    ),
    Workload("drain c=10", lambda t, q: drain(t, jobs=_scale(q, 20_000), concurrency=10)),
    Workload(
        "drain c=10 async",
        lambda t, q: drain(t, jobs=_scale(q, 20_000), concurrency=10, worker="bench.anoop"),
    ),
    Workload("drain c=10 x2 processes", lambda t, q: _two_processes(t, _scale(q, 20_000))),
    Workload(
        "drain c=10 x2 processes pinned",
        lambda t, q: _two_processes(t, _scale(q, 20_000), pin_cpus=True),
    ),
    Workload("latency 50/s", lambda t, q: latency(t, jobs=_scale(q, 500), rate=50.0)),
    Workload(
        "io 100ms c=100",
        lambda t, q: drain(
            t, jobs=_scale(q, 2_000), concurrency=100, worker="bench.io", args={"seconds": 0.1}
        ),
    ),
    Workload(
        "cpu 10ms process c=2",
        lambda t, q: drain(
            t,
            jobs=_scale(q, 400),
            concurrency=2,
            worker="bench.cpu",
            args={"seconds": 0.01},
            executor="process",
        ),
    ),
]


def _shown(value: float) -> str:
    """A figure for the table: per-job counts below 10 need more than one decimal."""
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def environment(targets: list[Target]) -> dict[str, Any]:
    """The machine, Python and database versions the figures belong to, and how fast it is."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    env: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "load average": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }
    pg_url = None
    for target in targets:
        if target.engine == "postgres":
            import psycopg

            with psycopg.connect(target.url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                env["postgres"] = row[0] if row else "?"
                for setting in ("synchronous_commit", "shared_buffers", "fsync"):
                    row = conn.execute(f"SHOW {setting}").fetchone()
                    env[f"postgres {setting}"] = row[0] if row else "?"
            pg_url = target.url
    # Figures only compare within one machine: these say how fast this one is.
    for name, value in calibrate(pg_url).items():
        env[name] = value
    return env


def bench(
    engines: list[str],
    workloads: list[str] | None,
    runs: int,
    quick: bool,
    console: Console,
) -> dict[str, Any]:
    """Run the chosen workloads ``runs`` times on each engine; print and return the report."""
    folder = tempfile.mkdtemp(prefix="errands-bench-")
    targets = []
    if "sqlite" in engines:
        targets.append(Target.sqlite(str(Path(folder) / "bench.db")))
    if "postgres" in engines:
        targets.append(Target.postgres(os.environ.get("ERRANDS_BENCH_PG_URL", PG_URL)))
    env = environment(targets)
    console.print("errands benchmark: " + "; ".join(f"{k} {v}" for k, v in env.items()))
    console.print(f"runs per figure: {runs}; median shown; quick={quick}")
    chosen = [w for w in WORKLOADS if workloads is None or w.name in workloads]
    if not hasattr(os, "sched_setaffinity"):  # --pin-cpus is Linux only
        chosen = [w for w in chosen if not w.name.endswith(" pinned")]
    results: dict[str, Any] = {"environment": env, "runs": runs, "quick": quick, "figures": []}
    table = Table("workload", "engine", "figure", "median", "all runs")
    for workload in chosen:
        for target in targets:
            samples: dict[str, list[float]] = {}
            for _ in range(runs):
                try:
                    figures = workload.run(target, quick)
                except Exception as exc:  # one broken workload must not lose the others
                    console.print(f"[red]{workload.name} on {target.engine} failed: {exc}[/]")
                    samples.setdefault("failed", []).append(1.0)
                    continue
                for key, value in figures.items():
                    samples.setdefault(key, []).append(value)
            for key, values in samples.items():
                median = statistics.median(values)
                results["figures"].append(
                    {
                        "workload": workload.name,
                        "engine": target.engine,
                        "figure": key,
                        "median": median,
                        "runs": values,
                    }
                )
                table.add_row(
                    workload.name,
                    target.engine,
                    key,
                    _shown(median),
                    ", ".join(_shown(v) for v in values),
                )
            console.print(f"done: {workload.name} on {target.engine}")
    console.print(table)
    return results


@click.command("bench")
@click.option(
    "--engine", type=click.Choice(["sqlite", "postgres", "all"]), default="all", show_default=True
)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    type=click.Choice([w.name for w in WORKLOADS]),
    help="Only these (repeatable).",
)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--quick", is_flag=True, help="A tenth of the jobs: a smoke run, not a figure.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the JSON report here.")
def bench_command(
    engine: str, workloads: tuple[str, ...], runs: int, quick: bool, output: str | None
) -> None:
    """Measure enqueue and drain rates, latency and memory on SQLite and PostgreSQL.

    Example: errands bench --engine sqlite --runs 3 --output bench.json
    """
    engines = ["sqlite", "postgres"] if engine == "all" else [engine]
    report = bench(engines, list(workloads) or None, runs, quick, Console())
    if output:
        Path(output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    bench_command()
