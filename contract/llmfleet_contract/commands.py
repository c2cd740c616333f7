"""``llmfleet crds``, ``validate`` and ``key``: the API's own command-line tools."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmfleet_contract.api.tenant import key_hash
from llmfleet_contract.crd import KINDS, build_crd, render_chart_template, render_yaml
from llmfleet_contract.validation import kind_of
from llmfleet_contract.validation import validate as validate_manifest

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def crds(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llmfleet crds", description="Generate the CRD YAML.")
    parser.add_argument(
        "--output-dir", type=Path, help="write one file per CRD here instead of stdout"
    )
    parser.add_argument("--chart-dir", type=Path, help="also write the Helm chart templates here")
    args = parser.parse_args(argv)
    for kind in KINDS:
        crd = build_crd(kind)
        if args.output_dir is None:
            sys.stdout.write(("---\n" if kind != KINDS[0] else "") + render_yaml(crd))
        else:
            _write(args.output_dir / kind.file_name, render_yaml(crd))
        if args.chart_dir is not None:
            _write(args.chart_dir / kind.file_name, render_chart_template(crd))
    return 0


def key(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llmfleet key",
        description="Make a new API key for a tenant. The key goes to the tenant and is"
        " shown once; the hash goes into the Secret the LLMTenant's spec.apiKeys names.",
    )
    parser.add_argument("--name", default="key", help="the Secret entry's name (default: key)")
    args = parser.parse_args(argv)
    new = "sk-llmfleet-" + secrets.token_urlsafe(32)
    print(f"# the key, for the tenant only (not stored anywhere):\n# {new}")
    print(f"# the Secret's stringData entry:\n{args.name}: {key_hash(new)}")
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def validate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llmfleet validate",
        description="Check LLMDeployment and LLMTenant manifests against the schema, its CEL"
        " rules and the model, as the API server would at `kubectl apply`. Other kinds are"
        " skipped.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        type=Path,
        help="a manifest file or a folder of them (repeatable; '-' reads stdin)",
    )
    args = parser.parse_args(argv)
    checked = invalid = 0
    for source, document in _documents(args.paths):
        if isinstance(document, Unreadable):
            print(f"{source}: {document.reason}", file=sys.stderr)
            invalid += 1
            continue
        kind = kind_of(document)
        if kind is None:
            continue
        checked += 1
        name = (document.get("metadata") or {}).get("name", "<unnamed>")
        errors = validate_manifest(document)
        if errors:
            invalid += 1
            print(f'{source}: The {kind.kind} "{name}" is invalid:', file=sys.stderr)
            for error in errors:
                print(f"  * {error}", file=sys.stderr)
    print(f"{checked} object(s) checked, {invalid} invalid")
    return 1 if invalid else 0


@dataclass(frozen=True)
class Unreadable:
    """A file that could not be read or parsed: an error, never a silent pass."""

    reason: str


def _documents(paths: list[Path]) -> Iterator[tuple[str, Any]]:
    """(where, document) for every YAML document, or (where, Unreadable)."""
    for path in paths:
        if str(path) == "-":
            yield from _parse("<stdin>", sys.stdin.read())
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES):
                yield from _parse(str(file), file.read_text())
        elif path.is_file():
            yield from _parse(str(path), path.read_text())
        else:
            yield str(path), Unreadable("no such file or directory")


def _parse(source: str, text: str) -> Iterator[tuple[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        yield source, Unreadable(f"not valid YAML: {err}")
        return
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}[{index}]"
        if isinstance(document, dict) and document.get("kind", "").endswith("List"):
            for item_index, item in enumerate(document.get("items") or []):
                yield f"{where}.items[{item_index}]", item
        else:
            yield where, document
