"""Numbered, idempotent schema migrations, one folder of ``.sql`` files per dialect.

A file is named ``NNNN_what.sql``; its number is the schema version it brings
the database to. Engines apply the files above the stored version in order and
record each one in ``errands_schema``.

Example::

    >>> [version for version, _, _ in migrations("sqlite")][:1]
    [1]
"""

from __future__ import annotations

from importlib import resources

__all__ = ["latest_version", "migrations"]


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every migration of ``dialect``, in order."""
    folder = resources.files("errands.engines.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def latest_version(dialect: str) -> int:
    """The schema version the code expects for ``dialect``."""
    return migrations(dialect)[-1][0]
