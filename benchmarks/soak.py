"""Soak test: a steady trickle of jobs for minutes; do latency, table size and memory stay flat?

One process inserts jobs at a steady rate, one worker process runs them (the
pruner deleting finished jobs after ``--prune-after`` seconds), and this driver
samples every ``--sample`` seconds:

- insert->start latency p50/p99 of the jobs that started in the window (each
  job body appends ``now - job.inserted_at`` to a file outside the database);
- the jobs table's row count;
- the worker's resident memory (``VmRSS``).

At the end it compares the last third of the samples with the first third
(medians, after a warm-up of ``--prune-after`` plus two pruner intervals) and prints
whether each stayed flat within the tolerances; the exit code is 1 if one did
not. Not part of CI.

Example::

    python -m benchmarks.soak --minutes 10                       # SQLite
    python -m benchmarks.soak --engine postgres --minutes 30 --rate 200
    python -m benchmarks.soak --minutes 10 --write-docs          # record in docs/reliability.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "reliability.md"
POSTGRES_URL = os.environ.get(
    "ERRANDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

SOAK_MODULE = textwrap.dedent(
    """
    import os, sys, time
    import errands

    app = errands.App(
        os.environ["SOAK_URL"],
        schema=os.environ.get("SOAK_SCHEMA") or None,
        auto_migrate=True,
        queues={"default": int(os.environ["SOAK_LIMIT"])},
        rescue_after=10,
        prune_after=float(os.environ["SOAK_PRUNE_AFTER"]),
        prune_interval=float(os.environ["SOAK_PRUNE_INTERVAL"]),
    )
    SINK = os.environ["SOAK_SINK"]

    @app.job(name="soak.work")
    def work(ms: float) -> None:
        job = errands.current_job()
        line = f"{time.time() - job.inserted_at:.6f}\\n".encode()
        fd = os.open(SINK, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        time.sleep(ms / 1000)

    def insert_steadily() -> None:
        rate = float(os.environ["SOAK_RATE"])
        ms = float(os.environ["SOAK_JOB_MS"])
        began = time.monotonic()
        n = 0
        while True:
            due = began + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            work.enqueue(ms=ms)
            n += 1

    if __name__ == "__main__":
        if sys.argv[1] == "insert":
            insert_steadily()
        else:
            app.run()
    """
)


@dataclass
class Sample:
    """One sampling window."""

    at: float
    started: int
    p50_ms: float
    p99_ms: float
    rows: int
    rss_mib: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


class Database:
    """The soak's database: a SQLite file or a PostgreSQL schema, and a row counter."""

    def __init__(self, engine: str, workdir: Path) -> None:
        self.engine = engine
        self.schema: str | None = None
        if engine == "sqlite":
            self.path = workdir / "soak.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.schema = f"errands_soak_{uuid.uuid4().hex[:8]}"
            self.url = POSTGRES_URL

    def rows(self) -> int:
        if self.engine == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
                return int(conn.execute("SELECT count(*) FROM errands_jobs").fetchone()[0])
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{self.schema}".errands_jobs').fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        if self.schema is None:
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


@contextlib.contextmanager
def processes(env: dict[str, str], workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], ...]]:
    """The worker and the inserter (both migrate on first use); both stopped on exit."""
    log = (workdir / "processes.log").open("wb")
    command = [sys.executable, str(workdir / "soakjobs.py")]
    worker = subprocess.Popen([*command, "work"], cwd=workdir, env=env, stderr=log)
    inserter: subprocess.Popen[bytes] | None = None
    try:
        inserter = subprocess.Popen([*command, "insert"], cwd=workdir, env=env, stderr=log)
        yield worker, inserter
    finally:
        for proc in (inserter, worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (inserter, worker):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()


def soak(args: argparse.Namespace) -> tuple[list[Sample], dict[str, tuple[bool, str]]]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="errands-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "soakjobs.py").write_text(SOAK_MODULE)
    database = Database(args.engine, workdir)
    sink = workdir / "latency.log"
    env = dict(os.environ)
    env.update(
        SOAK_URL=database.url,
        SOAK_SCHEMA=database.schema or "",
        SOAK_SINK=str(sink),
        SOAK_LIMIT=str(args.limit),
        SOAK_RATE=str(args.rate),
        SOAK_JOB_MS=str(args.job_ms),
        SOAK_PRUNE_AFTER=str(args.prune_after),
        SOAK_PRUNE_INTERVAL=str(max(1.0, args.prune_after / 6)),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])),
    )
    samples: list[Sample] = []
    offset = 0
    try:
        with processes(env, workdir) as (worker, inserter):
            began = time.monotonic()
            end = began + args.minutes * 60
            next_at = began + args.sample
            while time.monotonic() < end:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += args.sample
                for proc, name in ((worker, "worker"), (inserter, "inserter")):
                    if proc.poll() is not None:
                        tail = (workdir / "processes.log").read_text()[-3000:]
                        raise SystemExit(f"the {name} died ({proc.returncode}):\n{tail}")
                data = sink.read_bytes() if sink.exists() else b""
                chunk, offset = data[offset : data.rfind(b"\n") + 1], data.rfind(b"\n") + 1
                latencies = [float(x) * 1000 for x in chunk.split()]
                sample = Sample(
                    at=time.monotonic() - began,
                    started=len(latencies),
                    p50_ms=percentile(latencies, 0.50),
                    p99_ms=percentile(latencies, 0.99),
                    rows=database.rows(),
                    rss_mib=rss_mib(worker.pid),
                )
                samples.append(sample)
                print(
                    f"{sample.at:7.0f}s  started {sample.started:6d}  p50 {sample.p50_ms:8.1f} ms"
                    f"  p99 {sample.p99_ms:8.1f} ms  rows {sample.rows:7d}"
                    f"  worker RSS {sample.rss_mib:6.1f} MiB",
                    flush=True,
                )
    finally:
        database.drop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return samples, verdicts(samples, args)


