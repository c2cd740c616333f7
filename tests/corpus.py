"""The example and invalid-spec corpora, shared by the fast tests and the e2e tests.

Each file in ``tests/corpus/invalid/`` is one manifest the API must refuse. Its header
says where and how: ``# field:`` the path the error names (empty: the object itself),
``# message:`` what the API server's error must say, and optionally
``# model-message:`` when the pydantic model words the same refusal differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
"""One LLMDeployment each."""
TENANT_EXAMPLES = sorted((ROOT / "examples" / "tenants").glob("*.yaml"))
"""An LLMTenant and its keys' Secret each."""
INVALID = sorted((Path(__file__).parent / "corpus" / "invalid").glob("*.yaml"))


@dataclass(frozen=True)
class InvalidCase:
    name: str
    manifest: dict[str, Any]
    field: str
    message: str
    model_message: str


def load_invalid(path: Path) -> InvalidCase:
    text = path.read_text()
    header = {
        key.strip(): value.strip()
        for key, _, value in (
            line[1:].partition(":") for line in text.splitlines() if line.startswith("# ")
        )
    }
    return InvalidCase(
        name=path.stem,
        manifest=yaml.safe_load(text),
        field=header.get("field", ""),
        message=header["message"],
        model_message=header.get("model-message", header["message"]),
    )
