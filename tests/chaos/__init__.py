"""Chaos suite: real worker processes, injected faults, and checks outside the database.

Run it with ``pytest tests/chaos`` (CI size) or ``python -m tests.chaos`` (prints
the results table; ``--scale N`` for a bigger run, ``--write-docs`` to record it
in docs/reliability.md). See docs/reliability.md.
"""
