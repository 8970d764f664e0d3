"""Read PostgreSQL's ``auto_explain`` log: what each errands statement cost, and how it ran.

A plan the planner picks with a statement's values (a connection's first runs
of it) can differ from the one it settles on later, and a drain's few bad runs
hide in its average rate. With ``auto_explain`` logging every statement's
plan, :func:`summarize` adds them up per statement: runs, time, the runs that
read ``errands_jobs`` from end to end, and the rows filters read and dropped.
That is how the acks' first runs, each reading the whole table, were found
(docs/benchmarks.md, "Where the time goes").

``benchmarks/pg_plan_log.py`` runs a drain with it; :data:`AUTO_EXPLAIN` is
what it puts in ``PGOPTIONS`` for the workers' connections.

Example::

    text = Path("/var/log/postgresql/postgresql-15-main.log").read_text()
    for row in summarize(text, statement_names()):
        print(row)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["AUTO_EXPLAIN", "StatementPlans", "statement_names", "summarize"]

#: ``PGOPTIONS`` that log every statement's plan with its actual rows (no timing:
#: it would slow every node down), the statements run inside functions included.
AUTO_EXPLAIN = " ".join(
    f"-c {setting}"
    for setting in (
        "session_preload_libraries=auto_explain",
        "auto_explain.log_min_duration=0",
        "auto_explain.log_analyze=on",
        "auto_explain.log_timing=off",
        "auto_explain.log_nested_statements=on",
    )
)

_ENTRY = re.compile(r"^\S+ \S+ \S+ \[\d+\] .*?LOG:  duration: ([\d.]+) ms  plan:$", re.M)
_WHOLE_TABLE = re.compile(r"Seq Scan on errands_jobs\b")
_DROPPED = re.compile(r"Rows Removed by (?:Filter|Join Filter): (\d+)")
# psycopg sends %(name)s placeholders, those in comments too, to the server as $1, $2, ...
_PLACEHOLDER = re.compile(r"%\(\w+\)s|\$\d+")


@dataclass
class StatementPlans:
    """One statement's runs in the log (``name``: its errands SQL file, or its first line)."""

    name: str
    runs: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    #: Runs whose plan read errands_jobs from end to end (a sequential scan).
    whole_table_runs: int = 0
    #: Rows that filters (and join filters) read and dropped, over all runs.
    rows_dropped: int = 0

    @property
    def mean_ms(self) -> float:
        """Mean duration of one run."""
        return self.total_ms / self.runs if self.runs else 0.0


def statement_names(dialect: str = "postgres") -> dict[str, str]:
    """Each errands SQL file's first line (its opening comment) → the file's name.

    A logged query starts with the text of its file, comments included, so the
    first line tells which statement ran (placeholders read as ``$``).
    """
    names: dict[str, str] = {}
    folder = resources.files("errands.engines").joinpath("sql", dialect)
    for entry in folder.iterdir():
        if entry.name.endswith(".sql") and not entry.name.startswith("_"):
            first = entry.read_text().lstrip().splitlines()[0].strip()
            names.setdefault(_PLACEHOLDER.sub("$", first), entry.name.removesuffix(".sql"))
    return names


def _name(query: str, names: dict[str, str]) -> str:
    lines = [line.strip() for line in query.strip().splitlines() if line.strip()]
    if not lines:
        return "?"
    return names.get(_PLACEHOLDER.sub("$", lines[0]), lines[0][:60])


def summarize(log: str, names: dict[str, str]) -> list[StatementPlans]:
    """Per statement, what the ``auto_explain`` entries in ``log`` add up to; slowest first."""
    found: dict[str, StatementPlans] = {}
    starts = list(_ENTRY.finditer(log))
    for match, after in zip(starts, [*starts[1:], None], strict=True):
        # The query text, then its plan; no errands SQL file names a plan node.
        body = log[match.end() : after.start() if after is not None else len(log)]
        name = _name(body.split("Query Text:", 1)[-1], names)
        stats = found.setdefault(name, StatementPlans(name))
        ms = float(match.group(1))
        stats.runs += 1
        stats.total_ms += ms
        stats.max_ms = max(stats.max_ms, ms)
        stats.whole_table_runs += bool(_WHOLE_TABLE.search(body))
        stats.rows_dropped += sum(int(rows) for rows in _DROPPED.findall(body))
    return sorted(found.values(), key=lambda stats: -stats.total_ms)
