"""The contract every part of llmfleet shares, and nothing else.

The LLMDeployment API (:mod:`.api`, the CRDs generated from it by :mod:`.crd`, the offline
check :mod:`.validation`), the label and annotation keys and pod roles (:mod:`.labels`),
which pods serve (:mod:`.pods`), the engine flags and environment the operator owns
(:mod:`.engine`), the metric names and label keys of the engines and the gateway
(:mod:`.metrics`) with a parser of their pages (:mod:`.exposition`), and the OpenAI wire
shapes (:mod:`.openai`).

It imports no Kubernetes client, kopf, HTTP library or Prometheus client: the operator,
the gateway, the runtime and the tools all import it, and ``pip install llmfleet`` with
no extra is enough to use it (``llmfleet validate`` in a GitOps pipeline).
"""
