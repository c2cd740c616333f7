"""Tenants through the real gateway on the local control plane, with the official ``openai``
client.

The chart is upgraded to let its gateway read this test's namespace's tenants (a Role for
Secrets there, nothing cluster-wide); the gateway runs with the chart's service account's
token. Two simulated LLMDeployments, ``left`` and ``right``, and two LLMTenants with their keys'
Secrets, applied with kubectl as a user would.

Cases: tenant A lists and calls only ``left``; ``right`` answers A exactly as a model that does not
exist; a wrong key is AuthenticationError; A over its requests per minute gets RateLimitError
at once, with the ``x-ratelimit-*`` headers, while B goes on being answered; a key removed
from its Secret stops working within seconds.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from kit import EXAMPLES, apply, apply_ready, wait_for
from kubernetes.client import ApiClient
from localop import SYSTEM, LocalOperator, install_chart, kubectl
from traffic import gateway

from llmfleet_contract.api import key_hash
from llmfleet_contract.labels import API_KEYS

RPM = 4


def model(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / "llama-8b-simulated.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["servedNames"] = [name]
    manifest["spec"]["replicas"] = 1
    return manifest


def tenant(kubeconfig: Path, namespace: str, name: str, models: list[str], key: str) -> None:
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
            "limits": {"requestsPerMinute": RPM},
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
