"""A process that used a PostgreSQL app exits promptly, closed or not.

Python 3.13 cannot join a connection pool's threads once interpreter shutdown
has frozen them: a pool left for garbage collection made every exit wait 5 s
per thread (~21 s). The engine closes pools still open at ``atexit``, while
their threads can still stop.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from errands.engines import pg_pool
from errands.engines.postgres import PostgresEngine
from tests.integration.postgres.conftest import EngineFactory
from tests.support import POSTGRES_URL

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import errands

    app = errands.App(sys.argv[1], schema=sys.argv[2], auto_migrate=True, poll_interval=0.05)

    @app.job()
    def noop() -> None:
        return None

    async def main() -> None:
        await app.start()
        noop.enqueue()
        await asyncio.sleep(0.3)
        await app.stop()

    asyncio.run(main())
    print("ran", flush=True)  # and exits without app.close(), as after app.run()
    """
)


def _pool_is_open(engine: PostgresEngine) -> bool:
    return any(pool in pg_pool._OPEN for pool in vars(engine).values())


def test_open_pools_are_closed_at_exit_and_forgotten_when_closed(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    engine.migrate()  # opens the pool
    assert _pool_is_open(engine)
    pg_pool._close_at_exit()
    assert not _pool_is_open(engine)
    assert engine.get_job(1) is None  # a closed pool opens again on use
    assert _pool_is_open(engine)
    engine.close()
    assert not _pool_is_open(engine)


def test_a_process_that_never_closed_its_app_exits_promptly(pg_schema: str) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, POSTGRES_URL, pg_schema],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0 and proc.stdout == "ran\n", proc.stderr
    assert "couldn't stop thread" not in proc.stderr
    assert took < 10, f"exit took {took:.1f} s"
