"""Queue options for cross-node limits: global_limit, rate_limit, partition."""

from __future__ import annotations

from typing import Any

import pytest

import errands
from errands.config import parse_queues
from errands.limits import Partition, QueueLimits, RateLimit, claim_params


def test_limits_are_parsed() -> None:
    queues = parse_queues(
        {
            "mail": {"limit": 10, "global_limit": 20, "rate_limit": (100, 60)},
            "sync": {"global_limit": 2, "partition": {"by": "args", "keys": ["account_id"]}},
            "api": {"rate_limit": [5, 0.5], "partition": {"by": "worker"}},
            "plain": 4,
        }
    )
    mail, sync, api, plain = queues["mail"], queues["sync"], queues["api"], queues["plain"]
    assert (mail.limit, mail.global_limit, mail.rate_limit) == (10, 20, RateLimit(100, 60.0))
    assert mail.partition is None
    assert sync.limit == 10, "the local limit keeps its default"
    assert sync.partition == Partition("args", ("account_id",))
    assert api.rate_limit == RateLimit(5, 0.5)
    assert api.partition == Partition("worker")
    assert plain.limits is None, "no global option: the plain claim"
    assert mail.limits == QueueLimits(20, RateLimit(100, 60.0), None)
    assert api.limits == QueueLimits(None, RateLimit(5, 0.5), Partition("worker"))


def test_limits_reach_the_app() -> None:
    app = errands.App("sqlite:///:memory:", queues={"q": {"global_limit": 3}})
    assert app.queues["q"].global_limit == 3
    assert app.queue_config("other").limits is None


def test_room_and_scan() -> None:
    assert QueueLimits(global_limit=3).room == 3
    assert QueueLimits(global_limit=3, rate_limit=RateLimit(2, 1)).room == 2
    assert QueueLimits(rate_limit=RateLimit(7, 1)).room == 7
    assert QueueLimits(global_limit=3).scan(5) == 5
    assert QueueLimits(global_limit=3, partition=Partition("worker")).scan(5) == 200
    assert QueueLimits(global_limit=3, partition=Partition("worker")).scan(50) == 1000


def test_claim_params() -> None:
    limits = QueueLimits(2, RateLimit(10, 60), Partition("args", ("a", "b")))
    assert claim_params(limits, 4) == {
        "global_limit": 2,
        "rate_count": 10,
        "rate_per": 60.0,
        "by": "args",
        "keys": ["a", "b"],
        "key1": "a",
        "key2": "b",
        **{f"key{i}": None for i in range(3, 9)},
        "default_room": 2,
        "scan": 200,
    }
    plain = claim_params(QueueLimits(global_limit=5), 3)
    assert (plain["by"], plain["keys"], plain["rate_count"], plain["scan"]) == ("none", [], None, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"global_limit": 0}, "queue 'q' global_limit must be an int >= 1, got 0"),
        ({"global_limit": True}, "global_limit must be an int >= 1, got True"),
        ({"global_limit": 2.5}, "global_limit must be an int >= 1, got 2.5"),
        ({"rate_limit": 100}, "queue 'q' rate_limit must be (count, per_seconds)"),
        ({"rate_limit": (100,)}, "got (100,)"),
        ({"rate_limit": (0, 60)}, "got (0, 60)"),
        ({"rate_limit": (10, 0)}, "got (10, 0)"),
        ({"rate_limit": (10, -1)}, "got (10, -1)"),
        ({"rate_limit": (10, float("nan"))}, "got (10, nan)"),
        ({"rate_limit": (10, float("inf"))}, "got (10, inf)"),
        ({"rate_limit": ("10", 60)}, "got ('10', 60)"),
        ({"rate_limit": (10, "60")}, "got (10, '60')"),
        ({"rate_limit": "10/60"}, "got '10/60'"),
        ({"rate_limit": (True, 60)}, "got (True, 60)"),
        ({"global_limit": 1, "partition": "worker"}, 'partition must be {"by": "worker"}'),
        ({"global_limit": 1, "partition": {"by": "queue"}}, "by must be one of worker, args"),
        ({"global_limit": 1, "partition": {}}, "by must be one of worker, args, got None"),
        ({"global_limit": 1, "partition": {"by": "args"}}, "keys must be a list of 1 to 8"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": []}}, "got []"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": "account"}}, "got 'account'"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": ["a.b"]}}, "got 'a.b'"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": ["1a"]}}, "got '1a'"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": [3]}}, "got 3"),
        ({"global_limit": 1, "partition": {"by": "args", "keys": ["a", "a"]}}, "not repeat"),
        (
            {"global_limit": 1, "partition": {"by": "args", "keys": list("abcdefghi")}},
            "1 to 8",
        ),
        ({"global_limit": 1, "partition": {"by": "worker", "keys": ["a"]}}, "keys go with"),
        ({"global_limit": 1, "partition": {"by": "worker", "key": "a"}}, "unknown option 'key'"),
        ({"partition": {"by": "worker"}}, "partition applies to global_limit and rate_limit"),
        ({"global_limt": 3}, "unknown option 'global_limt'"),
    ],
)
def test_bad_limit_options_name_the_queue_option_and_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(errands.ConfigError) as raised:
        parse_queues({"q": options})
    assert message in str(raised.value)
    with pytest.raises(errands.ConfigError):
        errands.App("sqlite:///:memory:", queues={"q": options})
