"""Guardrail plugins: the PII redaction plugin, the loader and the runner (no server).

Cases:
- PII: each kind is redacted in its common spellings (e-mail; international, bracketed,
  US and trunk-0 phone numbers; spaced, dashed and plain cards; spaced and compact IBANs;
  SSNs), and its look-alikes are kept (a Luhn-failing card, order and invoice numbers,
  dates, amounts, versions, a checksum-failing IBAN, never-issued SSNs, short numbers);
- the hooks: chat message contents (strings and text parts, other parts untouched), a
  completion's prompt (a string or a list; token ids untouched), answers' choices; nothing
  to redact gives None, and the client's body is never mutated;
- streams: a text cut anywhere, into any number of chunks, comes out as the whole text
  redacted (nothing lost, nothing doubled; derandomized property), an e-mail cut mid-way
  included; choices are held apart; what is held never passes the bound;
- loading: ``pii`` by its entry point; an unknown name is refused with the installed ones
  listed; a plugin whose factory raises, or one named twice, is refused with the reason;
  ``--guardrail`` flags parse, bad ones are refused;
- the runner, with the fixture distribution on ``sys.path``: ``failing`` fails closed (503
  ``guardrail_failed``: request not sent, answer withheld, stream cut) or open (the text
  passes unchanged, the next plugin still runs, ``failed_open`` counted); ``refuse-all``
  answers 400 ``content_policy_violation`` at every stage; no prompt text reaches an error,
  a log line or a metric; plugins run in order, each on the previous one's output;
- metrics: one histogram sample per call (its time from the runner's clock), outcomes
  passed / changed per call, and per finished choice for streams.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from llmfleet_contract.openai import ApiError
from llmfleet_gateway.guardrails import (
    Configured,
    Failure,
    Guardrail,
    Guardrails,
    StreamGuard,
    load,
    parse_flag,
)
from llmfleet_gateway.pii import HOLD_CHARS, PiiRedaction, PiiStream, redact

FIXTURE = Path(__file__).parent.parent / "fixtures" / "guardrails"
DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=300)
SECRET = "Tell nobody: jane.roe@example.org"

REDACTED = [
    ("write to jane.roe+news@mail.example.co.uk today", "write to [EMAIL] today"),
    ("(jane_roe2024@example.io)", "([EMAIL])"),
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("call +1 (555) 123-4567.", "call [PHONE]."),
    ("call +4930123456789", "call [PHONE]"),
    ("call (555) 123-4567", "call [PHONE]"),
    ("call 555-123-4567", "call [PHONE]"),
    ("call 555.123.4567", "call [PHONE]"),
    ("ruf 030 12345678 an", "ruf [PHONE] an"),
    ("appelle 01 23 45 67 89", "appelle [PHONE]"),
    ("ring 020 7946 0958", "ring [PHONE]"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("card 5500-0000-0000-0004", "card [CARD]"),
    ("card 4111111111111111", "card [CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("iban DE89 3704 0044 0532 0130 00 thanks", "iban [IBAN] thanks"),
    ("iban GB82WEST12345698765432.", "iban [IBAN]."),
    ("IBAN: GB82 WEST 1234 5698 7654 32 THEN", "IBAN: [IBAN] THEN"),
    ("ssn 123-45-6789.", "ssn [SSN]."),
]
KEPT = [
    "card 4111 1111 1111 1112 fails Luhn",
    "card 4111111111111112",
    "order 123456789012 shipped",
    "order #123456789",
    "invoice 2024-000123",
    "on 2024-12-06 at 12:30, or 01.02.2024",
    "a budget of 1,250,000.00 for 12 months",
    "version 3.2.1 of v10.11.12",
    "iban DE89 3704 0044 0532 0130 99",
    "not ssn 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567",
    "call +1 555 12",
    "user@localhost and @handle",
    "ID4111111111111111",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_each_kind_is_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_look_alikes_are_kept(text: str) -> None:
    assert redact(text) == text


def run(plugin: Any, stage: str, body: dict[str, Any], *, chat: bool) -> Any:
    return asyncio.run(getattr(plugin, stage)(body, chat=chat))


def test_before_redacts_chat_messages_and_parts_only() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/a@b.co.png"}}
    body = {
        "model": "m",
        "user": "ops@example.com",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": SECRET},
            {"role": "user", "content": [{"type": "text", "text": "card 4111111111111111"}, image]},
            {"role": "assistant", "content": None},
        ],
    }
    before = repr(body)
    out = run(PiiRedaction(), "before", body, chat=True)
    assert repr(body) == before  # the client's body is not mutated
    assert out["user"] == "ops@example.com"  # only prompt text
    assert [message["content"] for message in out["messages"]] == [
        "Be brief.",
        "Tell nobody: [EMAIL]",
        [{"type": "text", "text": "card [CARD]"}, image],
        None,
    ]
    assert out["messages"][0] is body["messages"][0]
    assert out["messages"][2]["content"][1] is image
    clean = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert run(PiiRedaction(), "before", clean, chat=True) is None


def test_before_redacts_a_completion_prompt() -> None:
    plugin = PiiRedaction()
    assert run(plugin, "before", {"prompt": SECRET}, chat=False) == {
        "prompt": "Tell nobody: [EMAIL]"
    }
    assert run(plugin, "before", {"prompt": ["hi", "ssn 123-45-6789"]}, chat=False) == {
        "prompt": ["hi", "ssn [SSN]"]
    }
    assert run(plugin, "before", {"prompt": [4111, 1111]}, chat=False) is None
    assert run(plugin, "before", {"prompt": "hello"}, chat=False) is None


def test_after_redacts_the_choices() -> None:
    plugin = PiiRedaction()
    chat: dict[str, Any] = {
        "id": "c",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": SECRET}},
            {"index": 1, "message": {"role": "assistant", "content": "fine"}},
        ],
        "usage": {"prompt_tokens": 3},
    }
    out = run(plugin, "after", chat, chat=True)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Tell nobody: [EMAIL]"}
    assert out["choices"][1] is chat["choices"][1]
    assert chat["choices"][0]["message"]["content"] == SECRET
    completion = {"choices": [{"index": 0, "text": "call 555-123-4567"}]}
    assert run(plugin, "after", completion, chat=False) == {
        "choices": [{"index": 0, "text": "call [PHONE]"}]
    }
    assert run(plugin, "after", {"choices": [{"index": 0, "text": "ok"}]}, chat=False) is None


STREAMED = (
    "Mail jane.roe@example.org or call +1 (555) 123-4567 89 today; card 4111 1111 1111 1111,"
    " IBAN DE89 3704 0044 0532 0130 00 or SSN 123-45-6789. Order 123456789012 ok.\n"
    "Fax 020 7946 0958\tthen john@x.io"
)


def streamed(text: str, cuts: list[int]) -> str:
    filter_ = PiiStream()
    edges = [0, *sorted(cuts), len(text)]
    out = [filter_.chunk(0, text[start:end]) for start, end in itertools.pairwise(edges)]
    return "".join(out) + filter_.end(0)


def test_an_email_cut_mid_way_is_redacted() -> None:
    text = "Write to jane.roe@example.org please"
    at = text.index("@")
    for cut in range(len(text) + 1):
        assert streamed(text, [cut]) == "Write to [EMAIL] please"
    assert streamed(text, list(range(at - 3, at + 5))) == "Write to [EMAIL] please"


@DETERMINISTIC
@given(st.lists(st.integers(0, len(STREAMED)), max_size=12))
def test_a_stream_cut_anywhere_is_the_whole_text_redacted(cuts: list[int]) -> None:
    assert streamed(STREAMED, cuts) == redact(STREAMED)


def test_a_stream_holds_choices_apart_and_within_the_bound() -> None:
    filter_ = PiiStream()
    assert filter_.chunk(0, "mail jane.ro") == "mail "
    assert filter_.chunk(1, "call +44 20") == "call "
    assert filter_.chunk(0, "e@example.org ok") == "[EMAIL] "
    assert filter_.chunk(1, " 7946 0958") == ""
    assert filter_.end(1) == "[PHONE]"
    assert filter_.end(0) == "ok"
    assert filter_.end(0) == ""
    blob = "x" * 1000
    assert len(filter_.chunk(0, blob)) == 1000 - HOLD_CHARS
    assert filter_.end(0) == "x" * HOLD_CHARS


@pytest.fixture
def fixture_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fixture distribution's plugins visible, as if installed."""
    monkeypatch.syspath_prepend(str(FIXTURE))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("llmfleet_test_guardrails", None)


