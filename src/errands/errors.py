"""Exceptions errands raises at the call that caused them.

Every error names the option or field at fault and the value it was given, so
that a user reading a traceback knows what to change without opening the
source. All of them derive from :class:`ErrandsError`.

Example::

    try:
        send_email.options(priority=12).enqueue(to="a@b.c")
    except errands.InvalidJobError as exc:
        print(exc)  # priority must be an int from 0 to 9, got 12
"""

from __future__ import annotations


class ErrandsError(Exception):
    """Base class of every error errands raises."""


class ConfigError(ErrandsError, ValueError):
    """An `App` option, queue option or database URL is not valid."""


class InvalidJobError(ErrandsError, ValueError):
    """A job's args or options are not valid; nothing was inserted."""


class UnknownWorkerError(ErrandsError, LookupError):
    """A worker name that is not in the app's registry."""


class DatabaseError(ErrandsError):
    """The database cannot be reached, opened or written."""


class SchemaError(DatabaseError):
    """The database schema is missing or older than this version of errands."""
