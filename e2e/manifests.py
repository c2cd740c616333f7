"""Objects `cluster.py` creates on a new control plane: the fake GPU nodes, the
LeaderWorkerSet webhook configurations and, with the real node (`node.py`), its
labels, GPU capacity and the API server's access to its kubelet. Pure functions.
"""

from __future__ import annotations

from typing import Any

import yaml

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"

# The real node (LLMFLEET_REAL_NODE=1): a kubelet on this machine whose pods live on
# the bridge subnet below. NODE_IP is the bridge's own address: the kubelet serves
# there, and pods reach the API server there (KUBERNETES_SERVICE_HOST).
REAL_NODE_NAME = "llmfleet-node"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
REAL_NODE_GPUS = 4
# Keeps the kwok tier's pods off the real node; the pods meant for it tolerate this.
REAL_NODE_TAINT = {"key": "llmfleet.io/node", "value": "real", "effect": "NoSchedule"}
REAL_NODE_LABELS = {
    "llmfleet.io/node": "real",
    "nvidia.com/gpu.product": GPU_PRODUCT,
    "nvidia.com/gpu.count": str(REAL_NODE_GPUS),
}


def gpu_node(index: int) -> dict[str, Any]:
    """Fake node `gpu-node-<index>` with 8 GPUs; its pods get IPs from 127.<index>.0.0/24."""
    name = f"gpu-node-{index}"
    resources = {
        "cpu": "192",
        "memory": "2Ti",
        "pods": "110",
        "ephemeral-storage": "10Ti",
        "nvidia.com/gpu": "8",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": "local-a",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": "8",
            },
        },
        "spec": {"podCIDR": f"127.{index}.0.0/24", "podCIDRs": [f"127.{index}.0.0/24"]},
        # A node keeps the status it is created with (a kubelet registers this way).
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": f"127.{index}.255.1"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def gpu_capacity_patch() -> dict[str, Any]:
    """Status patch giving the real node its GPUs as an extended resource, the way
    GPU-less test clusters advertise them (no device plugin: nothing is attached).
    The kubelet keeps a capacity it does not manage and derives allocatable from it."""
    gpus = {"nvidia.com/gpu": str(REAL_NODE_GPUS)}
    return {"status": {"capacity": gpus, "allocatable": gpus}}


def kubelet_api_admin_binding(user: str) -> dict[str, Any]:
    """Let the API server's kubelet client (`user`) use the kubelet API: logs, exec,
    port-forward. The kubelet authorizes it by a SubjectAccessReview."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "llmfleet:kube-apiserver-kubelet-client"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def lws_webhook_configurations(manifest: str, port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """LWS's webhook configurations (its release's manifests.yaml), pointed at its
    out-of-cluster server by URL.

    In a cluster they name a Service and get their CA injected; here the server
    listens on 127.0.0.1 with a certificate from our CA. The pod webhooks get the
    objectSelector that LWS's own kustomize patches add, so other pods never wait
    on LWS.
    """
    configurations = [doc for doc in yaml.safe_load_all(manifest) if doc]
    for configuration in configurations:
        configuration["metadata"]["name"] = "lws-" + configuration["metadata"]["name"]
        for hook in configuration["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            if "pods" in hook["rules"][0]["resources"]:
                selector = {"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}
                hook["objectSelector"] = {"matchExpressions": [selector]}
    return configurations
