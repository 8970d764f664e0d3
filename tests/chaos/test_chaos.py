"""Every chaos scenario on every engine it applies to, judged by the harness's checks.

A failure prints the scenario's summary: the counts and each problem found
(lost jobs, concurrent runs, runs never handed back, a corrupt SQLite file...).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.chaos.scenarios import all_runs, pg_restart_allowed, run_scenario
from tests.support import POSTGRES_URL

pytestmark = pytest.mark.slow


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
    return None


RUNS = all_runs()


@pytest.mark.parametrize(("scenario", "engine"), RUNS, ids=[f"{s}-{e}" for s, e in RUNS])
def test_scenario(scenario: str, engine: str, chaos_scale: float, tmp_path: Path) -> None:
    if engine == "postgres" and (problem := _postgres_reachable()):
        pytest.fail(problem)
    if scenario == "postgres-restart" and (reason := pg_restart_allowed()):
        pytest.skip(reason)
    result = run_scenario(scenario, engine, chaos_scale, workdir=tmp_path)
    print(result.summary())
    assert result.jobs > 0 and result.faults > 0, result.summary()
    assert result.lost == 0, result.summary()
    assert result.duplicates == 0, result.summary()
    assert result.ok, result.summary()
