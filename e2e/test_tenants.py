"""Tenants through the real gateway on the local control plane, with the official ``openai``
client.

The chart is upgraded to let its gateway read this test's namespace's tenants (a Role for
Secrets there, nothing cluster-wide); the gateway runs with the chart's service account's
token. Two simulated LLMDeployments, ``left`` and ``right``, and two LLMTenants with their keys'
Secrets, applied with kubectl as a user would.

Cases: tenant A lists and calls only ``left``; ``right`` answers A exactly as a model that does not
exist; a wrong key is AuthenticationError; A over its requests per minute gets RateLimitError
at once, with the ``x-ratelimit-*`` headers, while B goes on being answered; a key removed
from its Secret stops working within seconds. And isolation under saturation: A floods a model
both may use, B's time to first token stays within a bound of its unloaded value while A's
flood waits behind itself, and what A sends above its concurrency limit is refused at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from kit import EXAMPLES, apply, apply_ready, wait_for
from kubernetes.client import ApiClient
from localop import SYSTEM, LocalOperator, install_chart, kubectl
from traffic import Clients, gateway

from llmfleet_contract.api import key_hash
from llmfleet_contract.labels import API_KEYS

RPM = 4


def model(name: str, slots: int = 16) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / "llama-8b-simulated.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["servedNames"] = [name]
    manifest["spec"]["engine"]["maxNumSeqs"] = slots
    manifest["spec"]["replicas"] = 1
    return manifest


def tenant(
    kubeconfig: Path,
    namespace: str,
    name: str,
    models: list[str],
    key: str,
    limits: dict[str, int] | None = None,
    **spec: Any,
) -> None:
    """An LLMTenant (with ``spec`` added to its spec) and its keys' Secret, applied."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-keys", "labels": {API_KEYS: "true"}},
        "stringData": {"laptop": key_hash(key)},
    }
    obj = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMTenant",
        "metadata": {"name": name},
        "spec": {
            "apiKeys": {"name": f"{name}-keys"},
            "models": models,
            "limits": limits or {"requestsPerMinute": RPM},
            **spec,
        },
    }
    for manifest in (secret, obj):
        apply(kubeconfig, namespace, manifest)


