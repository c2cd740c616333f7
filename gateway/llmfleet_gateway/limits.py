"""Tenant limits at the gateway: requests and tokens per minute, concurrency, a daily budget.

Who uses it: :mod:`.server` calls :meth:`Limits.admit` before routing a tenant's request and
:meth:`Limits.settle` when it ends, however it ends. Limits that cannot be overshot:

* Tokens are reserved, not counted afterwards: admission takes the prompt's estimate plus the
  request's ``max_tokens`` (the server caps a request without one at what it reserved), and
  settling gives back what the engine did not use, or charges what it used beyond. Concurrent
  requests therefore never spend the same tokens twice (Envoy AI Gateway#680 charges after).
* Windows are the wall clock's: the UTC minute and the UTC day, the same for every gateway
  replica, so their shares add up to the limit.
* Each replica enforces its ``share`` of every limit (``--limit-share``: 1/replicas). With a
  shared store (:mod:`.quota`) the minute and day windows are leased from it in batches
  instead, exact across replicas; when it is unreachable the share applies again.

A refusal is a :class:`~.forward.RateLimitedError` (429) with OpenAI's headers:
``x-ratelimit-limit-*``, ``-remaining-*`` and ``-reset-*`` for requests and tokens, and
``retry-after(-ms)``; a spent daily budget is ``insufficient_quota`` with
``x-should-retry: false``, so the SDK does not retry in vain. Every answer to a tenant
carries the same ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from llmfleet_gateway.forward import RateLimitedError
from llmfleet_gateway.tenants import Tenant

MINUTE_S = 60.0
DAY_S = 86_400.0


class Resource(StrEnum):
    """What a window counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    DAY_TOKENS = "day-tokens"


@dataclass
class Window:
    """One tenant's use of one resource in one window at this gateway."""

    index: int
    """Which minute (or day) since the epoch."""
    taken: int = 0
    capacity: int = 0
    """What this gateway may take in the window: its share, or what it leased."""


@dataclass(frozen=True)
class Reservation:
    """What an admitted request took, to settle when it ends."""

    tenant: Tenant
    tokens: int
    minute: int
    day: int


@dataclass
class _Account:
    windows: dict[Resource, Window] = field(default_factory=dict)
    in_flight: int = 0


class Limits:
    """Every tenant's windows at this gateway."""

    def __init__(self, share: float = 1.0, wall: Callable[[], float] = time.time) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the limit share must be in (0, 1], got {share}")
        self.share = share
        self.wall = wall
        self.accounts: dict[tuple[str, str], _Account] = {}

    # -- the windows -----------------------------------------------------------------

    def limit(self, tenant: Tenant, resource: Resource) -> int | None:
        limits = tenant.limits
        if resource is Resource.REQUESTS:
            return limits.requests_per_minute
        if resource is Resource.TOKENS:
            return limits.tokens_per_minute
        return limits.tokens_per_day

    def window(self, tenant: Tenant, resource: Resource, now: float) -> Window | None:
        """The tenant's current window of ``resource`` (None: no such limit), a new one with
        this gateway's share when the last one ended."""
        limit = self.limit(tenant, resource)
        if limit is None:
            return None
        index = int(now // (DAY_S if resource is Resource.DAY_TOKENS else MINUTE_S))
        account = self.accounts.setdefault(tenant.key, _Account())
        found = account.windows.get(resource)
        if found is None or found.index != index:
            found = account.windows[resource] = Window(index, 0, self.capacity(limit))
        return found

    def capacity(self, limit: int) -> int:
        """This gateway's share of ``limit`` (at least 1, so a small limit still admits)."""
        return max(1, math.floor(limit * self.share))

    # -- requests ----------------------------------------------------------------------

    def admit(self, tenant: Tenant, tokens: int) -> Reservation:
        """Take one request and ``tokens`` for ``tenant``; RateLimitedError when over."""
        now = self.wall()
        account = self.accounts.setdefault(tenant.key, _Account())
        concurrent = tenant.limits.concurrent_requests
        if concurrent is not None and account.in_flight >= math.ceil(concurrent * self.share):
            raise RateLimitedError(
                f"Tenant {tenant.name} has {concurrent} requests in flight, its limit;"
                " retry when one ends.",
                1.0,
                headers=self.headers(tenant),
            )
        requests = self.window(tenant, Resource.REQUESTS, now)
        minute = self.window(tenant, Resource.TOKENS, now)
        day = self.window(tenant, Resource.DAY_TOKENS, now)
        if day is not None and day.taken + tokens > day.capacity:
            raise RateLimitedError(
                f"Tenant {tenant.name} has spent its budget of {tenant.limits.tokens_per_day}"
                " tokens for today (UTC).",
                _until_next(now, DAY_S),
                code="insufficient_quota",
                headers=self.headers(tenant),
                retry=False,
            )
        if minute is not None and tokens > minute.capacity:
            raise RateLimitedError(
                f"The request needs {tokens} tokens (prompt and max_tokens), more than tenant"
                f" {tenant.name} may use in a minute ({tenant.limits.tokens_per_minute}):"
                " lower max_tokens or shorten the prompt.",
                _until_next(now, MINUTE_S),
                headers=self.headers(tenant),
                retry=False,
            )
        for window, need, what in ((requests, 1, "requests"), (minute, tokens, "tokens")):
            if window is not None and window.taken + need > window.capacity:
                raise RateLimitedError(
                    f"Tenant {tenant.name} is over its {what} per minute; retry after the"
                    " window resets.",
                    _until_next(now, MINUTE_S),
                    headers=self.headers(tenant),
                )
        for window, need in ((requests, 1), (minute, tokens), (day, tokens)):
            if window is not None:
                window.taken += need
        account.in_flight += 1
        return Reservation(
            tenant,
            tokens,
            minute.index if minute else -1,
            day.index if day else -1,
        )

    def settle(self, reservation: Reservation, used: int) -> None:
        """The request ended having used ``used`` tokens: give back the rest of its
        reservation, or charge what it used beyond, in the windows it was taken from while
        they last (a later window is charged for an excess)."""
        tenant = reservation.tenant
        account = self.accounts.get(tenant.key)
        if account is None:
            return
        account.in_flight = max(0, account.in_flight - 1)
        now = self.wall()
        for resource, index in (
            (Resource.TOKENS, reservation.minute),
            (Resource.DAY_TOKENS, reservation.day),
        ):
            window = self.window(tenant, resource, now)
            if window is None:
                continue
            if window.index == index:
                window.taken = max(0, window.taken + used - reservation.tokens)
            elif used > reservation.tokens:
                window.taken += used - reservation.tokens

    def headers(self, tenant: Tenant) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the tenant's minute windows."""
        now = self.wall()
        reset = f"{max(1, round(_until_next(now, MINUTE_S) * 1000))}ms"
        out: dict[str, str] = {}
        for resource in (Resource.REQUESTS, Resource.TOKENS):
            window = self.window(tenant, resource, now)
            if window is None:
                continue
            out[f"x-ratelimit-limit-{resource}"] = str(window.capacity)
            out[f"x-ratelimit-remaining-{resource}"] = str(max(0, window.capacity - window.taken))
            out[f"x-ratelimit-reset-{resource}"] = reset
        return out


def _until_next(now: float, period: float) -> float:
    return period - now % period
