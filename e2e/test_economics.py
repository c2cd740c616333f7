"""Per-tenant economics through the real gateway on the local control plane.

Two simulated LLMDeployments, ``small`` (2.50 a GPU-hour) and ``large`` (10.00), behind the
alias ``chat``; two LLMTenants, ``a`` with the response cache and ``b`` without, applied with
kubectl. The gateway runs with the chart's service account, the alias file and the PII
guardrail; a Prometheus scrapes the engines (discovered through the API server), the gateway
and the operator.

Cases: a long prompt is escalated to ``large`` and says so in its headers and the gateway's
metrics; a repeated deterministic request is a cache hit, in its header and the metrics;
``llmfleet usage`` for the window gives the two tenants' tokens, which add up to the engines'
own token counters, and GPU-seconds, which add up to the fleet's (two one-GPU replicas for the
whole window), each within :data:`TOLERANCE`, and each row's cost is its GPU-hours at its
LLMDeployment's price. A gateway with a failing guardrail configured to fail closed answers 503
``guardrail_failed`` and sends nothing to an engine.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from kit import REPO, LocalPrometheus, apply_ready, wait_for
from kubernetes.client import ApiClient
from localop import SYSTEM, LocalOperator, install_chart
from test_tenants import model, tenant
from traffic import gateway_process

TOLERANCE = 0.05
"""How far ``llmfleet usage`` may be from the engines' counters (read before and after) and
the fleet's GPU-seconds (two one-GPU replicas for the whole window): usage reads
``increase()`` over 1 s scrapes, extrapolated to the window's edges from samples up to a
second apart."""
WINDOW_S = 45
"""The window ``llmfleet usage`` is asked about, at least."""
PRICES = {"small": 2.5, "large": 10.0}
OPERATOR_METRICS = "127.0.0.1:18080"
GUARDRAILS = REPO / "tests" / "fixtures" / "guardrails"


def query(prometheus: LocalPrometheus, promql: str) -> float:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as answer:
        found = json.load(answer)["data"]["result"]
    return sum(float(series["value"][1]) for series in found)


def scraped(prometheus: LocalPrometheus, promql: str, least: float) -> bool:
    """Whether ``promql`` is at least ``least`` yet (False while Prometheus starts)."""
    try:
        return query(prometheus, promql) >= least
    except OSError:
        return False


def metric(address: str, name: str, **labels: str) -> float:
    """A sample of the gateway's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and _labels(line) == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _labels(line: str) -> str:
    inside = line[line.index("{") + 1 : line.rindex("}")]
    return ",".join(sorted(inside.split(","))) if inside else ""


