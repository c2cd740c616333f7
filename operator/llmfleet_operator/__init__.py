"""llmfleet operator: the kopf operator that turns LLMDeployments into vLLM serving groups.

Reconciles each LLMDeployment into its children (:mod:`.reconcile`), runs the built-in
autoscaler (:mod:`.autoscale`, :mod:`.autoscaler`) on what the engines report
(:mod:`.metrics`), and talks to the API server only through :mod:`.kube`. The API it
serves lives in :mod:`llmfleet_contract.api`.
"""
