"""``llmfleet crds`` and ``llmfleet validate``: the API's own command-line tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmfleet_contract.crd import build_crd, render_chart_template, render_yaml
from llmfleet_contract.validation import is_llmdeployment
from llmfleet_contract.validation import validate as validate_manifest

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def crds(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llmfleet crds", description="Generate the CRD YAML.")
    parser.add_argument("--output", type=Path, help="write the CRD here instead of stdout")
    parser.add_argument("--chart-output", type=Path, help="also write the Helm chart template here")
    args = parser.parse_args(argv)
    crd = build_crd()
    if args.output is None:
        sys.stdout.write(render_yaml(crd))
    else:
        _write(args.output, render_yaml(crd))
    if args.chart_output is not None:
        _write(args.chart_output, render_chart_template(crd))
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def validate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llmfleet validate",
        description="Check LLMDeployment manifests against the schema, its CEL rules and the"
        " operator's model, as the API server would at `kubectl apply`. Other kinds are skipped.",
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
        if not is_llmdeployment(document):
            continue
        checked += 1
        name = (document.get("metadata") or {}).get("name", "<unnamed>")
        errors = validate_manifest(document)
        if errors:
            invalid += 1
            print(f'{source}: The LLMDeployment "{name}" is invalid:', file=sys.stderr)
            for error in errors:
                print(f"  * {error}", file=sys.stderr)
    print(f"{checked} LLMDeployment(s) checked, {invalid} invalid")
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
