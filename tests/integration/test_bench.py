"""`errands bench` runs its workloads end to end and reports medians with the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "errands",
            "bench",
            "--engine",
            "sqlite",
            "--runs",
            "1",
            "--quick",
            "--workload",
            "enqueue",
            "--workload",
            "drain c=10",
            "--workload",
            "cpu 10ms process c=2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["environment"]["cores"] >= 1 and report["environment"]["sqlite"]
    figures = {(f["workload"], f["figure"]): f for f in report["figures"]}
    assert not [key for key in figures if key[1] == "failed"], figures
    for key in [
        ("enqueue", "enqueue_many_jobs_s"),
        ("drain c=10", "jobs_s"),
        ("cpu 10ms process c=2", "jobs_s"),
    ]:
        figure = figures[key]
        assert figure["median"] > 0 and len(figure["runs"]) == 1
    assert figures[("drain c=10", "rss_mib")]["median"] > 5
