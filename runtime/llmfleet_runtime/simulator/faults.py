"""Fault switches of the simulator: slow, hang, crash, 5xx.

Who calls it: :mod:`.server` (reads them per request and per step; ``POST /sim/faults``
changes them at run time) and :mod:`.cli` (initial values from flags).

* ``slowdown``: every engine step lasts this many times longer (a throttled GPU).
* ``hang``: the engine stops stepping; requests stay open, ``/health`` still answers 200
  (the worst case for a gateway: looks alive, serves nothing).
* ``crash``: the process exits at once with status 1 (``crash_after`` seconds after
  start, or when set through the admin endpoint).
* ``error_rate``: this fraction of generation requests is answered 500 before any byte
  of output, drawn from the seeded random stream.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Faults:
    """The current fault switches (mutable: the admin endpoint flips them)."""

    slowdown: float = 1.0
    hang: bool = False
    crash: bool = False
    crash_after: float | None = None
    error_rate: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (field name -> value); unknown names raise ``ValueError``."""
        known = {f.name: f for f in fields(self)}
        for name in changes:
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
        for name, value in changes.items():
            if name in ("hang", "crash"):
                setattr(self, name, bool(value))
            elif name == "crash_after":
                setattr(self, name, None if value is None else float(value))
            else:
                setattr(self, name, float(value))
        if self.slowdown <= 0:
            raise ValueError("slowdown must be positive")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within 0..1")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
