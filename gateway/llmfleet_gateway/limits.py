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
from dataclasses import dataclass
from enum import StrEnum

from llmfleet_gateway.forward import RateLimitedError
from llmfleet_gateway.quota import Store, lease_size
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
    key: str = ""
    """Its name in the quota store."""
    shared: bool = False
    """Leasing from the quota store (else: the local share)."""
    leased: int = 0
    """What the quota store counts for this replica in the window."""
    exhausted: bool = False
    """The store granted nothing more: the limit is spent across every replica."""
    granted_total: int = 0
    """Every replica's leases in the window, as the store said at the last lease."""


class _ShortLeaseError(Exception):
    """A window's lease is short: ask the store for more before deciding."""

    def __init__(self, window: Window, limit: int, need: int, ttl_s: int) -> None:
        super().__init__(window.key)
        self.window, self.limit, self.need, self.ttl_s = window, limit, need, ttl_s


@dataclass(frozen=True)
class Reservation:
    """What an admitted request took, to settle when it ends."""

    tenant: Tenant
    tokens: int
    minute: int
    day: int


@dataclass
class _Account:
    """One tenant's current windows (None: not opened yet, or no such limit) and requests in
    flight. A slot per resource, not a dict: every request reads them."""

    requests: Window | None = None
    tokens: Window | None = None
    day_tokens: Window | None = None
    in_flight: int = 0


