"""What the gateway reads of the cluster: the models of LLMDeployments and their serving pods.

Cases: an LLMDeployment serves its name, or its served names, plus its LoRA adapters, with
its slots; an invalid spec serves nothing; a name two LLMDeployments serve stays with the
older one (a newer one, whatever its namespace, never takes it over); only ready, serving,
non-terminating pods with an owner and an address are replicas (a LeaderWorkerSet worker, a
starting pod, a terminating pod are not); updating a pool drops a deleted LLMDeployment's
models and replicas and moves a pod that terminates out at once. (The watch itself runs
against the real API server in e2e.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmfleet_contract.labels import OWNER, ROLE
from llmfleet_gateway.discovery import models_of, served_models, serving_replicas, update
from llmfleet_gateway.pool import Model, Pool


def deployment(name: str, namespace: str = "ns", **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": "u", "generation": 3},
        "spec": {"model": {"source": "hf://org/m", **model}, "engine": {"maxNumSeqs": 8}},
        "status": {"readyReplicas": 1},
    }


def pod(
    name: str,
    owner: str | None = "llama",
    role: str = "engine",
    ready: bool = True,
    ip: str | None = "127.0.9.1",
    deleting: bool = False,
) -> dict[str, Any]:
    labels = {ROLE: role} | ({OWNER: owner} if owner else {})
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def test_models_of_an_llmdeployment() -> None:
    assert models_of(deployment("llama")) == [Model("llama", "llama", "ns", max_num_seqs=8)]
    served = deployment(
        "llama", servedNames=["a", "b"], loraAdapters=[{"name": "sql", "source": "hf://o/sql"}]
    )
    assert [m.name for m in models_of(served)] == ["a", "b", "sql"]
    assert {m.key for m in models_of(served)} == {("ns", "llama")}


def test_an_invalid_spec_serves_nothing() -> None:
    bad = deployment("llama")
    bad["spec"]["engine"]["extraArgs"] = ["--tensor-parallel-size=2"]
    assert models_of(bad) == []
    assert models_of({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}}) == []


def test_a_name_served_twice_stays_with_the_older() -> None:
    old, new = (
        deployment("zz-old", "ns2", servedNames=["m"]),
        deployment("aa-new", "a", servedNames=["m"]),
    )
    old["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    new["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
    for order in ([old, new], [new, old]):
        assert [(m.name, m.key) for m in served_models(order)] == [("m", ("ns2", "zz-old"))]


def test_a_gateway_serves_its_regions_llmdeployments_and_the_unplaced() -> None:
    here, there, anywhere = (deployment(name, servedNames=[name]) for name in ("h", "t", "any"))
    here["spec"]["serving"] = {"region": "eu", "ttftObjectiveSeconds": 1.5}
    here["status"] = {"signals": {"learnedStartupSeconds": 95.0}}
    there["spec"]["serving"] = {"region": "us"}
    found = {m.name: m for m in served_models([here, there, anywhere], "eu")}
    assert sorted(found) == ["any", "h"]
    assert (found["h"].region, found["h"].ttft_objective_s, found["h"].startup_s) == (
        "eu",
        1.5,
        95.0,
    )
    assert sorted(m.name for m in served_models([here, there, anywhere])) == ["any", "h", "t"]


def test_only_ready_serving_pods_are_replicas() -> None:
    pods = [
        pod("engine-ready"),
        pod("leader", role="leader", ip="127.0.9.2"),
        pod("worker", role="worker"),
        pod("starting", ready=False),
        pod("terminating", deleting=True),
        pod("no-address", ip=None),
        pod("not-ours", owner=None),
        pod("other", owner="qwen", ip="127.0.9.3"),
    ]
    assert serving_replicas(pods) == {
        ("ns", "llama"): [
            ("engine-ready", "http://127.0.9.1:8000"),
            ("leader", "http://127.0.9.2:8000"),
        ],
        ("ns", "qwen"): [("other", "http://127.0.9.3:8000")],
    }


def test_update_follows_the_cluster() -> None:
    async def run() -> None:
        pool = Pool()
        update(
            pool, [deployment("llama"), deployment("qwen")], [pod("p1"), pod("p2", ip="127.0.9.2")]
        )
        assert set(pool.models) == {"llama", "qwen"}
        assert set(pool.replicas_of("llama")) == {"p1", "p2"}
        update(pool, [deployment("llama")], [pod("p1"), pod("p2", ip="127.0.9.2", deleting=True)])
        assert set(pool.models) == {"llama"}
        assert set(pool.replicas_of("llama")) == {"p1"}
        assert ("ns", "qwen") not in pool.groups

    asyncio.run(run())
