"""The response cache: a tenant's repeated deterministic request answered without an engine.

Who uses it: :mod:`.server`, for tenants that opt in (``spec.responseCache``). A request is
kept only when its answer cannot vary: ``temperature`` 0, or a ``seed``. It is matched
exactly on the tenant, the path and the body as the engine got it, with its keys sorted and
``user`` left out (it names the end user, not the work). So two tenants never share an
answer, and a stream and a whole answer are kept apart (``stream`` is in the body). A
stream is kept as the events the client got, and replayed as one SSE write.

Memory is bounded (``--response-cache-mib``): the least recently used answers go first, and
an answer larger than a sixteenth of the bound is not kept. Expired answers are dropped when
met and, whenever an answer is kept, from the oldest end.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

IGNORED = ("user",)
"""Request fields that do not change the answer."""
ENTRY_OVERHEAD = 256
"""Bytes an entry costs beyond its body (the key, the record, the dictionary's slot)."""


@dataclass(frozen=True)
class Answer:
    """A kept answer: the bytes the client got and what they saved."""

    body: bytes
    content_type: str
    model: str
    """The model that served it (an alias's tier)."""
    prompt_tokens: int
    completion_tokens: int


def deterministic(body: dict[str, Any]) -> bool:
    """Whether the engine gives the same answer to ``body`` again."""
    temperature = body.get("temperature")
    seed = body.get("seed")
    fixed_seed = isinstance(seed, int) and not isinstance(seed, bool)
    greedy = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    return fixed_seed or (greedy and temperature == 0)


def key_of(tenant: str, path: str, body: dict[str, Any]) -> bytes | None:
    """The cache key of a request (None: not deterministic, so never kept)."""
    if not deterministic(body):
        return None
    kept = {name: value for name, value in body.items() if name not in IGNORED}
    digest = hashlib.sha256(tenant.encode() + b"\0" + path.encode() + b"\0")
    digest.update(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS))
    return digest.digest()


class ResponseCache:
    """Answers by key, least recently used first out, within ``max_bytes``."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._answers: OrderedDict[bytes, tuple[float, Answer]] = OrderedDict()
        """By key: when each expires, and the answer."""

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def largest(self) -> int:
        """The largest answer kept (bytes of its body)."""
        return self.max_bytes // 16

    def get(self, key: bytes) -> Answer | None:
        found = self._answers.get(key)
        if found is None:
            return None
        if found[0] <= self.clock():
            self._drop(key)
            return None
        self._answers.move_to_end(key)
        return found[1]

    def put(self, key: bytes, answer: Answer, ttl_s: float) -> bool:
        """Keep ``answer`` for ``ttl_s`` (False: too large to keep)."""
        if len(answer.body) > self.largest:
            return False
        if key in self._answers:
            self._drop(key)
        now = self.clock()
        while self._answers:  # the expired first, then the least recently used
            oldest, (expires, _) = next(iter(self._answers.items()))
            if expires > now and self.bytes + _size(answer) <= self.max_bytes:
                break
            self._drop(oldest)
        self._answers[key] = (now + ttl_s, answer)
        self.bytes += _size(answer)
        return True

    def _drop(self, key: bytes) -> None:
        self.bytes -= _size(self._answers.pop(key)[1])


def _size(answer: Answer) -> int:
    return len(answer.body) + ENTRY_OVERHEAD