def verdicts(samples: list[Sample], args: argparse.Namespace) -> dict[str, tuple[bool, str]]:
    """Last third against first third (medians), per metric: (flat?, explanation).

    Samples from the warm-up (until the pruner has had time to delete the first
    finished jobs: ``prune_after`` plus two pruner intervals) are left out.
    """
    warm = args.prune_after + 2 * max(1.0, args.prune_after / 6)
    steady = [s for s in samples if s.at > warm]
    if len(steady) < 3:
        steady = samples
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]

    def med(rows: list[Sample], field: str) -> float:
        return statistics.median(getattr(s, field) for s in rows)

    out: dict[str, tuple[bool, str]] = {}
    checks = [
        ("latency p50", "p50_ms", 2.0, 10.0, "ms"),
        ("latency p99", "p99_ms", 3.0, 50.0, "ms"),
        ("table rows", "rows", 1.5, 500.0, ""),
        ("worker RSS", "rss_mib", 1.25, 10.0, "MiB"),
    ]
    for name, field, ratio, slack, unit in checks:
        a, b = med(first, field), med(last, field)
        flat = b <= a * ratio + slack
        out[name] = (
            flat,
            f"{a:.1f} -> {b:.1f}{' ' + unit if unit else ''} "
            f"(flat if <= {ratio:g} x first + {slack:g})",
        )
    return out


def report(samples: list[Sample], results: dict[str, tuple[bool, str]], command: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Made by `{command}` on {stamp} ({platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()}, {os.cpu_count()} CPUs); "
        f"{len(samples)} samples, {sum(s.started for s in samples)} jobs started.",
        "",
        "| metric | first third -> last third (medians) | flat |",
        "|---|---|---|",
    ]
    for name, (flat, text) in results.items():
        lines.append(f"| {name} | {text} | {'yes' if flat else '**no**'} |")
    lines += [
        "",
        "Samples (every 10th):",
        "",
        "| t (s) | started | p50 ms | p99 ms | rows | RSS MiB |",
    ]
    lines.append("|---:|---:|---:|---:|---:|---:|")
    for s in samples[:: max(1, len(samples) // 10)]:
        lines.append(
            f"| {s.at:.0f} | {s.started} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.rows} "
            f"| {s.rss_mib:.1f} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(section: str, body: str, path: Path = DOCS) -> None:
    """Replace the generated ``section`` of docs/reliability.md (appended if absent)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Reliability\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs inserted per second")
    parser.add_argument("--job-ms", type=float, default=5.0, help="how long each job sleeps")
    parser.add_argument("--limit", type=int, default=10, help="the worker's queue limit")
    parser.add_argument("--prune-after", type=float, default=30.0, help="seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes * 60 < 3 * args.sample:
        parser.error("--minutes must cover at least three samples")
    samples, results = soak(args)
    command = "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(samples, results, command.strip())
    print()
    print(text)
    flat = all(ok for ok, _ in results.values())
    print("flat: yes" if flat else "flat: NO")
    if args.write_docs:
        update_docs(f"soak-{args.engine}", text)
        print("recorded in docs/reliability.md")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
