"""The example guardrail: PII redaction, by regular expression and checksum.

Who uses it: :mod:`.guardrails` loads it by its entry point (``pii``, ``--guardrail pii``).
It replaces e-mail addresses with ``[EMAIL]``, phone numbers (international ``+CC ...``, and
national ones written with an area code in brackets, a leading trunk ``0`` or the US 3-3-4
grouping; 9 to 15 digits) with ``[PHONE]``, payment card numbers (13 to 19 digits, spaces or
dashes allowed, Luhn-checked) with ``[CARD]``, IBANs (mod-97 checked) with ``[IBAN]`` and US
social security numbers (``ddd-dd-dddd``, the never-issued areas left out) with ``[SSN]``;
in a request's prompt or chat messages, a whole answer's text, and a stream as it passes.

A bare run of digits is never a phone number (it is as likely an order number), and a number
failing its checksum is left as it is. Precompiled expressions, at most two scans of a text
(e-mail addresses only when it holds an ``@``); no state but what a stream holds back.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL, PHONE, CARD, IBAN, SSN = "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[SSN]"
HOLD_CHARS = 64
"""The most a stream holds back: what could still be the start of a match."""

_SEP = r"[ .\-]"
_EMAIL = re.compile(r"(?<![\w.%+\-])[\w.%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_SCAN = re.compile(
    r"[A-Z+(\d]"  # one class first: the scan skips fast to where a match can begin
    r"(?:(?<=[A-Z])(?<!\w[A-Z])"
    r"(?P<iban>[A-Z]\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b)"
    r"|(?<![A-Z])(?<!\w[+(\d])(?P<number>[\d()./\- ]*))"
)
"""An IBAN, or a run of digits and separators: where a card, an SSN or a phone number can be
(an IBAN failing its checksum is kept whole, not searched for numbers)."""
_PHONES = (
    rf"(?<![\w+])\+\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\))?{_SEP}?\d+(?:{_SEP}\d+){{0,5}}(?!\w)"
    rf"|(?<![\w(])\(\d{{2,5}}\){_SEP}?\d{{3,4}}{_SEP}?\d{{3,4}}\b"
    rf"|\b\d{{3}}{_SEP}\d{{3}}{_SEP}\d{{4}}\b"
    rf"|\b0\d{{1,4}}[ /.\-]\d{{2,8}}(?:{_SEP}\d{{2,4}}){{0,3}}\b"
)
_NUMBERS = re.compile(
    r"(?P<card>\b\d(?:[ \-]?\d){12,18}\b)"
    r"|(?P<ssn>\b\d{3}-\d{2}-\d{4}\b)"
    rf"|(?P<phone>{_PHONES})"
)
_PHONE = re.compile(_PHONES)
_TAIL = re.compile(r"(?:[+(]?[0-9A-Z][0-9A-Z()./\-]{0,15} )*\S*\Z")
"""What a stream holds back: the last word, and the groups of digits (or of an IBAN's capital
letters and digits) before it, which the next chunk could still extend into a match."""


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group())
    return PHONE if 9 <= digits <= 15 else match.group()


def _number(match: re.Match[str]) -> str:
    kind, text = match.lastgroup, match.group()
    if kind == "phone":
        return _phone(match)
    if kind == "ssn":
        area, group, serial = text.split("-")
        valid = area not in ("000", "666") and area[0] != "9" and group != "00"
        return SSN if valid and serial != "0000" else text
    if _luhn(text.replace(" ", "").replace("-", "")):
        return CARD
    return _PHONE.sub(_phone, text)  # not a card: it may still hold a phone number


def _found(match: re.Match[str]) -> str:
    text = match.group()
    if match.lastgroup == "iban":
        # A spaced IBAN may have swallowed a capitalised word after it: try shorter ones.
        groups = text.split(" ")
        for end in range(len(groups), 0, -1):
            if _iban("".join(groups[:end])):
                return " ".join((IBAN, *groups[end:]))
        return text
    return _NUMBERS.sub(_number, text) if len(text) >= 9 else text


def redact(text: str) -> str:
    """``text`` with the PII in it replaced: e-mail addresses first (they may hold digits),
    then IBANs and runs of digits, each run searched for cards, SSNs and phone numbers."""
    if "@" in text:
        text = _EMAIL.sub(EMAIL, text)
    return _SCAN.sub(_found, text)


def _redacted(text: object) -> object:
    """A text field redacted, or the very object it was when there was nothing to redact."""
    if not isinstance(text, str):
        return text
    clean = redact(text)
    return text if clean == text else clean


def _content(content: object) -> object:
    """A chat message's content: a string, or a list of parts whose text parts count."""
    if not isinstance(content, list):
        return _redacted(content)
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            text = _redacted(part.get("text"))
            if text is not part.get("text"):
                part = {**part, "text": text}
        parts.append(part)
    return content if _same(parts, content) else parts


def _same(new: list[Any], old: list[Any]) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))


def _each(items: list[Any], field: str, inner: str | None = None) -> list[Any] | None:
    """``items`` (dicts) with ``item[field]`` (or ``item[field][inner]``) redacted; None when
    nothing changed. Only what changed is copied."""
    out, changed = [], False
    for item in items:
        holder = item.get(field) if inner is not None and isinstance(item, dict) else item
        key = inner if inner is not None else field
        if isinstance(holder, dict) and key in holder:
            value = _content(holder[key])
            if value is not holder[key]:
                changed = True
                holder = {**holder, key: value}
                item = {**item, field: holder} if inner is not None else holder
        out.append(item)
    return out if changed else None


class PiiRedaction:
    """The ``pii`` guardrail: it redacts and never refuses."""

    async def before(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        if chat:
            messages = body.get("messages")
            changed = _each(messages, "content") if isinstance(messages, list) else None
            return None if changed is None else {**body, "messages": changed}
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompts = [_redacted(item) for item in prompt]
            return None if _same(prompts, prompt) else {**body, "prompt": prompts}
        clean = _redacted(prompt)
        return None if clean is prompt else {**body, "prompt": clean}

    async def after(self, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        choices = body.get("choices")
        if not isinstance(choices, list):
            return None
        changed = _each(choices, "message", "content") if chat else _each(choices, "text")
        return None if changed is None else {**body, "choices": changed}

    def stream(self, *, chat: bool) -> PiiStream:
        return PiiStream()


class PiiStream:
    """Redacts a stream, holding back per choice what could still become a match."""

    def __init__(self) -> None:
        self._held: dict[int, str] = {}

    def chunk(self, index: int, text: str) -> str:
        text = self._held.pop(index, "") + text
        window = max(0, len(text) - HOLD_CHARS)
        tail = _TAIL.search(text, window)
        cut = tail.start() if tail is not None else len(text)
        if cut < len(text):
            self._held[index] = text[cut:]
        return redact(text[:cut]) if cut else ""

    def end(self, index: int) -> str:
        return redact(self._held.pop(index, ""))