def test_load_finds_pii_by_its_entry_point() -> None:
    (loaded,) = load([("pii", Failure.OPEN)])
    assert (loaded.name, loaded.failure) == ("pii", Failure.OPEN)
    assert isinstance(loaded.plugin, PiiRedaction)
    assert load([]) == ()


@pytest.mark.usefixtures("fixture_plugins")
def test_load_refuses_unknown_broken_and_repeated_plugins() -> None:
    with pytest.raises(
        ValueError, match="installed: broken, failing, failing-answers, pii, refuse-all"
    ) as info:
        load([("pii", Failure.CLOSED), ("nope", Failure.CLOSED)])
    assert "No guardrail `nope`" in str(info.value)
    with pytest.raises(ValueError, match=r"`broken` .* RuntimeError: this guardrail cannot start"):
        load([("broken", Failure.OPEN)])
    with pytest.raises(ValueError, match="`pii` is configured twice"):
        load([("pii", Failure.OPEN), ("pii", Failure.CLOSED)])


def test_load_lists_what_is_installed() -> None:
    with pytest.raises(ValueError, match=r"\(installed: pii\)"):
        load([("failing", Failure.CLOSED)])


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("pii", ("pii", Failure.CLOSED)),
        ("pii:open", ("pii", Failure.OPEN)),
        ("refuse-all:closed", ("refuse-all", Failure.CLOSED)),
    ],
)
def test_flags_parse(flag: str, expected: tuple[str, Failure]) -> None:
    assert parse_flag(flag) == expected


