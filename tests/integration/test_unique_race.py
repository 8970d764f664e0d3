"""Uniqueness under a real race (invariant 5): many processes enqueue the same unique job at once.

8 processes wait at a start line, then each makes 200 enqueue calls (and a few
bulk ones) of one unique job. Exactly one row must exist, and every call must
have returned that row's id: the unique index decides, never a read-then-write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import errands
from tests.support import wait_for

pytestmark = pytest.mark.slow

PROCESSES = 8
CALLS = 200

RACER = textwrap.dedent(
    """
    import json, os, sys, time
    import errands

    app = errands.App(
        os.environ["TEST_DATABASE_URL"], schema=os.environ.get("TEST_SCHEMA") or None
    )

    @app.job(name="race", unique=errands.Unique(keys=["key"]))
    def race(key: str, n: int = 0) -> None: ...

    app.ensure_schema()
    app.get_job(1)  # connect before the start line
    index = sys.argv[1]
    open(os.path.join(os.environ["TEST_DIR"], f"ready-{index}"), "w").close()
    go = os.path.join(os.environ["TEST_DIR"], "go")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.0005)
    ids = []
    for n in range(int(os.environ["TEST_CALLS"])):
        ids.append(race.enqueue(key="same", n=n).id)
        if n % 10 == 0:
            ids.extend(job.id for job in app.enqueue_many([race.new(key="same", n=-n)] * 2))
    print(json.dumps(ids))
    """
)


def test_concurrent_enqueues_of_one_unique_job_make_one_row(
    tmp_path: Path, database_url: str, schema: str | None
) -> None:
    setup = errands.App(database_url, schema=schema, auto_migrate=True)
    setup.migrate()
    (tmp_path / "racer.py").write_text(RACER)
    env = {
        **os.environ,
        "TEST_DATABASE_URL": database_url,
        "TEST_SCHEMA": schema or "",
        "TEST_DIR": str(tmp_path),
        "TEST_CALLS": str(CALLS),
    }
    racers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "racer.py"), str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for index in range(PROCESSES)
    ]
    try:
        wait_for(
            lambda: all((tmp_path / f"ready-{i}").exists() for i in range(PROCESSES)),
            timeout=60,
        )
        (tmp_path / "go").touch()
        outputs = [racer.communicate(timeout=120) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err.decode()[-2000:]

    ids = [job_id for out, _ in outputs for job_id in json.loads(out)]
    assert len(ids) == PROCESSES * (CALLS + 2 * (CALLS // 10))
    assert len(set(ids)) == 1
    counts = setup.queue_counts()
    assert counts == {"default": {"available": 1}}
    (job,) = setup.list_jobs()
    assert job.id == ids[0] and job.args["key"] == "same"
    setup.close()
