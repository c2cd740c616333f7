"""Tenants at the gateway: whose key a request carries, and which models it may reach.

Who uses it: :mod:`.server` authenticates every request against the current
:class:`Directory` and filters models with :func:`may_use`; :mod:`.discovery` (in a cluster)
and :func:`load_file` (``llmfleet gateway --tenants FILE``) build directories from LLMTenant
objects and the Secrets of hashed keys they name. A directory is never changed in place:
a change builds a new one, so a request sees one consistent view.

Keys are never held, only their SHA-256. A presented key is hashed; the digest's first
bytes find the candidates, and each candidate's whole digest is compared with
:func:`hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from llmfleet_contract.api import LLMTenant, TenantLimits, TenantPriority
from llmfleet_contract.api.tenant import KEY_HASH_PATTERN, KEY_HASH_PREFIX
from llmfleet_contract.openai import ApiError
from llmfleet_contract.validation import kind_of, validate
from llmfleet_gateway.pool import Model

log = logging.getLogger("llmfleet.gateway.tenants")

Manifest = dict[str, Any]
Object = Mapping[str, Any]

INDEX_BYTES = 8


@dataclass(frozen=True)
class Tenant:
    """One tenant as the gateway applies it."""

    namespace: str
    name: str
    deployments: frozenset[str]
    """The LLMDeployments (in ``namespace``) it lists in ``spec.models``."""
    priority: TenantPriority = TenantPriority.INTERACTIVE
    limits: TenantLimits = field(default_factory=TenantLimits)
    regions: frozenset[str] | None = None
    """Where its requests may be served (``spec.regions``); None: anywhere."""
    cache_ttl_s: float | None = None
    """How long its answers are kept for a repeat (``spec.responseCache``); None: never."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label(self) -> str:
        """Its metric label and access-log field: ``namespace/name``."""
        return f"{self.namespace}/{self.name}"


def may_use(tenant: Tenant | None, model: Model) -> bool:
    """Whether ``tenant`` reaches ``model``: both sides agree (None: an open gateway)."""
    if tenant is None:
        return True
    return (
        model.namespace == tenant.namespace
        and model.deployment in tenant.deployments
        and (model.tenants is None or tenant.name in model.tenants)
    )


def invalid_key() -> ApiError:
    return ApiError(
        401,
        "Incorrect API key provided. Ask the platform team for a key of your tenant.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


@dataclass(frozen=True)
class Directory:
    """Every tenant and its keys' digests. ``open``: no tenants configured, no key asked."""

    tenants: Mapping[tuple[str, str], Tenant] = field(default_factory=dict)
    digests: Mapping[bytes, tuple[tuple[bytes, Tenant], ...]] = field(default_factory=dict)
    """By the digest's first :data:`INDEX_BYTES`: the whole digests and their tenants."""
    open: bool = False

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of an ``Authorization: Bearer KEY`` header; :class:`ApiError` 401 else."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "You didn't provide an API key: send it as `Authorization: Bearer KEY`.",
                "invalid_request_error",
                None,
                "invalid_api_key",
            )
        digest = hashlib.sha256(key.strip().encode()).digest()
        for stored, tenant in self.digests.get(digest[:INDEX_BYTES], ()):
            if hmac.compare_digest(stored, digest):
                return tenant
        raise invalid_key()


def tenant_of(manifest: Object) -> Tenant:
    """A :class:`Tenant` from an LLMTenant object (``pydantic.ValidationError`` when invalid)."""
    obj = LLMTenant.model_validate(_without_server_fields(manifest))
    return Tenant(
        namespace=obj.metadata.namespace or "default",
        name=obj.metadata.name,
        deployments=frozenset(obj.spec.models),
        priority=obj.spec.priority,
        limits=obj.spec.limits,
        regions=None if obj.spec.regions is None else frozenset(obj.spec.regions),
        cache_ttl_s=None if (cache := obj.spec.response_cache) is None else cache.ttl_seconds,
    )


def digests_of(secret: Object) -> list[bytes]:
    """The key digests a Secret holds; an entry that is not ``sha256:<64 hex>`` is logged by
    its name (never its value) and skipped."""
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    entries: dict[str, str] = {}
    for name, value in (secret.get("data") or {}).items():
        try:
            entries[name] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            entries[name] = ""
    entries.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    found = []
    for name, value in entries.items():
        value = value.strip()
        if KEY_HASH_PATTERN.match(value):
            found.append(bytes.fromhex(value.removeprefix(KEY_HASH_PREFIX)))
        else:
            log.warning(
                "%s entry %r is not a key hash (sha256:<64 hex digits>, from `llmfleet key`):"
                " skipped",
                where,
                name,
            )
    return found


def build(tenants: Iterable[Object], secrets: Iterable[Object]) -> Directory:
    """The directory of ``tenants`` (LLMTenant objects) with their keys from ``secrets``.
    An invalid tenant is logged and left out; a key two tenants share belongs to neither."""
    by_name = {
        ((s.get("metadata") or {}).get("namespace") or "default", s["metadata"]["name"]): s
        for s in secrets
        if (s.get("metadata") or {}).get("name")
    }
    found: dict[tuple[str, str], Tenant] = {}
    digests: dict[bytes, Tenant] = {}
    shared: set[bytes] = set()
    for manifest in tenants:
        meta = manifest.get("metadata") or {}
        try:
            tenant = tenant_of(manifest)
        except pydantic.ValidationError as error:
            log.warning(
                "LLMTenant %s/%s is not valid, so it has no access: %d problem(s)",
                meta.get("namespace"),
                meta.get("name"),
                error.error_count(),
            )
            continue
        found[tenant.key] = tenant
        secret_name = manifest["spec"]["apiKeys"]["name"]
        secret = by_name.get((tenant.namespace, secret_name))
        if secret is None:
            log.warning("LLMTenant %s: its Secret %s is missing", tenant.label, secret_name)
            continue
        for digest in digests_of(secret):
            if digest in digests and digests[digest] != tenant:
                shared.add(digest)
            digests[digest] = tenant
    for digest in shared:
        log.warning("Tenant %s shares a key with another tenant: refused", digests[digest].label)
        del digests[digest]
    index: dict[bytes, tuple[tuple[bytes, Tenant], ...]] = {}
    for digest, tenant in digests.items():
        index[digest[:INDEX_BYTES]] = (*index.get(digest[:INDEX_BYTES], ()), (digest, tenant))
    return Directory(found, index)


def load_file(path: Path, namespace: str) -> Directory:
    """The LLMTenants and Secrets of a manifest file (``--tenants FILE``), as a user would
    apply them; ``namespace`` for objects that name none. ValueError when a tenant is
    invalid, saying why as the API server would."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    for document in documents:
        document.setdefault("metadata", {}).setdefault("namespace", namespace)
    tenants = [d for d in documents if kind_of(d) is not None]
    for tenant in tenants:
        errors = validate(tenant)
        if errors:
            name = tenant["metadata"].get("name", "<unnamed>")
            raise ValueError(
                f"{path}: the {tenant.get('kind')} {name!r} is invalid: "
                + "; ".join(map(str, errors))
            )
    secrets = [d for d in documents if d.get("kind") == "Secret"]
    if not tenants:
        raise ValueError(f"{path}: no LLMTenant in it")
    return build(tenants, secrets)


def _without_server_fields(manifest: Object) -> Manifest:
    meta = manifest.get("metadata") or {}
    return {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": manifest.get("spec") or {},
    }
