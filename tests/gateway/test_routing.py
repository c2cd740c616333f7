"""The replica choice, one table row per named behaviour, and its properties (pure: no
server, no clock).

Cases (the table): the least estimated time to first token wins; an engine's fresh waiting
queue counts beyond this gateway's own pending tokens, not twice; a cached prefix pulls a
request to its replica against the estimate, the deepest prefix first; a small shared
prefix is left to the estimate; bounded load overrides a hot prefix (and names it); session
affinity wins over the estimate and the prefix, and is dropped over the load cap, when
saturated or when its replica left; the cap binds the estimate too, unless every replica
within it is saturated; saturated replicas are skipped, all saturated gives no
replica with its reason, and so does an empty pool; stale or missing engine metrics are
ignored (queue, slots, KV) and the request still routes on the gateway's own accounting;
KV usage above the pressure mark is penalised, at it nothing; all slots busy adds a decode
step; ties go to the smaller name.
Also: the estimate's formula on one replica with every term; the log line; settings out
of range are refused.
Properties (derandomized): the choice is never a saturated replica, and is None only when
all are; adding load to a replica not chosen never makes it chosen; adding load to the
chosen replica never lowers its estimate; the order replicas are given in does not matter.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet_gateway.routing import (
    Choice,
    ReplicaLoad,
    RouteReason,
    RouteRequest,
    RoutingSettings,
    choose,
)

DETERMINISTIC = settings(derandomize=True, deadline=None)

SETTINGS = RoutingSettings(
    max_in_flight=4,
    prefill_tokens_per_s=1000.0,
    decode_step_s=0.05,
    stale_after_s=2.0,
    affinity_load_factor=1.25,
    kv_pressure=0.8,
    kv_penalty_s=1.0,
    typical_prompt_tokens=100,
    prefix_min_share=0.3,
)
"""Round numbers: an estimate in seconds is tokens / 1000."""


def own(name: str, **kw: Any) -> ReplicaLoad:
    """A replica never scraped: only the gateway's own accounting."""
    return ReplicaLoad(name, max_num_seqs=kw.pop("max_num_seqs", 4), **kw)


def scraped(name: str, age: float = 0.1, **kw: Any) -> ReplicaLoad:
    """A replica with engine metrics ``age`` seconds old (idle unless told)."""
    metrics = {"waiting": 0, "running": 0, "kv_cache_usage": 0.1} | kw
    return own(name, metrics_age_s=age, **metrics)


def ask(prompt: int = 500, session: str | None = None, **cached: int) -> RouteRequest:
    return RouteRequest(prompt, cached, block_tokens=64, session_replica=session)


IDLE = [own("a"), own("b")]

