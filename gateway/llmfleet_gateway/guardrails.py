"""Guardrail plugins: the interface a plugin implements, their loading by entry point, and the
runner that calls them on the hot path.

Who calls it: :mod:`.cli` parses ``--guardrail NAME[:open|:closed]`` with :func:`parse_flag`
and loads the plugins with :func:`load`; :mod:`.server` and :mod:`.forward` hold one
:class:`Guardrails` per app and call :meth:`Guardrails.before` on a request's body,
:meth:`Guardrails.after` on a whole answer and, per streamed answer, a :class:`StreamGuard`
on each SSE data event.

A plugin is a distribution's entry point in the group :data:`GROUP`, naming a class (or a
factory) called with no arguments; the result is a :class:`Guardrail`. It may change what
passes (return a new body; never mutate the one it was given) or refuse it (raise
:class:`Refusal`, whose message the client sees). Anything else it raises is a failure, and
the plugin's :class:`Failure` mode decides: ``closed`` answers 503 (the request is not sent,
the answer withheld), ``open`` lets the text through as the plugin got it. A failure is
logged by plugin, stage and exception type only: an exception's message may quote the
prompt, and no prompt or answer text reaches a log line, an error body or a metric.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram

from llmfleet_contract.openai import ApiError

GROUP = "llmfleet.guardrails"
"""The entry point group plugins register in."""
BEFORE, AFTER, CHUNK = "before", "after", "chunk"
STAGES = (BEFORE, AFTER, CHUNK)
PASSED, CHANGED, REFUSED = "passed", "changed", "refused"
FAILED_OPEN, FAILED_CLOSED = "failed_open", "failed_closed"
OUTCOMES = (PASSED, CHANGED, REFUSED, FAILED_OPEN, FAILED_CLOSED)
SECONDS_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1)
"""A plugin's call is expected in microseconds (a chunk) to a millisecond (a long prompt)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WITHHELD = {
    BEFORE: "the request was not sent.",
    AFTER: "the answer is withheld.",
    CHUNK: "the rest of the answer is withheld.",
}

log = logging.getLogger("llmfleet.gateway.guardrails")


class Refusal(Exception):  # noqa: N818 -- a verdict, not an error
    """A plugin's verdict: this request or answer may not pass. message is shown to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@runtime_checkable
class ChunkFilter(Protocol):
    """One plugin's view of one streamed answer, choice by choice."""

    def chunk(self, index: int, text: str) -> str:
        """A streamed chunk's text for choice ``index``; returns what the client gets (it may
        hold some back, e.g. what could be the start of an e-mail address)."""
        ...

    def end(self, index: int) -> str:
        """What it still holds for choice ``index``, once the engine finished that choice."""
        ...


