"""The line a test worker process appends to ``$TEST_SINK``, outside the database.

Imported by the worker modules the integration tests write and run in other
processes (see :func:`tests.support.worker_pythonpath`), so that what ran, and
where, is known even when the database lost it.

Example::

    append("start", job.id, os.getpid(), time.time())
"""

from __future__ import annotations

import os


def append(*fields: object) -> None:
    """Append ``fields``, space-separated, as one line to the file named by ``$TEST_SINK``."""
    line = (" ".join(str(field) for field in fields) + "\n").encode()
    fd = os.open(os.environ["TEST_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)  # one short O_APPEND write: atomic across processes
    finally:
        os.close(fd)