TABLE: list[tuple[str, list[ReplicaLoad], RouteRequest, str | None, RouteReason]] = [
    (
        "least-ttft",
        [own("a", pending_prefill_tokens=3000), own("b"), own("c", pending_prefill_tokens=900)],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "fresh-foreign-queue-counts",
        [scraped("a", waiting=5), own("b", pending_prefill_tokens=400)],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "own-pending-not-counted-twice",
        [scraped("a", waiting=3, pending_prefill_tokens=300), own("b", pending_prefill_tokens=400)],
        ask(),
        "a",
        RouteReason.LEAST_TTFT,
    ),
    (
        "prefix-pulls",
        [own("a", in_flight=1, pending_prefill_tokens=1000), own("b")],
        ask(1000, a=10),
        "a",
        RouteReason.PREFIX,
    ),
    (
        "deepest-prefix-first",
        [own("a"), own("b", in_flight=1, pending_prefill_tokens=500), own("c")],
        ask(1000, a=5, b=10),
        "b",
        RouteReason.PREFIX,
    ),
    (
        "small-prefix-left-to-estimate",
        [own("a", pending_prefill_tokens=1000), own("b")],
        ask(10_000, a=1),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "bounded-load-overrides-hot-prefix",
        [own("a", in_flight=3), own("b"), own("c", pending_prefill_tokens=10)],
        ask(1000, a=15),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "prefix-spills-to-next-deepest-within-cap",
        [own("a", in_flight=3), own("b", in_flight=1, pending_prefill_tokens=900), own("c")],
        ask(1000, a=15, b=8),
        "b",
        RouteReason.PREFIX,
    ),
    ("session", [own("a"), own("b", in_flight=1)], ask(session="b"), "b", RouteReason.SESSION),
    ("session-beats-prefix", IDLE, ask(1000, session="b", a=15), "b", RouteReason.SESSION),
    (
        "session-over-cap",
        [own("a", in_flight=3), own("b"), own("c")],
        ask(session="a"),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "session-saturated",
        [own("a", in_flight=4), own("b")],
        ask(session="a"),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    ("session-left", IDLE, ask(session="gone"), "a", RouteReason.LEAST_TTFT),
    (
        "saturated-skipped",
        [own("a", in_flight=4), own("b", in_flight=2, pending_prefill_tokens=2000)],
        ask(1000, a=15),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "over-cap-when-all-within-are-saturated",
        [scraped("a", waiting=3, running=8, max_num_seqs=8), own("b", in_flight=4)],
        ask(),
        "a",
        RouteReason.LEAST_TTFT,
    ),
    (
        "all-saturated",
        [own("a", in_flight=4), own("b", in_flight=5)],
        ask(),
        None,
        RouteReason.SATURATED,
    ),
    ("engine-queue-room", [scraped("a", waiting=3, running=4)], ask(), "a", RouteReason.LEAST_TTFT),
    (
        "slots-and-engine-queue-full",
        [scraped("a", waiting=3, running=2, max_num_seqs=1)],
        ask(),
        None,
        RouteReason.SATURATED,
    ),
    (
        "engine-queue-full-before-slots",  # a full KV cache queues with slots free
        [scraped("a", waiting=4, running=1, kv_cache_usage=0.99)],
        ask(),
        None,
        RouteReason.SATURATED,
    ),
    ("no-replica", [], ask(), None, RouteReason.NO_REPLICA),
    (
        "stale-metrics-ignored",
        [
            scraped("a", age=10, waiting=50, running=4, kv_cache_usage=0.99),
            own("b", pending_prefill_tokens=100),
        ],
        ask(),
        "a",
        RouteReason.LEAST_TTFT,
    ),
    (
        "all-stale-still-routes",
        [
            scraped("a", age=30, waiting=9, pending_prefill_tokens=200),
            scraped("b", age=30, waiting=1, pending_prefill_tokens=100),
        ],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "never-scraped-routes",
        [own("a", in_flight=2, pending_prefill_tokens=50), own("b", in_flight=1)],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "kv-pressure",
        [scraped("a", kv_cache_usage=0.95), own("b", pending_prefill_tokens=500)],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    (
        "kv-at-pressure-free",
        [scraped("a", kv_cache_usage=0.8), own("b", pending_prefill_tokens=1)],
        ask(),
        "a",
        RouteReason.LEAST_TTFT,
    ),
    (
        "all-slots-busy",
        [scraped("a", running=4), own("b", pending_prefill_tokens=40)],
        ask(),
        "b",
        RouteReason.LEAST_TTFT,
    ),
    ("ties-by-name", [own("c"), own("a"), own("b")], ask(), "a", RouteReason.LEAST_TTFT),
]


@pytest.mark.parametrize(
    ("replicas", "request_", "replica", "reason"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_choose(
    replicas: list[ReplicaLoad], request_: RouteRequest, replica: str | None, reason: RouteReason
) -> None:
    choice = choose(replicas, request_, SETTINGS)
    assert (choice.replica, choice.reason) == (replica, reason)


def test_over_cap_is_named() -> None:
    hot = [own("a", in_flight=3), own("b"), own("c")]
    assert choose(hot, ask(1000, a=15), SETTINGS).over_cap == "a"
    assert choose(hot, ask(session="a"), SETTINGS).over_cap == "a"
    assert choose(hot, ask(1000), SETTINGS).over_cap is None


def test_stale_metrics_say_so() -> None:
    choice = choose([scraped("a", age=10, waiting=50)], ask(), SETTINGS)
    assert (choice.replica, choice.fresh_metrics, choice.estimated_ttft_s) == ("a", False, 0.5)


def test_the_estimate() -> None:
    replica = scraped(
        "a", waiting=2, running=4, kv_cache_usage=0.9, in_flight=1, pending_prefill_tokens=150
    )
    choice = choose([replica], ask(1000, a=5), SETTINGS)
    # ahead max(150, 2 x 100) = 200; uncached 1000 - 5 x 64 = 680; slots all busy;
    # KV half-way from the pressure mark to full.
    assert choice.estimated_ttft_s == pytest.approx((200 + 680) / 1000 + 0.05 + 0.5)
    assert (choice.cached_blocks, choice.load, choice.fresh_metrics) == (5, 6, True)
    assert choice.load_cap == pytest.approx(1.25 * (6 + 1))


def test_describe() -> None:
    choice = choose([own("a", in_flight=3), own("b")], ask(1000, b=10), SETTINGS)
    assert choice.describe() == (
        "Routed to b (Prefix): 10 blocks cached, estimated TTFT 0.360s, load 0 (cap 3.12),"
        " 2 candidates, engine metrics stale or missing"
    )
    assert (
        Choice(None, RouteReason.SATURATED).describe()
        == "No replica chosen (Saturated): 0 not saturated"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"max_in_flight": 0},
        {"prefill_tokens_per_s": 0.0},
        {"affinity_load_factor": 0.9},
        {"kv_pressure": 1.0},
    ],
)
def test_settings_out_of_range_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RoutingSettings(**bad)


@st.composite
def replica_loads(draw: st.DrawFn, name: str) -> ReplicaLoad:
    scraped_ = draw(st.booleans())
    return ReplicaLoad(
        name,
        max_num_seqs=draw(st.integers(1, 8)),
        waiting=draw(st.integers(0, 10)) if scraped_ else None,
        running=draw(st.integers(0, 8)) if scraped_ else None,
        kv_cache_usage=draw(st.floats(0, 1)) if scraped_ else None,
        metrics_age_s=draw(st.sampled_from([0.0, 1.0, 5.0])) if scraped_ else None,
        in_flight=draw(st.integers(0, 5)),
        pending_prefill_tokens=draw(st.integers(0, 5000)),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[ReplicaLoad], RouteRequest, RoutingSettings]:
    names = [f"r{i}" for i in range(draw(st.integers(2, 6)))]
    replicas = [draw(replica_loads(name)) for name in names]
    holders = draw(st.lists(st.sampled_from(names), unique=True))
    request = RouteRequest(
        prompt_tokens=draw(st.integers(0, 4000)),
        cached_blocks={name: draw(st.integers(1, 60)) for name in holders},
        block_tokens=64,
        session_replica=draw(st.one_of(st.none(), st.sampled_from([*names, "gone"]))),
    )
    factor = draw(st.sampled_from([1.0, 1.25, 1.5, 2.0]))  # at most the replicas: see below
    return replicas, request, replace(SETTINGS, affinity_load_factor=factor)


@st.composite
def more_load(draw: st.DrawFn, replica: ReplicaLoad) -> ReplicaLoad:
    waiting = replica.waiting
    return replace(
        replica,
        in_flight=replica.in_flight + draw(st.integers(0, 3)),
        pending_prefill_tokens=replica.pending_prefill_tokens + draw(st.integers(0, 3000)),
        waiting=None if waiting is None else waiting + draw(st.integers(0, 5)),
        running=None if replica.running is None else replica.running + draw(st.integers(0, 3)),
    )


@DETERMINISTIC
@given(situations())
def test_never_a_saturated_replica(
    situation: tuple[list[ReplicaLoad], RouteRequest, RoutingSettings],
) -> None:
    replicas, request, routing = situation
    choice = choose(replicas, request, routing)
    open_ = {r.name for r in replicas if r.in_flight < routing.max_in_flight}
    if open_:
        assert choice.replica in open_
    else:
        assert (choice.replica, choice.reason) == (None, RouteReason.SATURATED)


@DETERMINISTIC
@given(situations(), st.data())
def test_more_load_never_attracts(
    situation: tuple[list[ReplicaLoad], RouteRequest, RoutingSettings], data: st.DataObject
) -> None:
    # With an affinity factor no larger than the replicas, a replica's own load grows at
    # least as fast as the bounded-load cap it raises, so it cannot climb back under it.
    replicas, request, routing = situation
    before = choose(replicas, request, routing)
    for i, replica in enumerate(replicas):
        heavier = [*replicas]
        heavier[i] = data.draw(more_load(replica))
        after = choose(heavier, request, routing)
        if replica.name != before.replica:
            assert after.replica != replica.name
        elif after.replica == replica.name:
            assert before.estimated_ttft_s is not None
            assert after.estimated_ttft_s is not None
            assert after.estimated_ttft_s >= before.estimated_ttft_s


@DETERMINISTIC
@given(situations())
def test_order_does_not_matter(
    situation: tuple[list[ReplicaLoad], RouteRequest, RoutingSettings],
) -> None:
    replicas, request, routing = situation
    assert choose(replicas, request, routing) == choose(replicas[::-1], request, routing)
