"""The credentials kopf logs in with, as the operator's own client has them: a kubeconfig's
"Bearer" token, the in-cluster loader's "bearer" token (a pod's service account: kopf was
sent "Bearer bearer ..." and every watch got 401 before), and a projected token the kubelet
rotated, read again at the next login."""

from __future__ import annotations

import datetime
from pathlib import Path

from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

from llmfleet_operator.kube_client import credentials

ENVIRON = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def in_cluster(tmp_path: Path) -> tuple[client.Configuration, Path, InClusterConfigLoader]:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first-token")
    ca.write_text("not checked here")
    loader = InClusterConfigLoader(str(token), str(ca), environ=ENVIRON)
    configuration = client.Configuration()
    loader.load_and_set(configuration)
    return configuration, token, loader


def test_a_pods_service_account_token_is_sent_as_is(tmp_path: Path) -> None:
    configuration, _, _ = in_cluster(tmp_path)
    found = credentials(configuration)
    assert found.token == "first-token"
    assert found.server == "https://127.0.0.1:6443"
    assert found.ca_path == str(tmp_path / "ca.crt")


def test_a_rotated_token_is_read_again_once_the_refresh_period_is_over(tmp_path: Path) -> None:
    configuration, token, loader = in_cluster(tmp_path)
    token.write_text("rotated-token")
    assert credentials(configuration).token == "first-token"  # within the refresh period
    loader.token_expires_at = datetime.datetime.now() - datetime.timedelta(seconds=1)
    assert credentials(configuration).token == "rotated-token"


def test_a_kubeconfig_bearer_token() -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = {"authorization": "Bearer from-kubeconfig"}
    assert credentials(configuration).token == "from-kubeconfig"
    configuration.api_key = {}
    assert credentials(configuration).token is None