def client(address: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{address}/v1", api_key=key, max_retries=0)


@pytest.mark.timeout(600)
def test_tenants_see_call_and_lose_only_what_their_objects_say(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    install_chart(kubeconfig, f"gateway.tenants.namespaces={{{SYSTEM},{namespace}}}")
    for name in ("left", "right"):
        apply_ready(api_client, kubeconfig, namespace, model(name))
    key_a, key_b = (f"sk-e2e-{secrets.token_hex(16)}" for _ in range(2))
    tenant(kubeconfig, namespace, "a", ["left"], key_a)
    tenant(kubeconfig, namespace, "b", ["right"], key_b)
    with gateway(kubeconfig, namespace, tmp_path / "gateway.log", tenants=True) as address:
        a, b = client(address, key_a), client(address, key_b)
        wait_for("tenant a's model", lambda: [m.id for m in a.models.list()] == ["left"])
        assert [m.id for m in b.models.list()] == ["right"]
        first = a.completions.with_raw_response.create(model="left", prompt="hi", max_tokens=2)
        assert first.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
        with pytest.raises(openai.NotFoundError) as hidden:
            a.completions.create(model="right", prompt="hi", max_tokens=2)
        assert hidden.value.code == "model_not_found"
        with pytest.raises(openai.AuthenticationError):
            client(address, "sk-wrong").completions.create(model="left", prompt="hi", max_tokens=2)

        for _ in range(RPM - 1):
            assert a.completions.create(model="left", prompt="hi", max_tokens=2).choices
        with pytest.raises(openai.RateLimitError) as over:
            a.completions.create(model="left", prompt="hi", max_tokens=2)
        headers = over.value.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert int(headers["retry-after"]) <= 60
        assert b.completions.create(model="right", prompt="hi", max_tokens=2).choices

        replaced = {"stringData": {"laptop": key_hash("sk-another")}, "data": None}
        patched = kubectl(
            kubeconfig, "patch", "secret", "b-keys", "-n", namespace, "--type=merge",
            "-p", yaml.safe_dump(replaced),
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
        revoked = time.monotonic()

        def refused() -> bool:
            try:
                b.models.list()
            except openai.AuthenticationError:
                return True
            return False

        wait_for("the revoked key refused", refused, timeout=10)
        assert time.monotonic() - revoked < 10
    gateway_log = (tmp_path / "gateway.log").read_text()
    for secret in (key_a, key_b, key_hash(key_a)):
        assert secret not in gateway_log


SLOTS = 4
"""The shared model's slots (``maxNumSeqs``, one replica): the gateway queues beyond them."""
FLOOD_CLIENTS, FLOOD_CONCURRENT, FLOOD_TOKENS = 40, 32, 400
"""Tenant A's flood: clients sending one long completion after another, more than its
``concurrentRequests`` (the rest are refused), and far more than the slots (the rest wait)."""
SAMPLES = 20


class Flood(Clients):
    """``clients`` threads each sending ``max_tokens`` completions one after another with
    ``key`` until the block ends; a refused one backs off 0.2 s (a client that honours 429)."""

    def __init__(self, address: str, key: str, clients: int, max_tokens: int) -> None:
        super().__init__()
        self.answered: list[float] = []
        """Seconds each answered request took, queueing in the gateway included."""
        self.refused: list[float] = []
        """Seconds each 429 took to come."""
        self.threads = [
            threading.Thread(target=self._client, args=(client(address, key), max_tokens))
            for _ in range(clients)
        ]

    def _client(self, sdk: openai.OpenAI, max_tokens: int) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                sdk.completions.create(model="shared", prompt="flood", max_tokens=max_tokens)
                took, into = time.monotonic() - start, self.answered
            except openai.RateLimitError:
                took, into = time.monotonic() - start, self.refused
                self.stopping.wait(0.2)
            with self.lock:
                into.append(took)


def time_to_first_token(sdk: openai.OpenAI) -> float:
    start = time.monotonic()
    stream = sdk.completions.create(model="shared", prompt="hi", max_tokens=2, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            took = time.monotonic() - start
            stream.close()
            return took
    raise AssertionError("a stream with no token")


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]


@pytest.mark.timeout(600)
def test_a_flooding_tenant_waits_behind_itself_and_is_refused_at_once(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    """A floods one shared model: FLOOD_CONCURRENT of its requests in flight (SLOTS at the
    engine, the rest queued in the gateway), the others refused. B's time to first token
    stays within a bound of B's unloaded value, set by how long A's requests hold the
    slots, while A's own requests wait behind each other, several times as long."""
    install_chart(kubeconfig, f"gateway.tenants.namespaces={{{SYSTEM},{namespace}}}")
    apply_ready(api_client, kubeconfig, namespace, model("shared", slots=SLOTS))
    key_a, key_b = (f"sk-e2e-{secrets.token_hex(16)}" for _ in range(2))
    tenant(kubeconfig, namespace, "a", ["shared"], key_a, {"concurrentRequests": FLOOD_CONCURRENT})
    tenant(kubeconfig, namespace, "b", ["shared"], key_b, {"requestsPerMinute": 1000})
    with gateway(kubeconfig, namespace, tmp_path / "gateway.log", tenants=True) as address:
        a, b = client(address, key_a), client(address, key_b)
        wait_for("both tenants' model", lambda: [m.id for m in b.models.list()] == ["shared"])
        start = time.monotonic()
        a.completions.create(model="shared", prompt="flood", max_tokens=FLOOD_TOKENS)
        one_request = time.monotonic() - start
        unloaded = [time_to_first_token(b) for _ in range(SAMPLES)]
        with Flood(address, key_a, FLOOD_CLIENTS, FLOOD_TOKENS) as flood:
            wait_for("A's flood refused", lambda: len(flood.refused) >= FLOOD_CLIENTS)
            loaded = [time_to_first_token(b) for _ in range(SAMPLES)]
    # B waits for what the engine already queued (the chart's engineQueue, 4: one request
    # per slot) and then a slot: two of A's requests at most, with a margin.
    bound = p99(unloaded) + 2.5 * one_request
    assert p99(loaded) <= bound, (unloaded, loaded, one_request)
    assert flood.answered, "A's admitted requests never finished"
    waited = sorted(flood.answered)[len(flood.answered) // 2]
    assert waited >= 1.5 * bound, (waited, one_request)  # A queues behind its own flood
    assert max(flood.refused) < one_request  # refused at once, never after waiting for a slot