@pytest.mark.parametrize("flag", ["", ":open", "pii:", "pii:maybe", "pii:open:closed", "a b"])
def test_bad_flags_are_refused(flag: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_flag(flag)


class Ticker:
    """A clock that moves 1 ms each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def runner(*specs: tuple[str, Failure]) -> tuple[Guardrails, CollectorRegistry]:
    registry = CollectorRegistry()
    return Guardrails(load(specs), registry, clock=Ticker()), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def outcome(registry: CollectorRegistry, guardrail: str, stage: str, result: str) -> float:
    return value(
        registry,
        "llmfleet_gateway_guardrail_outcomes_total",
        guardrail=guardrail,
        stage=stage,
        outcome=result,
    )


def chat_body(text: str = SECRET) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def answer(text: str = SECRET) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def leaks(caplog: pytest.LogCaptureFixture, registry: CollectorRegistry, *texts: str) -> bool:
    page = generate_latest(registry).decode()
    return any(secret in caplog.text or secret in page for secret in texts)


@pytest.mark.usefixtures("fixture_plugins")
def test_failing_closed_refuses_to_send_or_answer(caplog: pytest.LogCaptureFixture) -> None:
    guard, registry = runner(("failing", Failure.CLOSED), ("pii", Failure.CLOSED))
    with pytest.raises(ApiError) as sent:
        asyncio.run(guard.before(chat_body(), chat=True))
    assert (sent.value.status, sent.value.code, sent.value.type) == (
        503,
        "guardrail_failed",
        "service_unavailable",
    )
    assert sent.value.message == "Guardrail `failing` failed; the request was not sent."
    with pytest.raises(ApiError) as answered:
        asyncio.run(guard.after(answer(), chat=True))
    assert answered.value.message == "Guardrail `failing` failed; the answer is withheld."
    assert outcome(registry, "failing", "before", "failed_closed") == 1
    assert outcome(registry, "failing", "after", "failed_closed") == 1
    assert outcome(registry, "pii", "before", "changed") == 0  # never reached
    assert "Guardrail failing failed at before (RuntimeError)" in caplog.text
    assert not leaks(caplog, registry, "jane.roe", "nobody")


@pytest.mark.usefixtures("fixture_plugins")
def test_failing_open_passes_unchanged_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    guard, registry = runner(("failing", Failure.OPEN))
    body = chat_body()
    assert asyncio.run(guard.before(body, chat=True)) is body
    assert asyncio.run(guard.after(answer(), chat=True)) == answer()
    assert outcome(registry, "failing", "before", "failed_open") == 1
    assert outcome(registry, "failing", "after", "failed_open") == 1
    assert "failing open" in caplog.text
    assert not leaks(caplog, registry, "jane.roe", "nobody")
    then_pii, _ = runner(("failing", Failure.OPEN), ("pii", Failure.CLOSED))
    out = asyncio.run(then_pii.before(chat_body(), chat=True))
    assert out["messages"][0]["content"] == "Tell nobody: [EMAIL]"


@pytest.mark.usefixtures("fixture_plugins")
def test_refuse_all_answers_400_at_every_stage() -> None:
    guard, registry = runner(("refuse-all", Failure.OPEN))
    errors = []
    for call in (guard.before(chat_body(), chat=True), guard.after(answer(), chat=False)):
        with pytest.raises(ApiError) as info:
            asyncio.run(call)
        errors.append(info.value)
    stream = guard.stream(chat=True)
    assert stream is not None
    with pytest.raises(ApiError) as info:
        stream.event(chunk(0, "hello"))
    errors.append(info.value)
    for error in errors:
        assert (error.status, error.type, error.code) == (
            400,
            "invalid_request_error",
            "content_policy_violation",
        )
        assert error.message == (
            "Refused by guardrail `refuse-all`: this gateway refuses everything (a test fixture)"
        )
    for stage in ("before", "after", "chunk"):
        assert outcome(registry, "refuse-all", stage, "refused") == 1


class Recorder:
    """A plugin that appends its mark to a completion's prompt, recording what it saw."""

    def __init__(self, mark: str) -> None:
        self.mark, self.seen = mark, list[str]()

    async def before(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        self.seen.append(body["prompt"])
        return {**body, "prompt": body["prompt"] + self.mark}

    async def after(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        return None

    def stream(self, *, chat: bool) -> None:
        return None


def test_plugins_run_in_order_and_are_timed() -> None:
    first, second = Recorder("1"), Recorder("2")
    assert isinstance(first, Guardrail)
    registry = CollectorRegistry()
    configured = [Configured("a", Failure.CLOSED, first), Configured("b", Failure.CLOSED, second)]
    guard = Guardrails(configured, registry, clock=Ticker())
    assert guard
    assert asyncio.run(guard.before({"prompt": "p"}, chat=False)) == {"prompt": "p12"}
    asyncio.run(guard.after({"choices": []}, chat=False))
    assert (first.seen, second.seen) == (["p"], ["p1"])
    assert outcome(registry, "a", "before", "changed") == 1
    assert outcome(registry, "a", "after", "passed") == 1
    for name in ("a", "b"):
        for stage in ("before", "after"):
            labels = {"guardrail": name, "stage": stage}
            assert value(registry, "llmfleet_gateway_guardrail_seconds_count", **labels) == 1
            assert value(registry, "llmfleet_gateway_guardrail_seconds_sum", **labels) == (
                pytest.approx(0.001)
            )
    assert guard.stream(chat=True) is None  # neither looks at streams
    assert not Guardrails([], CollectorRegistry())


def chunk(index: int, text: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return {"id": "c", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def texts(guard: StreamGuard, events: list[dict[str, Any]], key: str = "content") -> list[str]:
    out = []
    for event in events:
        for choice in guard.event(event)["choices"]:
            holder = choice.get("delta", choice)
            out.append(holder.get(key, "<none>"))
    return out


def test_a_stream_guard_redacts_chat_choices_and_counts() -> None:
    guard, registry = runner(("pii", Failure.CLOSED))
    stream = guard.stream(chat=True)
    assert stream is not None
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        chunk(0, "Mail jane."),
        chunk(1, "All fine"),
        chunk(0, "roe@exam"),
        chunk(0, "ple.org now"),
        chunk(1, None, "stop"),
        chunk(0, None, "length"),
        {"choices": [], "usage": {"completion_tokens": 9}},
    ]
    assert texts(stream, events) == ["", "Mail ", "All ", "", "[EMAIL] ", "fine", "now"]
    assert outcome(registry, "pii", "chunk", "changed") == 1  # choice 0
    assert outcome(registry, "pii", "chunk", "passed") == 1  # choice 1
    labels = {"guardrail": "pii", "stage": "chunk"}
    assert value(registry, "llmfleet_gateway_guardrail_seconds_count", **labels) == 9


def test_a_stream_guard_on_completions_releases_held_text_at_the_finish() -> None:
    guard, _ = runner(("pii", Failure.CLOSED))
    stream = guard.stream(chat=False)
    assert stream is not None
    events = [
        {"choices": [{"index": 0, "text": "ssn 123-45-", "finish_reason": None}]},
        {"choices": [{"index": 0, "text": "6789", "finish_reason": "stop"}]},
    ]
    assert texts(stream, events, "text") == ["ssn ", "[SSN]"]


@pytest.mark.usefixtures("fixture_plugins")
def test_a_failing_stream_filter_cuts_the_stream_or_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed, registry = runner(("failing", Failure.CLOSED))
    stream = closed.stream(chat=True)
    assert stream is not None
    with pytest.raises(ApiError) as info:
        stream.event(chunk(0, SECRET))
    assert (info.value.status, info.value.code) == (503, "guardrail_failed")
    assert info.value.message == "Guardrail `failing` failed; the rest of the answer is withheld."
    assert outcome(registry, "failing", "chunk", "failed_closed") == 1
    opened, registry = runner(("failing", Failure.OPEN), ("pii", Failure.CLOSED))
    stream = opened.stream(chat=True)
    assert stream is not None
    events = [chunk(0, "Mail jane.roe@"), chunk(0, "example.org"), chunk(0, "", "stop")]
    assert "".join(texts(stream, events)) == "Mail [EMAIL]"
    assert outcome(registry, "failing", "chunk", "failed_open") == 4  # three chunks, one end
    assert outcome(registry, "pii", "chunk", "changed") == 1
    assert not leaks(caplog, registry, "jane.roe", "nobody")
