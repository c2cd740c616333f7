"""Polling helper for the e2e tests: wait for the cluster to reach a state.

Used by the e2e test modules. The control plane is real and asynchronous, so a
test polls for the state it expects instead of sleeping a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Call `check` until it returns a truthy value and return that value.

    Fails the test with `what` and the last value seen if `timeout` passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}"
            )
        time.sleep(interval)
