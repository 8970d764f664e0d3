"""``--pin-cpus``: which core each worker process gets, and that every thread is pinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from errands.errors import ConfigError
from errands.runtime import affinity
from errands.runtime.affinity import WORKER_INDEX_ENV, core_for, pin_worker, worker_index

linux_only = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="--pin-cpus is Linux only"
)


def test_worker_processes_take_the_allowed_cores_in_turn() -> None:
    cores = {6, 2, 4}
    assert [core_for(index, cores) for index in range(5)] == [2, 4, 6, 2, 4]


def test_no_core_at_all_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no core"):
        core_for(0, set())


def test_the_worker_index_comes_from_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_INDEX_ENV, raising=False)
    assert worker_index() == 0, "a worker alone is number 0"
    monkeypatch.setenv(WORKER_INDEX_ENV, "3")
    assert worker_index() == 3
    monkeypatch.setenv(WORKER_INDEX_ENV, "three")
    with pytest.raises(ConfigError, match=r"ERRANDS_WORKER_INDEX .*'three'"):
        worker_index()


def test_a_system_without_affinity_refuses_naming_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    with pytest.raises(ConfigError, match="--pin-cpus: this system cannot pin"):
        pin_worker(0)
    assert affinity.unpinned_cpus() is None


@linux_only
def test_every_thread_is_pinned_and_the_old_cores_remembered() -> None:
    # In a child process: pinning the test process would slow the rest of the suite.
    script = textwrap.dedent(
        """
        import json, os, threading
        from errands.runtime.affinity import pin_worker, unpinned_cpus

        allowed = sorted(os.sched_getaffinity(0))
        go = threading.Event()
        early = threading.Thread(target=go.wait)
        early.start()
        core = pin_worker(1)
        print(json.dumps({
            "allowed": allowed,
            "core": core,
            "main": sorted(os.sched_getaffinity(0)),
            "early": sorted(os.sched_getaffinity(early.native_id)),
            "unpinned": sorted(unpinned_cpus() or []),
        }))
        go.set()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    seen = json.loads(out)
    assert seen["core"] == core_for(1, seen["allowed"])
    assert seen["main"] == seen["early"] == [seen["core"]], "threads already running too"
    assert seen["unpinned"] == seen["allowed"]


def test_the_worker_command_refuses_it_where_it_cannot_pin(tmp_path: Path) -> None:
    """A usage error naming the option, before the worker starts (a subprocess: it could run)."""
    script = "import os, sys; del os.sched_setaffinity; from errands.cli import cli; cli()"
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    done = subprocess.run(
        [sys.executable, "-c", script, "--database-url", url, "worker", "--pin-cpus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--pin-cpus: this system cannot pin a process to a core" in done.stderr


def test_a_bad_worker_index_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "pinapp.py").write_text(
        f"import errands\napp = errands.App('sqlite:///{tmp_path / 'jobs.db'}')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        WORKER_INDEX_ENV: "first",
    }
    command = [sys.executable, "-m", "errands", "--app", "pinapp:app", "worker", "--pin-cpus"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "ERRANDS_WORKER_INDEX must be a whole number" in done.stderr
    assert "'first'" in done.stderr


@linux_only
def test_job_threads_take_every_core_back_and_other_pools_stay_pinned() -> None:
    script = textwrap.dedent(
        """
        import json, os
        from errands.runtime.affinity import pin_worker
        from errands.runtime.threads import JobThreads

        allowed = sorted(os.sched_getaffinity(0))
        core = pin_worker(0)
        jobs, database = JobThreads(unpinned=True), JobThreads("errands-db")
        print(json.dumps({
            "allowed": allowed,
            "core": core,
            "job": sorted(jobs.submit(os.sched_getaffinity, 0).result(5)),
            "db": sorted(database.submit(os.sched_getaffinity, 0).result(5)),
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    seen = json.loads(out)
    assert seen["job"] == seen["allowed"], "a job body's thread may use every core"
    assert seen["db"] == [seen["core"]], "errands' own threads stay on the worker's core"


def test_unpinning_a_thread_of_a_process_never_pinned_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *args: calls.append(args), raising=False)
    affinity.unpin_this_thread()
    assert calls == []
