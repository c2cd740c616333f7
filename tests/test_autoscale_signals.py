"""Which signals the status shows (``settled``): the last shown ones stand while every signal
stays within its step of them and they are younger than the refresh period, so a fleet at
steady load costs no status write per control period.

Cases: a first reading is shown; a small move is not, a step is (per signal: one request
waiting, a tenth of the KV cache or slots, a quarter of pending tokens or request rate); a
signal that appears or goes is shown; a new learned startup time is shown; anything is shown
once the shown reading is older than the refresh period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmfleet_contract.api import Signals
from llmfleet_operator.autoscaler import SIGNALS_REFRESH_SECONDS, settled

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SHOWN = Signals(
    prefill_queue=2.0,
    kv_cache_usage=0.5,
    slots_used=0.75,
    pending_prefill_tokens=4000.0,
    requests_per_second=8.0,
    sampled_at=T0,
    learned_startup_seconds=40.0,
)


def moved(**values: object) -> Signals:
    return SHOWN.model_copy(update={"sampled_at": T0 + timedelta(seconds=30), **values})


@pytest.mark.parametrize(
    ("fresh", "shown"),
    [
        (moved(), False),
        (moved(prefill_queue=2.9, kv_cache_usage=0.59, slots_used=0.66), False),
        (moved(pending_prefill_tokens=4900.0, requests_per_second=6.1), False),
        (moved(prefill_queue=3.0), True),
        (moved(kv_cache_usage=0.4), True),
        (moved(slots_used=0.85), True),
        (moved(pending_prefill_tokens=5000.0), True),
        (moved(requests_per_second=10.0), True),
        (moved(requests_per_second=None), True),
        (moved(learned_startup_seconds=55.0), True),
    ],
)
def test_a_move_is_shown_when_it_reaches_its_step(fresh: Signals, shown: bool) -> None:
    assert settled(SHOWN, fresh, T0 + timedelta(seconds=30)) == (fresh if shown else SHOWN)


def test_a_first_reading_and_an_old_one_are_replaced() -> None:
    fresh = moved()
    assert settled(None, fresh, T0) == fresh
    late = T0 + timedelta(seconds=SIGNALS_REFRESH_SECONDS)
    assert settled(SHOWN, fresh, late) == fresh
    assert settled(SHOWN, None, T0) is None
