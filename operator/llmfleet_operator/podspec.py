"""Pure builders of the engine pod: spec in, launcher config and pod template out.

Called by :mod:`children` for Deployments and LeaderWorkerSets. Nothing here talks to
the API server. The launcher config travels as JSON in an env var, so any change to it
changes the pod template, and so rolls the pods; nothing else does.
"""

from __future__ import annotations

import copy
from typing import Any

from llmfleet_contract import labels
from llmfleet_contract.api import LLMDeployment
from llmfleet_contract.labels import PodRole
from llmfleet_runtime.launcher.config import CONFIG_ENV, EngineConfig, LoraAdapter

Manifest = dict[str, Any]

SHM_VOLUME = "dshm"
CACHE_VOLUME = "model-cache"
PVC_VOLUME = "model-source"
PVC_MOUNT = "/mnt/model-source"
# Seconds the pod keeps serving after it is marked for deletion, so endpoint removal
# reaches the gateway before the engine stops accepting.
PRESTOP_SLEEP_SECONDS = 5
# The kubelet kills at the grace period; leave the engine room to exit after draining.
GRACE_MARGIN_SECONDS = 15
# Weights can take long to load (hundreds of GB); the startup probe waits this long.
STARTUP_SECONDS = 3600
PROBE_PERIOD_SECONDS = 10
SIMULATOR_COMMAND = ("llmfleet", "engine-sim")


def model_path(source: str) -> str:
    """What the engine loads for a ``spec.model.source`` URI."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        return source  # a local path inside the image
    if scheme == "hf":
        return rest
    if scheme == "pvc":
        _claim, _, path = rest.partition("/")
        return f"{PVC_MOUNT}/{path}".rstrip("/")
    return source  # s3:// gs:// oci:// are handed to the engine's own loaders


def _pvc_claim(source: str) -> str | None:
    scheme, _, rest = source.partition("://")
    return rest.partition("/")[0] if scheme == "pvc" else None


def engine_config(obj: LLMDeployment) -> EngineConfig:
    """The launcher's config for one serving group of ``obj``."""
    spec = obj.spec
    model, engine, parallelism = spec.model, spec.engine, spec.parallelism
    simulated: dict[str, Any] = {}
    if engine.simulator is not None:
        sim = engine.simulator
        simulated = {
            "engine_command": (
                *SIMULATOR_COMMAND,
                f"--profile={sim.profile.value}",
                f"--time-scale={sim.time_scale}",
                f"--startup-delay={sim.startup_delay_seconds}",
            ),
            "gpu_check": False,
        }
    return EngineConfig(
        model=model_path(model.source),
        revision=model.revision,
        served_model_names=tuple(obj.served_names),
        dtype=model.dtype.value,
        quantization=model.quantization,
        max_model_len=model.max_model_len,
        tensor_parallel_size=parallelism.tensor_parallel_size,
        pipeline_parallel_size=parallelism.pipeline_parallel_size,
        nodes=parallelism.nodes_per_group,
        gpus_per_node=parallelism.gpus_per_pod,
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        enable_prefix_caching=engine.enable_prefix_caching,
        enable_chunked_prefill=engine.enable_chunked_prefill,
        lora_adapters=tuple(
            LoraAdapter(name=a.name, path=model_path(a.source)) for a in model.lora_adapters or ()
        ),
        max_loras=len(model.lora_adapters) if model.lora_adapters else None,
        max_lora_rank=model.max_lora_rank,
        extra_args=tuple(engine.extra_args or ()),
        port=labels.ENGINE_PORT,
        drain_timeout_seconds=spec.serving.drain_deadline_seconds,
        **simulated,
    )


def node_affinity(obj: LLMDeployment) -> Manifest | None:
    """The user's affinity, with the GPU product requirement added to every node term, and,
    where spot replicas run apart (:func:`spot_tier`), the spot nodes left out."""
    placement = obj.spec.placement
    affinity = copy.deepcopy(placement.affinity) if placement.affinity else {}
    added: list[Manifest] = []
    if placement.gpu_products:
        added.append(
            {
                "key": placement.gpu_product_label,
                "operator": "In",
                "values": list(placement.gpu_products),
            }
        )
    if not added and placement.spot is None:
        return affinity or None
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    )
    terms = required.setdefault("nodeSelectorTerms", []) or [{}]
    for term in terms:  # terms are ORed: each one must ask for the GPU product
        term.setdefault("matchExpressions", []).extend(added)
    if placement.spot is not None:
        # A spot node matches every label of the spot selector: a node that differs in any
        # one is on demand. Terms are ORed, so one term per label.
        terms = [
            {
                **term,
                "matchExpressions": [
                    *term["matchExpressions"],
                    {"key": key, "operator": "NotIn", "values": [value]},
                ],
            }
            for term in terms
            for key, value in sorted(placement.spot.node_selector.items())
        ]
    required["nodeSelectorTerms"] = terms
    return affinity


