"""Argument types for the command lines (``argparse`` ``type=``): numbers a flag may take.

Who uses it: the ``llmfleet gateway`` and ``llmfleet simulate`` parsers. Each raises
:class:`argparse.ArgumentTypeError` with a message naming the value, which argparse turns into
exit code 2 and ``argument --flag: <message>``.
"""

from __future__ import annotations

import argparse
import math


def number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive(text: str) -> float:
    """A finite number above zero."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative(text: str) -> float:
    """A finite number of zero or more."""
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1."""
    return _whole(text, 1)


def whole(text: str) -> int:
    """A whole number of at least 0."""
    return _whole(text, 0)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {text}")
    return value