_MINUTE_TTL_S = int(MINUTE_S) + 60
_DAY_TTL_S = int(DAY_S) + 60
"""A window's key in the quota store outlives the window by a minute."""
_REQUESTS_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_TOKENS_HEADERS = (
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
"""OpenAI's header names for a minute window: its limit, what remains, when it resets."""
_SLOTS = {
    Resource.REQUESTS: "requests",
    Resource.TOKENS: "tokens",
    Resource.DAY_TOKENS: "day_tokens",
}
"""Each resource's window on an :class:`_Account`."""


class Limits:
    """Every tenant's windows at this gateway."""

    def __init__(
        self,
        share: float = 1.0,
        wall: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the limit share must be in (0, 1], got {share}")
        self.share = share
        self.wall = wall
        self.store = store
        self.accounts: dict[tuple[str, str], _Account] = {}

    # -- the windows -----------------------------------------------------------------

    def _account(self, tenant: Tenant) -> _Account:
        account = self.accounts.get(tenant.key)
        if account is None:
            account = self.accounts[tenant.key] = _Account()
        return account

    def _window(
        self, tenant: Tenant, account: _Account, resource: Resource, limit: int, now: float
    ) -> Window:
        """The tenant's current window of ``resource`` (of ``limit``), kept on its account: a
        new one with this gateway's share (or leasing, with the store up) when the last one
        ended."""
        slot = _SLOTS[resource]
        found: Window | None = getattr(account, slot)
        index = int(now // (DAY_S if resource is Resource.DAY_TOKENS else MINUTE_S))
        if found is not None and found.index == index:
            return found
        key = f"{tenant.label}:{resource}:{index}"
        if self.store is not None and self.store.up:
            found = Window(index, 0, 0, key, shared=True)
        else:
            found = Window(index, 0, self.capacity(limit), key)
        setattr(account, slot, found)
        return found

    def capacity(self, limit: int) -> int:
        """This gateway's share of ``limit`` (at least 1, so a small limit still admits)."""
        return max(1, math.floor(limit * self.share))

    # -- requests ----------------------------------------------------------------------

    async def acquire(self, tenant: Tenant, tokens: int) -> Reservation:
        """:meth:`admit`, leasing more from the quota store first where a window is short
        (a window leases once at most: a full grant covers the need, a partial one marks
        it exhausted)."""
        for _ in range(len(Resource)):
            try:
                return self.admit(tenant, tokens)
            except _ShortLeaseError as short:
                await self._lease(short)
        # Other requests took the leases meanwhile: decide on what this replica holds.
        return self.admit(tenant, tokens, lease=False)

    async def _lease(self, short: _ShortLeaseError) -> None:
        window, store = short.window, self.store
        assert store is not None
        want = lease_size(short.limit, short.need)
        granted = await store.lease(window.key, short.limit, want, short.ttl_s)
        if granted is None:  # the store is down: this window runs on the local share
            self._local(window, short.limit)
        else:
            grant, total = granted
            window.granted_total = total
            # Less than asked: the limit is reached across the replicas. So each window
            # leases at most once per request, and acquire() ends within its rounds.
            window.exhausted = grant < want
            window.capacity += grant
            window.leased += grant

    def _local(self, window: Window, limit: int) -> None:
        window.shared = False
        window.capacity = max(window.capacity, self.capacity(limit))

    def _take(self, window: Window, need: int, ttl_s: int) -> None:
        """Count ``need`` on ``window``. What goes beyond the store's count for this replica
        (the store down, or a request that used more than it reserved) is added there at
        the next sync, so the other replicas' leases leave room for it."""
        before = window.taken
        window.taken += need
        if self.store is None:
            return
        over = window.taken - max(before, window.leased)
        if over <= 0:
            return
        self.store.add(window.key, over, ttl_s)
        window.leased += over
        if window.shared:
            window.capacity = max(window.capacity, window.leased)

    def ceiling(self, limit: int) -> int:
        """The most one window can admit at this replica: the whole limit when leasing (the
        store keeps the replicas within it), else the share."""
        return limit if self.store is not None and self.store.up else self.capacity(limit)

    def _room(
        self, window: Window | None, limit: int | None, need: int, lease: bool, ttl_s: int
    ) -> bool:
        """Whether ``window`` (of ``limit``; None: no such limit) can take ``need`` now
        (:class:`_ShortLeaseError`: a lease may add room)."""
        if window is None or limit is None or window.taken + need <= window.capacity:
            return True
        if window.shared and not window.exhausted and lease:
            if self.store is not None and self.store.up:
                raise _ShortLeaseError(window, limit, window.taken + need - window.capacity, ttl_s)
            self._local(window, limit)
            return window.taken + need <= window.capacity
        return False

    def admit(self, tenant: Tenant, tokens: int, lease: bool = True) -> Reservation:
        """Take one request and ``tokens`` for ``tenant``; RateLimitedError when over (and
        :class:`_ShortLeaseError`, for :meth:`acquire`, when a lease may make room)."""
        now = self.wall()
        account = self._account(tenant)
        limits = tenant.limits
        concurrent = limits.concurrent_requests
        if concurrent is not None and account.in_flight >= math.ceil(concurrent * self.share):
            raise RateLimitedError(
                f"Tenant {tenant.name} has {concurrent} requests in flight, its limit;"
                " retry when one ends.",
                1.0,
                headers=self.headers(tenant),
            )
        per_minute, per_day = limits.tokens_per_minute, limits.tokens_per_day
        if per_minute is not None and tokens > self.ceiling(per_minute):
            raise RateLimitedError(
                f"The request needs {tokens} tokens (prompt and max_tokens), more than tenant"
                f" {tenant.name} may use in a minute ({per_minute}):"
                " lower max_tokens or shorten the prompt.",
                _until_next(now, MINUTE_S),
                headers=self.headers(tenant),
                retry=False,
            )
        per_request = limits.requests_per_minute
        requests = minute = day = None
        if per_request is not None:
            requests = self._window(tenant, account, Resource.REQUESTS, per_request, now)
        if per_minute is not None:
            minute = self._window(tenant, account, Resource.TOKENS, per_minute, now)
        if per_day is not None:
            day = self._window(tenant, account, Resource.DAY_TOKENS, per_day, now)
        if not self._room(day, per_day, tokens, lease, _DAY_TTL_S):
            raise RateLimitedError(
                f"Tenant {tenant.name} has spent its budget of {per_day} tokens for today (UTC).",
                _until_next(now, DAY_S),
                code="insufficient_quota",
                headers=self.headers(tenant),
                retry=False,
            )
        if not self._room(requests, per_request, 1, lease, _MINUTE_TTL_S):
            raise self._over(tenant, Resource.REQUESTS, now)
        if not self._room(minute, per_minute, tokens, lease, _MINUTE_TTL_S):
            raise self._over(tenant, Resource.TOKENS, now)
        if requests is not None:
            self._take(requests, 1, _MINUTE_TTL_S)
        if minute is not None:
            self._take(minute, tokens, _MINUTE_TTL_S)
        if day is not None:
            self._take(day, tokens, _DAY_TTL_S)
        account.in_flight += 1
        return Reservation(
            tenant,
            tokens,
            minute.index if minute else -1,
            day.index if day else -1,
        )

    def _over(self, tenant: Tenant, resource: Resource, now: float) -> RateLimitedError:
        return RateLimitedError(
            f"Tenant {tenant.name} is over its {resource} per minute; retry after the window"
            " resets.",
            _until_next(now, MINUTE_S),
            headers=self.headers(tenant),
        )

    def settle(self, reservation: Reservation, used: int) -> None:
        """The request ended having used ``used`` tokens: give back the rest of its
        reservation (to this replica's window: a lease is not returned), or charge what it
        used beyond, in the windows it was taken from while they last (else the current)."""
        tenant = reservation.tenant
        account = self.accounts.get(tenant.key)
        if account is None:
            return
        account.in_flight = max(0, account.in_flight - 1)
        limits = tenant.limits
        if limits.tokens_per_minute is None and limits.tokens_per_day is None:
            return
        now = self.wall()
        extra = used - reservation.tokens
        if (per_minute := limits.tokens_per_minute) is not None:
            minute = self._window(tenant, account, Resource.TOKENS, per_minute, now)
            self._settle(minute, reservation.minute, extra, _MINUTE_TTL_S)
        if (per_day := limits.tokens_per_day) is not None:
            day = self._window(tenant, account, Resource.DAY_TOKENS, per_day, now)
            self._settle(day, reservation.day, extra, _DAY_TTL_S)

    def _settle(self, window: Window, index: int, extra: int, ttl_s: int) -> None:
        """Charge ``extra`` tokens beyond the reservation to ``window`` (the current one), or
        give back what was not used to the window the reservation was taken from, if it is."""
        if extra > 0:
            self._take(window, extra, ttl_s)
        elif window.index == index:
            window.taken = max(0, window.taken + extra)

    def headers(self, tenant: Tenant) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the tenant's minute windows, as this
        replica knows them (leasing: the limit less what the store has granted, plus what
        this replica's lease has left)."""
        now = self.wall()
        reset = f"{max(1, round(_until_next(now, MINUTE_S) * 1000))}ms"
        account, limits = self._account(tenant), tenant.limits
        out: dict[str, str] = {}
        if (per_request := limits.requests_per_minute) is not None:
            requests = self._window(tenant, account, Resource.REQUESTS, per_request, now)
            self._describe(out, _REQUESTS_HEADERS, requests, per_request, reset)
        if (per_minute := limits.tokens_per_minute) is not None:
            minute = self._window(tenant, account, Resource.TOKENS, per_minute, now)
            self._describe(out, _TOKENS_HEADERS, minute, per_minute, reset)
        return out

    def _describe(
        self,
        out: dict[str, str],
        names: tuple[str, str, str],
        window: Window,
        limit: int,
        reset: str,
    ) -> None:
        left = window.capacity - window.taken
        if window.shared:
            left += max(0, limit - window.granted_total) if not window.exhausted else 0
        limit_name, remaining_name, reset_name = names
        out[limit_name] = str(self.ceiling(limit))
        out[remaining_name] = str(max(0, left))
        out[reset_name] = reset


def _until_next(now: float, period: float) -> float:
    return period - now % period
