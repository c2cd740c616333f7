"""The Kube seam: what the operator needs of the API server, and its errors. Pure.

The reconcile depends on :class:`Kube`, the leader election on its own small seam
(:class:`~llmfleet_operator.leader.Leases`), and both catch :class:`KubeError`;
:mod:`.kube_client` implements them with the official client and is the only module that
imports it, so everything above can be imported and tested without it (tests pass in-memory
fakes).

Errors, drawn once (as kopf wraps its client's): every failure of a call comes out as a
:class:`KubeError`, never as the client's own exception::

    KubeError              the call failed; ``status`` (None: no answer) and the server's words
    +-- ClientError        4xx: the API server refused the request as asked
    |   +-- ForbiddenError 403: RBAC does not grant it
    |   +-- ConflictError  409: the object changed (or exists) meanwhile
    +-- ServerError        5xx, or the API server did not answer: retrying may help
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from llmfleet_contract.api import EventReason, EventType, Reason
from llmfleet_operator.resources import Resource

Manifest = dict[str, Any]


class KubeError(Exception):
    """A call to the API server failed; ``message`` is the server's own words (never a
    secret), ``status`` its HTTP status (None when it did not answer)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message = status, message


class ClientError(KubeError):
    """The API server refused the request (4xx)."""


class ForbiddenError(ClientError):
    """RBAC does not grant the call (403)."""


class ConflictError(ClientError):
    """The object changed, or already exists (409)."""


class ServerError(KubeError):
    """The API server failed (5xx) or did not answer."""


class Kube(Protocol):
    """What the reconcile needs from the API server."""

    def get(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        """The object as the operator last saw it (its watches may lag), or None."""
        ...

    def get_live(self, kind: Resource, namespace: str, name: str) -> Manifest | None:
        """The object as the API server has it now, or None."""
        ...

    def list(self, kind: Resource, namespace: str | None, selector: str) -> list[Manifest]: ...

    def apply(self, kind: Resource, manifest: Manifest) -> Manifest: ...

    def delete(self, kind: Resource, namespace: str, name: str) -> None: ...

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest: ...

    def patch(self, kind: Resource, namespace: str, name: str, body: Manifest) -> Manifest: ...

    def event(
        self, obj: Manifest, kind: EventType, reason: Reason | EventReason, message: str
    ) -> None: ...

    def served(self, kind: Resource) -> bool: ...


@dataclass(frozen=True)
class Credentials:
    """How this process reaches the API server (for kopf's own watch connections)."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    certificate_path: str | None
    private_key_path: str | None
