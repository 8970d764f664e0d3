"""One library's worker process: build it, say ``ready``, start on ``go``, run until stopped.

The parent (compare.py) starts the clock when it writes ``go``, so imports and
interpreter start-up are outside the clock for every library alike; the
library's own start-up (connecting, checking its schema, forking) is inside.

Example (what the parent runs, from the repository root)::

    PEERS_SETTINGS='{...}' python -m benchmarks.peers.worker oban 10
"""

from __future__ import annotations

import logging
import os
import sys

from benchmarks.peers.adapters import load
from benchmarks.peers.adapters.base import Settings


def main() -> None:
    """Entry point of ``python -m benchmarks.peers.worker NAME CONCURRENCY``."""
    name, concurrency = sys.argv[1], int(sys.argv[2])
    # The same log level for every library: per-job INFO lines would cost CPU unevenly.
    logging.basicConfig(level=logging.WARNING)
    run = load(name)(Settings.from_env()).prepare_worker(concurrency)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads stdout from here on
    run()


if __name__ == "__main__":
    main()