@runtime_checkable
class Guardrail(Protocol):
    """What a plugin's entry point loads: a class (or factory) called with no arguments."""

    async def before(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        """The client's request body (``chat``: ``/v1/chat/completions``, else
        ``/v1/completions``); a changed body, or None for unchanged; raise :class:`Refusal`
        to refuse it."""
        ...

    async def after(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        """A whole (non-stream) successful answer's JSON; the same contract."""
        ...

    def stream(self, *, chat: bool) -> ChunkFilter | None:
        """One filter per streamed answer (None: this plugin does not look at streams)."""
        ...


class Failure(StrEnum):
    """What a plugin's failure (any exception but :class:`Refusal`) does."""

    OPEN = "open"
    """The text passes as the plugin got it; counted and logged."""
    CLOSED = "closed"
    """503: the request is not sent, or the answer is withheld."""


@dataclass(frozen=True)
class Configured:
    """A loaded plugin under its entry point name, with its failure mode."""

    name: str
    failure: Failure
    plugin: Guardrail


def parse_flag(text: str) -> tuple[str, Failure]:
    """``NAME[:open|:closed]`` (closed unless told) for ``--guardrail``."""
    name, colon, mode = text.partition(":")
    if not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME[:open|:closed] (NAME: a guardrail's entry point name)"
        )
    try:
        return name, Failure(mode) if colon else Failure.CLOSED
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a guardrail fails `open` or `closed`, not {mode!r}"
        ) from None


def load(specs: Sequence[tuple[str, Failure]]) -> tuple[Configured, ...]:
    """The plugins named, in order, each loaded by its entry point and created."""
    available = {point.name: point for point in entry_points(group=GROUP)}
    loaded: list[Configured] = []
    for name, failure in specs:
        if any(item.name == name for item in loaded):
            raise ValueError(f"Guardrail `{name}` is configured twice")
        point = available.get(name)
        if point is None:
            installed = ", ".join(sorted(available)) or "none"
            raise ValueError(f"No guardrail `{name}` is installed (installed: {installed})")
        try:
            plugin = point.load()()
        except Exception as error:
            raise ValueError(
                f"Guardrail `{name}` ({point.value}) could not be created:"
                f" {type(error).__name__}: {error}"
            ) from error
        if not isinstance(plugin, Guardrail):
            raise ValueError(
                f"Guardrail `{name}` ({point.value}) has no before, after and stream methods"
            )
        loaded.append(Configured(name, failure, plugin))
    return tuple(loaded)


def _refused(name: str, refusal: Refusal) -> ApiError:
    return ApiError(
        400,
        f"Refused by guardrail `{name}`: {refusal.message}",
        "invalid_request_error",
        None,
        "content_policy_violation",
    )


def _failed(name: str, stage: str) -> ApiError:
    return ApiError(
        503,
        f"Guardrail `{name}` failed; {_WITHHELD[stage]}",
        "service_unavailable",
        None,
        "guardrail_failed",
    )


class _Meters:
    """One plugin's series, resolved once (a label lookup per chunk would cost more than the
    redaction) and present from the start, at zero."""

    def __init__(self, name: str, seconds: Histogram, outcomes: Counter) -> None:
        self.seconds = {stage: seconds.labels(name, stage) for stage in STAGES}
        self.outcomes = {
            (stage, outcome): outcomes.labels(name, stage, outcome)
            for stage in STAGES
            for outcome in OUTCOMES
        }

    def count(self, stage: str, outcome: str, seconds: float) -> None:
        self.seconds[stage].observe(seconds)
        self.outcomes[stage, outcome].inc()


class Guardrails:
    """Runs the configured plugins in order, timing each, counting outcomes."""

    def __init__(
        self,
        configured: Sequence[Configured],
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.configured = tuple(configured)
        self.clock = clock
        seconds = Histogram(
            "llmfleet_gateway_guardrail_seconds",
            "Time spent in each guardrail plugin's call, by plugin and stage (before: the"
            " request, after: a whole answer, chunk: one streamed chunk).",
            ["guardrail", "stage"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        outcomes = Counter(
            "llmfleet_gateway_guardrail_outcomes",
            "Guardrail plugin calls by plugin, stage and outcome (for streams: passed or"
            " changed once per finished choice, refused or failed per chunk).",
            ["guardrail", "stage", "outcome"],
            registry=registry,
        )
        self._meters = {item.name: _Meters(item.name, seconds, outcomes) for item in configured}

    def __bool__(self) -> bool:
        return bool(self.configured)

    async def before(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
        """The request body as the plugins leave it; :class:`ApiError` when refused, or when a
        plugin that fails closed failed."""
        for item in self.configured:
            body = await self._call(item, BEFORE, body, chat)
        return body

    async def after(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
        """A whole answer as the plugins leave it; raises as :meth:`before` does."""
        for item in self.configured:
            body = await self._call(item, AFTER, body, chat)
        return body

    def stream(self, *, chat: bool) -> StreamGuard | None:
        """A guard for one streamed answer; None when no plugin looks at streams."""
        filters = []
        for item in self.configured:
            started = self.clock()
            try:
                chunk_filter = item.plugin.stream(chat=chat)
            except Exception as error:
                self._failure(item, CHUNK, error, self.clock() - started)
                continue
            if chunk_filter is not None:
                filters.append((item, self._meters[item.name], chunk_filter))
        return StreamGuard(filters, chat=chat, clock=self.clock) if filters else None

    async def _call(
        self, item: Configured, stage: str, body: dict[str, Any], chat: bool
    ) -> dict[str, Any]:
        hook = item.plugin.before if stage == BEFORE else item.plugin.after
        started = self.clock()
        try:
            changed = await hook(body, chat=chat)
            if changed is not None and not isinstance(changed, dict):
                raise TypeError(f"{type(changed).__name__} is not a body")
        except Refusal as refusal:
            self._meters[item.name].count(stage, REFUSED, self.clock() - started)
            raise _refused(item.name, refusal) from None
        except Exception as error:
            self._failure(item, stage, error, self.clock() - started)
            return body
        self._meters[item.name].count(
            stage, PASSED if changed is None else CHANGED, self.clock() - started
        )
        return body if changed is None else changed

    def _failure(self, item: Configured, stage: str, error: Exception, seconds: float) -> None:
        _failure(item, self._meters[item.name], stage, error, seconds)


def _failure(
    item: Configured, meters: _Meters, stage: str, error: Exception, seconds: float
) -> None:
    """Count and log a plugin's failure; raise the 503 when it fails closed. The exception's
    message is not logged: it may quote the text."""
    closed = item.failure is Failure.CLOSED
    meters.count(stage, FAILED_CLOSED if closed else FAILED_OPEN, seconds)
    log.warning(
        "Guardrail %s failed at %s (%s): %s",
        item.name,
        stage,
        type(error).__name__,
        "failing closed" if closed else "failing open, the text passes unchecked",
    )
    if closed:
        raise _failed(item.name, stage) from None


class StreamGuard:
    """The plugins' filters over one streamed answer, one SSE data event at a time."""

    def __init__(
        self,
        filters: Sequence[tuple[Configured, _Meters, ChunkFilter]],
        *,
        chat: bool,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._filters = tuple(filters)
        self._chat = chat
        self._clock = clock
        self._sums: dict[tuple[int, int], list[int]] = {}
        """Per (filter, choice): CRC-32 of the text in and of the text out, to tell at the
        choice's end whether the filter changed it without keeping the text."""

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Filter one data event's choices in place (and return it); the finishing chunk of a
        choice carries what the filters still held. :class:`ApiError` on a refusal or on the
        failure of a plugin that fails closed."""
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return payload
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", position)
            holder = choice.get("delta") if self._chat else choice
            if not isinstance(holder, dict) or not isinstance(index, int):
                continue
            key = "content" if self._chat else "text"
            text = holder.get(key)
            finished = choice.get("finish_reason") is not None
            if not isinstance(text, str):
                if not finished:
                    continue
                text = ""
            out = self._filter(index, text, finished)
            if out or key in holder:
                holder[key] = out
        return payload

    def _filter(self, index: int, text: str, finished: bool) -> str:
        for number, (item, meters, chunk_filter) in enumerate(self._filters):
            sums = self._sums.setdefault((number, index), [0, 0])
            sums[0] = zlib.crc32(text.encode(), sums[0])
            out = self._call(item, meters, chunk_filter, index, text)
            if finished:
                out += self._call(item, meters, chunk_filter, index, None)
                sums[1] = zlib.crc32(out.encode(), sums[1])
                del self._sums[number, index]
                meters.outcomes[CHUNK, PASSED if sums[0] == sums[1] else CHANGED].inc()
            else:
                sums[1] = zlib.crc32(out.encode(), sums[1])
            text = out
        return text

    def _call(
        self,
        item: Configured,
        meters: _Meters,
        chunk_filter: ChunkFilter,
        index: int,
        text: str | None,
    ) -> str:
        """``chunk(index, text)``, or ``end(index)`` when ``text`` is None; a fail-open
        failure gives back the text unchanged (nothing, for the end)."""
        started = self._clock()
        try:
            out = chunk_filter.end(index) if text is None else chunk_filter.chunk(index, text)
            if not isinstance(out, str):
                raise TypeError(f"{type(out).__name__} is not text")
        except Refusal as refusal:
            meters.count(CHUNK, REFUSED, self._clock() - started)
            raise _refused(item.name, refusal) from None
        except Exception as error:
            _failure(item, meters, CHUNK, error, self._clock() - started)
            return text or ""
        meters.seconds[CHUNK].observe(self._clock() - started)
        return out
