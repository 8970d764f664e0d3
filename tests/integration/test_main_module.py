"""A script run as ``python tasks.py`` names its jobs as a worker importing ``tasks`` does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import errands

SCRIPT = textwrap.dedent(
    """
    import errands

    app = errands.App("sqlite:///jobs.db")

    @app.job()
    def greet(name: str) -> str:
        return "hello " + name

    @app.register
    class Report(errands.Worker):
        def perform(self, job: errands.Job) -> str:
            return "report"

    if __name__ == "__main__":
        greet.enqueue(name="Ada")
        app.enqueue(Report)
    """
)


def test_script_and_worker_agree_on_worker_names(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(SCRIPT)
    subprocess.run([sys.executable, "tasks.py"], cwd=tmp_path, check=True, timeout=60)
    app = errands.App(f"sqlite:///{tmp_path}/jobs.db")
    names = sorted(job.worker for job in app.list_jobs())
    assert names == ["tasks.Report", "tasks.greet"]
    # A worker importing the module registers the very same names.
    sys.path.insert(0, str(tmp_path))
    try:
        import tasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tasks", None)
    assert tasks.app.registry.names() == names


def test_python_dash_m_uses_the_module_name(tmp_path: Path) -> None:
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(SCRIPT.replace("jobs.db", "shop.db"))
    subprocess.run([sys.executable, "-m", "shop.tasks"], cwd=tmp_path, check=True, timeout=60)
    app = errands.App(f"sqlite:///{tmp_path}/shop.db")
    assert sorted(job.worker for job in app.list_jobs()) == [
        "shop.tasks.Report",
        "shop.tasks.greet",
    ]
