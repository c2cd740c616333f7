"""The Kube client's errors leave it as the seam's own (:mod:`llmfleet_operator.kube`).

Cases, one table: the API server's 403, 409, 404, 422 and 500 answers, a call with no HTTP
answer (status 0, as the client reports a TLS failure), a connection that never answers
(urllib3) and a kind the API server does not serve (discovery) each come out as the matching
``KubeError`` subclass with the server's own message where it sent one.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from urllib3.exceptions import MaxRetryError

from llmfleet_operator.kube import (
    ClientError,
    ConflictError,
    ForbiddenError,
    KubeError,
    ServerError,
)
from llmfleet_operator.kube_client import _translated


def answer(status: int, message: str | None = None) -> ApiException:
    error = ApiException(status=status, reason="Reason Phrase")
    error.body = json.dumps({"kind": "Status", "message": message}) if message else None
    return error


@pytest.mark.parametrize(
    ("raised", "kind", "status", "message"),
    [
        (answer(403, 'leases is forbidden: User "x"'), ForbiddenError, 403, "leases is forbidden"),
        (answer(409, "the object has been modified"), ConflictError, 409, "has been modified"),
        (answer(404, 'pods "p" not found'), ClientError, 404, "not found"),
        (answer(422, "spec.replicas: Invalid value"), ClientError, 422, "Invalid value"),
        (answer(500, "etcdserver: request timed out"), ServerError, 500, "etcdserver"),
        (answer(0), ServerError, None, "Reason Phrase"),
        (MaxRetryError(None, "/api", "Connection refused"), ServerError, None, "did not answer"),
        (ResourceNotFoundError("No matches found for x"), ClientError, 404, "does not serve"),
    ],
)
def test_client_errors_become_the_seams(
    raised: Exception, kind: type[KubeError], status: int | None, message: str
) -> None:
    with pytest.raises(kind, match=message) as caught, _translated():
        raise raised
    assert type(caught.value) is kind
    assert caught.value.status == status
