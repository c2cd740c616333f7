"""``llmfleet`` as a GitOps pipeline runs it.

Cases: ``validate`` passes the examples (exit 0) and fails a folder with one bad spec
(exit 1) printing the object, field path and rule like the API server; other kinds
and ``List`` items are handled; unreadable input is an error, never a silent pass;
``crds`` prints the committed CRDs; unknown commands exit 2 with the usage.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.cli import main
from llmfleet_contract.api.tenant import key_hash
from tests.corpus import EXAMPLES, INVALID, ROOT, TENANT_EXAMPLES


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(ROOT / "examples")]) == 0
    checked = len(EXAMPLES) + len(TENANT_EXAMPLES)
    assert f"{checked} object(s) checked, 0 invalid" in capsys.readouterr().out


def test_validate_reports_like_the_api_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(EXAMPLES[0], tmp_path)
    shutil.copy(ROOT / "tests/corpus/invalid/min-above-max.yaml", tmp_path)
    assert main(["validate", "-f", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert 'min-above-max.yaml: The LLMDeployment "bad" is invalid:' in captured.err
    assert (
        '  * spec.autoscaling.minReplicas: Invalid value: "object":'
        " minReplicas must be less than or equal to maxReplicas" in captured.err
    )
    assert "2 object(s) checked, 1 invalid" in captured.out


def test_validate_every_invalid_case_fails() -> None:
    for path in INVALID:
        assert main(["validate", "-f", str(path)]) == 1, path.name


def test_validate_skips_other_kinds_and_reads_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = yaml.safe_load((ROOT / "tests/corpus/invalid/tp-zero.yaml").read_text())
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    listed = {"apiVersion": "v1", "kind": "List", "items": [bad]}
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([other, "a scalar", listed]))
    assert main(["validate", "-f", str(tmp_path / "all.yaml")]) == 1
    captured = capsys.readouterr()
    assert "all.yaml[2].items[0]: The LLMDeployment" in captured.err
    assert "1 object(s) checked, 1 invalid" in captured.out


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file or directory"), (": : not yaml [", "not valid YAML")],
)
def test_validate_unreadable_input_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "x.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["validate", "-f", str(path)]) == 1
    assert expected in capsys.readouterr().err


def test_crds_prints_the_committed_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    files = sorted((ROOT / "crds").iterdir(), key=lambda path: "tenant" in path.name)
    assert capsys.readouterr().out == "---\n".join(path.read_text() for path in files)


def test_key_prints_a_new_key_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "--name", "laptop"]) == 0
    first = capsys.readouterr().out
    assert main(["key", "--name", "laptop"]) == 0
    second = capsys.readouterr().out
    lines = first.splitlines()
    new = lines[1].removeprefix("# ")
    assert new.startswith("sk-llmfleet-")
    assert len(new) > 40
    assert yaml.safe_load(first) == {"laptop": key_hash(new)}
    assert first != second


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "usage: llmfleet" in capsys.readouterr().err


def test_the_operator_does_not_load_the_gateways_kubernetes_client() -> None:
    """kopf imports kubernetes_asyncio whenever it is installed (it is here, for the
    gateway); `llmfleet operator` runs without it (40 MiB)."""
    code = (
        "import sys\nfrom llmfleet.cli import main\n"
        "try:\n    main(['operator', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sys.modules.get('kubernetes_asyncio') is not None, 'kopf' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split()[-2:] == ["False", "True"]
    assert importlib.util.find_spec("kubernetes_asyncio") is not None  # installed all along
