"""llmfleet gateway: the OpenAI API in front of the fleet (tenants, routing, holding requests
while a model wakes, and the pending-work signals the autoscaler reads).

It sits beside the operator, independent of it (import-linter holds both ways), above the
runtime and the shared contract (:mod:`llmfleet_contract`): it finds serving pods with
:mod:`llmfleet_contract.pods`, speaks :mod:`llmfleet_contract.openai` and exports the
gauges named in :mod:`llmfleet_contract.metrics`.
"""
