"""How long a failed job waits before its next attempt.

The default follows Oban's curve: ``15 + 2**attempt`` seconds, with +/-10%
jitter so that a burst of failures does not retry as one burst.

Example::

    class Flaky(errands.Worker, queue="default"):
        def backoff(self, job: errands.Job) -> float:
            if isinstance(job.exception, RateLimited):
                return 60.0
            return errands.backoff.exponential(job.attempt)
"""

from __future__ import annotations

import random

__all__ = ["exponential", "linear"]

#: An attempt number past which the exponent stops growing (2**20 s is ~12 days).
_MAX_EXPONENT = 20


def exponential(
    attempt: int,
    *,
    base: float = 15.0,
    factor: float = 2.0,
    jitter: float = 0.1,
    maximum: float | None = None,
) -> float:
    """``base + factor**attempt`` seconds, jittered by ``+/- jitter`` (a fraction).

    >>> 15 + 2 ** 3 * 0.9 <= exponential(3) <= 15 + 2 ** 3 * 1.1 + 15 * 0.2
    True
    """
    delay = base + factor ** min(attempt, _MAX_EXPONENT)
    if jitter:
        delay *= 1 + random.uniform(-jitter, jitter)
    if maximum is not None:
        delay = min(delay, maximum)
    return max(delay, 0.0)


def linear(attempt: int, *, step: float = 10.0, maximum: float | None = None) -> float:
    """``step * attempt`` seconds, capped at ``maximum``.

    >>> linear(3)
    30.0
    """
    delay = step * attempt
    return delay if maximum is None else min(delay, maximum)
