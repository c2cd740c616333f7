"""Who may take the operator's Lease (pure decision).

Cases: a missing, empty or own lease may be taken; another holder's fresh lease may
not; an expired one may.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmfleet_operator.leader import Holder, may_take

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("holder", "allowed"),
    [
        (None, True),
        (Holder(None, None, 15), True),
        (Holder("me", NOW, 15), True),
        (Holder("other", NOW - timedelta(seconds=10), 15), False),
        (Holder("other", NOW - timedelta(seconds=16), 15), True),
        (Holder("other", None, 15), True),
    ],
)
def test_may_take(holder: Holder | None, allowed: bool) -> None:
    assert may_take(holder, "me", NOW) is allowed