def usage(prometheus: LocalPrometheus, since: float) -> dict[str, Any]:
    iso = datetime.fromtimestamp(since).astimezone().isoformat()
    done = subprocess.run(
        [
            str(REPO / ".venv/bin/llmfleet"),
            "usage",
            "--prometheus",
            prometheus.url,
            "--since",
            iso,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def within(found: float, expected: float) -> bool:
    return abs(found - expected) <= TOLERANCE * expected


@pytest.mark.timeout(600)
def test_two_tenants_usage_adds_up_with_tiers_a_cache_and_guardrails(
    operator: LocalOperator,
    api_client: ApiClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    install_chart(kubeconfig, f"gateway.tenants.namespaces={{{SYSTEM},{namespace}}}")
    for name, price in PRICES.items():
        manifest = model(name)
        manifest["spec"]["placement"] = {"gpuHourPrice": f"{price:.2f}"}
        apply_ready(api_client, kubeconfig, namespace, manifest)
    key_a, key_b = (f"sk-e2e-{secrets.token_hex(16)}" for _ in range(2))
    unlimited = {"requestsPerMinute": 1_000_000}
    models = list(PRICES)
    tenant(kubeconfig, namespace, "a", models, key_a, unlimited, responseCache={"ttlSeconds": 600})
    tenant(kubeconfig, namespace, "b", models, key_b, unlimited)
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text(
        "aliases:\n- name: chat\n  tiers: [small, large]\n  escalate: {promptTokensAbove: 100}\n"
    )
    flags = ["--aliases", str(aliases), "--guardrail", "pii"]
    log = tmp_path / "gateway.log"
    with gateway_process(kubeconfig, namespace, log, tenants=True, extra=flags) as (address, _):
        prometheus = LocalPrometheus(
            kubeconfig, namespace, tmp_path / "prom", [address, OPERATOR_METRICS]
        )
        prometheus.configure()
        prometheus.start()
        try:
            a, b = (
                openai.OpenAI(base_url=f"http://{address}/v1", api_key=key, max_retries=0)
                for key in (key_a, key_b)
            )
            wait_for("tenant a's alias", lambda: "chat" in {m.id for m in a.models.list()})
            fleet = "sum(llmfleet_operator_gpu_seconds_total{llmdeployment=~'small|large'})"
            wait_for("the fleet's GPU-seconds scraped", lambda: scraped(prometheus, fleet, 1))
            engines = "count(vllm:prompt_tokens_total)"
            wait_for("both tiers' engines scraped", lambda: scraped(prometheus, engines, 2))
            engine_tokens = "sum(vllm:prompt_tokens_total) + sum(vllm:generation_tokens_total)"
            before = query(prometheus, engine_tokens)
            since = time.time()
            time.sleep(1)

            for n in range(8):
                a.completions.create(model="chat", prompt=f"short {n}", max_tokens=8)
            for n in range(4):
                stream = b.completions.create(
                    model="chat", prompt=f"stream {n}", max_tokens=12, stream=True
                )
                assert "".join(c.choices[0].text for c in stream if c.choices)
            long = b.completions.with_raw_response.create(
                model="chat", prompt="tell me more " * 60, max_tokens=16
            )
            assert long.headers["x-llmfleet-model"] == long.parse().model == "large"
            assert long.headers["x-llmfleet-escalated"] == "PromptLength"
            escalated = metric(
                address,
                "llmfleet_gateway_escalations_total",
                alias="chat",
                from_model="small",
                to_model="large",
                reason="PromptLength",
                tenant=f"{namespace}/b",
            )
            assert escalated == 1

            asked = {"model": "chat", "prompt": "cache me", "max_tokens": 6, "temperature": 0}
            first = a.completions.with_raw_response.create(**asked)
            again = a.completions.with_raw_response.create(**asked)
            assert (first.headers["x-llmfleet-cache"], again.headers["x-llmfleet-cache"]) == (
                "miss",
                "hit",
            )
            assert again.parse().choices[0].text == first.parse().choices[0].text
            hits = metric(
                address,
                "llmfleet_gateway_response_cache_lookups_total",
                model="chat",
                result="hit",
                tenant=f"{namespace}/a",
            )
            assert hits == 1

            # The last requests scraped on both sides, and a window long enough for
            # increase()'s extrapolation at its edges (a second at most) to stay small.
            time.sleep(max(4, since + WINDOW_S - time.time()))
            found = usage(prometheus, since)
            window = (
                datetime.fromisoformat(found["until"]) - datetime.fromisoformat(found["since"])
            ).total_seconds()
            rows = [r for r in found["rows"] if r["tenant"] in {f"{namespace}/a", f"{namespace}/b"}]
            assert {(r["tenant"].split("/")[1], r["model"]) for r in rows} >= {
                ("a", "small"),
                ("b", "small"),
                ("b", "large"),
            }
            counted = query(prometheus, engine_tokens) - before
            tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
            assert within(tokens, counted), (tokens, counted, rows)
            gpu_seconds = sum(r["gpu_seconds"] for r in rows)
            assert within(gpu_seconds, 2 * window), (gpu_seconds, window)
            served = [r for r in rows if r["model"] in PRICES]
            for row in served:
                price = PRICES[row["model"]]
                assert row["cost"] == pytest.approx(row["gpu_seconds"] / 3600 * price, rel=1e-3)
            # The cache's answer: a request of the alias, with no engine's tokens or time.
            [hit] = [r for r in rows if r["model"] == "chat"]
            assert (hit["tenant"], hit["requests"]) == (f"{namespace}/a", 1)
            assert hit["prompt_tokens"] == hit["completion_tokens"] == hit["gpu_seconds"] == 0
        finally:
            prometheus.stop()

    closed = ["--guardrail", "pii", "--guardrail", "failing:closed"]
    env = {"PYTHONPATH": str(GUARDRAILS)}
    log = tmp_path / "guarded.log"
    with gateway_process(kubeconfig, namespace, log, tenants=True, extra=closed, env=env) as (
        address,
        _,
    ):
        sdk = openai.OpenAI(base_url=f"http://{address}/v1", api_key=key_b, max_retries=0)
        wait_for("tenant b's models", lambda: "small" in {m.id for m in sdk.models.list()})
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.completions.create(model="small", prompt="hi", max_tokens=2)
        assert failed.value.status_code == 503
        assert failed.value.code == "guardrail_failed"
        outcome = {"guardrail": "failing", "stage": "before", "outcome": "failed_closed"}
        assert metric(address, "llmfleet_gateway_guardrail_outcomes_total", **outcome) == 1
    for secret in (key_a, key_b, "tell me more"):
        assert secret not in (tmp_path / "gateway.log").read_text()
