"""Shared test setup."""

from hypothesis import settings

from llmfleet_contract.api.cel import CelRule, holds

# cel-python raises the recursion limit when it first builds its parser; do it before
# any test runs, since hypothesis refuses a limit changed during a test.
holds(CelRule("true", "warm-up"), {})

# Properties, not timings: a loaded machine (two cores, benches beside) must not fail an
# example for taking longer than hypothesis' default 200 ms.
settings.register_profile("llmfleet", deadline=None)
settings.load_profile("llmfleet")
