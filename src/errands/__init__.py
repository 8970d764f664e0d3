"""errands: durable background jobs for Python, kept in the database you already have.

Example::

    import errands

    app = errands.App("sqlite:///errands.db")

    @app.job(max_attempts=5)
    def greet(name: str) -> str:
        return f"hello {name}"

    greet.enqueue(name="Ada")
    app.drain()  # or app.run() / errands --app mymodule:app worker
"""

from errands import backoff
from errands.app import App
from errands.errors import (
    ConfigError,
    DatabaseError,
    ErrandsError,
    InvalidJobError,
    SchemaError,
    UnknownWorkerError,
)
from errands.job import Cancel, Discard, Job, JobOptions, JobState, NewJob, Snooze
from errands.unique import Unique
from errands.worker import JobFunction, Worker, current_job

__version__ = "0.1.0"

__all__ = [
    "App",
    "Cancel",
    "ConfigError",
    "DatabaseError",
    "Discard",
    "ErrandsError",
    "InvalidJobError",
    "Job",
    "JobFunction",
    "JobOptions",
    "JobState",
    "NewJob",
    "SchemaError",
    "Snooze",
    "Unique",
    "UnknownWorkerError",
    "Worker",
    "__version__",
    "backoff",
    "current_job",
]
