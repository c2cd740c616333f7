"""Shared test setup."""

from llmfleet_contract.api.cel import CelRule, holds

# cel-python raises the recursion limit when it first builds its parser; do it before
# any test runs, since hypothesis refuses a limit changed during a test.
holds(CelRule("true", "warm-up"), {})