def spot_tier(obj: LLMDeployment) -> LLMDeployment:
    """``obj`` as its spot replicas see it: the spot nodes' labels and taints added to its
    placement, and no spot of its own."""
    placement = obj.spec.placement
    spot = placement.spot
    assert spot is not None
    tier = placement.model_copy(
        update={
            "node_selector": {**(placement.node_selector or {}), **spot.node_selector},
            "tolerations": [*(placement.tolerations or ()), *(spot.tolerations or ())] or None,
            "spot": None,
        }
    )
    return obj.model_copy(update={"spec": obj.spec.model_copy(update={"placement": tier})})


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": labels.ENGINE_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def engine_container(obj: LLMDeployment, *, serves_http: bool) -> Manifest:
    """The engine container. Workers of a multi-node group serve no HTTP, so get no probes."""
    spec = obj.spec
    gpus = str(spec.parallelism.gpus_per_pod)
    resources: Manifest = {
        "requests": {spec.placement.gpu_resource_name: gpus},
        "limits": {spec.placement.gpu_resource_name: gpus},
    }
    if spec.engine.resources:
        for key in ("cpu", "memory"):
            value = getattr(spec.engine.resources, key)
            if value:
                resources["requests"][key] = resources["limits"][key] = value
    cache_mount = spec.placement.model_cache.mount_path if spec.placement.model_cache else "/models"
    env: list[Manifest] = [
        {"name": CONFIG_ENV, "value": engine_config(obj).model_dump_json(by_alias=True)},
        {"name": "HF_HOME", "value": cache_mount},
        *({"name": e.name, "value": e.value} for e in spec.engine.env or ()),
    ]
    mounts: list[Manifest] = [
        {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        {"name": CACHE_VOLUME, "mountPath": cache_mount},
    ]
    if _pvc_claim(spec.model.source):
        mounts.append({"name": PVC_VOLUME, "mountPath": PVC_MOUNT, "readOnly": True})
    container: Manifest = {
        "name": "engine",
        "image": spec.engine.image,
        "imagePullPolicy": spec.engine.image_pull_policy.value,
        "command": ["llmfleet"],
        "args": ["launch"],
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
    }
    if spec.model.pull_secret_ref:
        container["envFrom"] = [{"secretRef": {"name": spec.model.pull_secret_ref.name}}]
    if serves_http:
        container["ports"] = [
            {"name": labels.ENGINE_PORT_NAME, "containerPort": labels.ENGINE_PORT}
        ]
        container["startupProbe"] = _probe(
            "/health", PROBE_PERIOD_SECONDS, STARTUP_SECONDS // PROBE_PERIOD_SECONDS
        )
        container["readinessProbe"] = _probe("/health", 5, 2)
        container["livenessProbe"] = _probe("/health", PROBE_PERIOD_SECONDS, 6)
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}
    return container


def _volumes(obj: LLMDeployment) -> list[Manifest]:
    placement = obj.spec.placement
    volumes: list[Manifest] = [
        {
            "name": SHM_VOLUME,
            "emptyDir": {"medium": "Memory", "sizeLimit": placement.shared_memory_size},
        }
    ]
    cache = placement.model_cache
    if cache and cache.claim_name:
        volumes.append(
            {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}
        )
    else:
        empty: Manifest = {"sizeLimit": cache.size_limit} if cache and cache.size_limit else {}
        volumes.append({"name": CACHE_VOLUME, "emptyDir": empty})
    claim = _pvc_claim(obj.spec.model.source)
    if claim:
        volumes.append(
            {"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    return volumes


def pod_template(obj: LLMDeployment, *, role: PodRole, serves_http: bool = True) -> Manifest:
    """A pod template of ``obj``'s engine in its ``role``."""
    spec = obj.spec
    placement = spec.placement
    pod_spec: Manifest = {
        "containers": [engine_container(obj, serves_http=serves_http)],
        "volumes": _volumes(obj),
        "terminationGracePeriodSeconds": spec.serving.drain_deadline_seconds
        + PRESTOP_SLEEP_SECONDS
        + GRACE_MARGIN_SECONDS,
        "enableServiceLinks": False,
    }
    optional: Manifest = {
        "nodeSelector": dict(placement.node_selector) if placement.node_selector else None,
        "affinity": node_affinity(obj),
        "tolerations": [
            t.model_dump(by_alias=True, exclude_none=True) for t in placement.tolerations
        ]
        if placement.tolerations
        else None,
        "priorityClassName": placement.priority_class_name,
        "imagePullSecrets": [{"name": s.name} for s in spec.engine.image_pull_secrets]
        if spec.engine.image_pull_secrets
        else None,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    annotations = {}
    if serves_http:
        annotations = {
            labels.PROMETHEUS_SCRAPE: "true",
            labels.PROMETHEUS_PORT: str(labels.ENGINE_PORT),
            labels.PROMETHEUS_PATH: "/metrics",
        }
    metadata: Manifest = {
        "labels": {**labels.common_labels(obj.metadata.name), labels.ROLE: role.value}
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": pod_spec}
