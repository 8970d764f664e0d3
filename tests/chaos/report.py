"""The results table, and the generator that records it in docs/reliability.md.

Generated sections sit between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
markers; everything else in the page is written by hand and left alone.

Example::

    update_docs("chaos-results", table(results, command="python -m tests.chaos"))
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Sequence
from pathlib import Path

from tests.chaos.harness import REPO, Result

DOCS = REPO / "docs" / "reliability.md"


def table(results: Sequence[Result], *, command: str | None = None) -> str:
    """A Markdown table of ``results`` (one row per scenario and engine)."""
    lines = []
    if command is not None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines += [
            f"Made by `{command}` on {stamp} ({platform.python_implementation()} "
            f"{platform.python_version()}, {platform.system()}).",
            "",
        ]
    lines += [
        "| scenario | engine | jobs | faults | lost | duplicates (concurrent) "
        "| re-runs (sequential, after rescue) | recovery (s) | run (s) | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        recovery = "-" if r.recovery is None else f"{r.recovery:.2f}"
        verdict = "ok" if r.ok else f"**FAIL** ({len(r.problems)} problem(s))"
        lines.append(
            f"| {r.scenario} | {r.engine} | {r.jobs} | {r.faults} | {r.lost} | {r.duplicates} "
            f"| {r.reruns} | {recovery} | {r.seconds:.1f} | {verdict} |"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        lines += ["", "Problems (first 3 per failing run):", ""]
        for r in failed:
            for problem in r.problems[:3]:
                first = problem.splitlines()[0]
                lines.append(f"- {r.scenario}/{r.engine}: {first}")
    return "\n".join(lines) + "\n"


def update_docs(section: str, body: str, path: Path = DOCS) -> None:
    """Replace the generated ``section`` of ``path`` with ``body`` (appended if absent)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Reliability\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
