"""A minimal JSON client for the local API server, standard library only.

Used by `cluster.py` (bring-up: nodes, CRDs, webhook configurations) and by
`podrunner.py` (pod status and deletion). They run before any virtualenv
package is needed and only ever talk to one loopback server with a bearer
token, so the official client (which the tests use) would be more than they
need.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    """The API server answered with a non-2xx status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Api:
    """Bearer-token HTTPS client for one API server (host:port on loopback)."""

    def __init__(self, host: str, port: int, token: str, ca_pem: str) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._tls = ssl.create_default_context(cadata=ca_pem)

    @classmethod
    def from_kubeconfig(cls, path: str) -> Api:
        """Read a token kubeconfig as e2e/pki.py writes them (inline CA, one user)."""
        import yaml  # only the scripts that read kubeconfigs need PyYAML

        config = yaml.safe_load(Path(path).read_text())
        cluster = config["clusters"][0]["cluster"]
        url = urllib.parse.urlsplit(cluster["server"])
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        token = config["users"][0]["user"]["token"]
        return cls(url.hostname or "127.0.0.1", url.port or 443, token, ca_pem)

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._tls, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        conn = self._connect(timeout)
        try:
            headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise ApiError(response.status, text)
        result: JSON = json.loads(text) if text else {}
        return result

    def get(self, path: str) -> JSON:
        return self.request("GET", path)

    def apply(self, path: str, obj: JSON, manager: str = "llmfleet-e2e") -> JSON:
        """Server-side apply `obj` at `path` (the object's own URL), forcing ownership."""
        query = urllib.parse.urlencode({"fieldManager": manager, "force": "true"})
        return self.request("PATCH", f"{path}?{query}", obj, "application/apply-patch+yaml")

    def merge_patch(self, path: str, patch: JSON) -> JSON:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def strategic_patch(self, path: str, patch: JSON) -> JSON:
        return self.request("PATCH", path, patch, "application/strategic-merge-patch+json")

    def delete(self, path: str, options: JSON | None = None) -> JSON:
        return self.request("DELETE", path, options)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 300) -> Iterator[JSON]:
        """Yield watch events ({"type", "object"}) for a collection from `resource_version`."""
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(timeout_seconds),
            }
        )
        sep = "&" if "?" in path else "?"
        conn = self._connect(timeout_seconds + 30.0)
        try:
            conn.request(
                "GET", f"{path}{sep}{query}", headers={"Authorization": f"Bearer {self._token}"}
            )
            response = conn.getresponse()
            if response.status != 200:
                raise ApiError(response.status, response.read().decode())
            for line in response:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
