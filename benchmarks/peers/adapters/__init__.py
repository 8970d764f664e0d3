"""Library adapters for the side-by-side comparison, one small module per library.

``ADAPTERS`` maps a row name to ``module:Class``; a module is imported only when
its row is run, so a library that is not installed costs one line of output.

Example::

    from benchmarks.peers.adapters import load
    adapter = load("rq")(Settings())
"""

from __future__ import annotations

import importlib

from benchmarks.peers.adapters.base import Adapter, Settings

__all__ = ["ADAPTERS", "Adapter", "Settings", "load"]

#: Row name -> "module:Class", in the order the table prints them. errands rows first.
ADAPTERS: dict[str, str] = {
    "errands-pg": "errands:ErrandsPostgres",
    "errands-pg-async": "errands:ErrandsPostgresAsync",
    "errands-pg-async-sync-acks": "errands:ErrandsPostgresAsyncDurable",
    "errands-sqlite": "errands:ErrandsSqlite",
    "oban": "oban:Oban",
    "procrastinate": "procrastinate:Procrastinate",
    "pgqueuer": "pgqueuer:PgQueuer",
    "huey-sqlite": "huey:HueySqlite",
    "huey-redis": "huey:HueyRedis",
    "rq": "rq:Rq",
    "rq-simple": "rq:RqSimple",
}


def load(name: str) -> type[Adapter]:
    """The adapter class for row ``name`` (imports its library: may raise ImportError)."""
    module_name, _, class_name = ADAPTERS[name].partition(":")
    module = importlib.import_module(f"benchmarks.peers.adapters.{module_name}")
    cls: type[Adapter] = getattr(module, class_name)
    return cls
