"""``llmfleet simulate``: the table, ``--json`` (parses, has the keys), ``--plot`` (a PNG),
and bad arguments or inputs refused with a message and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfleet.cli import main as llmfleet
from llmfleet_fleetsim.cli import main
from tests.fleetsim.conftest import DEPLOYMENT_YAML

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    rows = "".join(f"{i * 0.25},64,8\n" for i in range(120))
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + rows)
    return path


def args(trace: Path, deployment: Path, *extra: str) -> list[str]:
    return [
        "--trace", str(trace), "--deployment", str(deployment), "--policy", "llmfleet",
        "--profile", "fast", "--startup-s", "10", "--slo-ttft-s", "0.5", "--slo-tpot-s", "0.05",
        "--capacity-rps", "20", *extra,
    ]  # fmt: skip


def test_table(trace_file: Path, deployment_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert llmfleet(["simulate", *args(trace_file, deployment_file)]) == 0
    out = capsys.readouterr().out
    assert "attainment" in out
    assert "oracle GPU-hours" in out


def test_json(trace_file: Path, deployment_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(trace_file, deployment_file, "--json", "--speed", "2", "--copies", "2")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attainment"] == 1.0
    assert data["settings"]["speed"] == 2
    assert data["settings"]["copies"] == 2
    assert data["settings"]["gpus_per_replica"] == 2
    assert {"gpu_hours", "oracle_gpu_hours", "direction_flips", "goodput_rps"} <= set(data)


def test_plot_writes_a_png(
    trace_file: Path, deployment_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "run.png"
    assert main(args(trace_file, deployment_file, "--plot", str(png))) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--policy", "vpa"], "invalid choice: 'vpa'"),
        (["--startup-s", "-1"], "must be zero or more"),
        (["--slo-ttft-s", "0"], "must be positive"),
        (["--speed", "fast"], "'fast' is not a number"),
        (["--copies", "0"], "must be at least 1"),
        (["--copies", "1.5"], "'1.5' is not a whole number"),
        (["--profile", "tpu"], "unknown 'tpu'"),
        (["--replicas", "3"], "only for --policy static"),
        (["--policy", "llm-d", "--target", "2"], "kvCacheThreshold"),
    ],
)
def test_bad_arguments_exit_2(
    trace_file: Path,
    deployment_file: Path,
    capsys: pytest.CaptureFixture[str],
    change: list[str],
    message: str,
) -> None:
    assert main(args(trace_file, deployment_file, *change)) == 2
    assert message in capsys.readouterr().err


def test_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--policy", "hpa"]) == 2
    assert "required" in capsys.readouterr().err


def test_bad_trace_names_the_line(
    tmp_path: Path, deployment_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,ten,5\n")
    assert main(args(bad, deployment_file)) == 2
    assert "line 3: prompt tokens 'ten'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Deployment\n", "no LLMDeployment"),
        ("a: [", "not YAML"),
        ("kind: LLMDeployment\napiVersion: llmfleet.io/v1alpha1\nmetadata: {name: x}\n"
         "spec: {}\n", "invalid LLMDeployment"),
    ],
)  # fmt: skip
def test_bad_deployment_exit_2(
    tmp_path: Path,
    trace_file: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    deployment = tmp_path / "d.yaml"
    deployment.write_text(text)
    assert main(args(trace_file, deployment)) == 2
    assert message in capsys.readouterr().err


def test_an_autoscaler_starts_warm_at_the_oracles_need_unless_cold(
    tmp_path: Path, deployment_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace that opens busy (60 requests/s of 1,024-token prompts, three replicas' worth
    at the 20 a second the arguments give the oracle): by default
    the policy starts with the three the oracle needs in its first minute; ``--cold`` at
    its minimum, one, and misses the SLO while the fleet catches up."""
    busy = tmp_path / "busy.csv"
    rows = "".join(f"{i / 60},1024,64\n" for i in range(60 * 90))
    busy.write_text("arrival_s,prompt_tokens,output_tokens\n" + rows)
    reports = {}
    for start in ("warm", "cold"):
        extra = ["--json", "--startup-s", "60"] + (["--cold"] if start == "cold" else [])
        assert main(args(busy, deployment_file, *extra)) == 0
        reports[start] = json.loads(capsys.readouterr().out)
    warm, cold = reports["warm"], reports["cold"]
    assert (warm["initial_replicas"], cold["initial_replicas"]) == (3, 1)
    assert warm["attainment"] > 0.99 > 0.5 > cold["attainment"]
    assert warm["ceiling"] == cold["ceiling"] == 1.0  # every request meets the SLO alone
    assert main(args(busy, deployment_file)) == 0
    table = capsys.readouterr().out
    assert "; ceiling 100.00% (each alone, idle replica)" in table
    assert "3 replica(s) ready" in table


def test_schedules_apply_by_the_start_time_and_are_refused_without_one(
    tmp_path: Path, trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A floor of 3 over Monday office hours: a replay that starts then keeps 3 replicas;
    one that starts on a Saturday does not; one without a start time is refused."""
    scheduled = tmp_path / "scheduled.yaml"
    scheduled.write_text(
        DEPLOYMENT_YAML
        + "    schedules:\n    - {name: office, days: [Mon], start: '08:00', end: '18:00',"
        " minReplicas: 3}\n"
    )
    peaks = {}
    for day, start in (
        ("monday", "2026-07-06T09:00:00+00:00"),
        ("saturday", "2026-07-04T09:00:00+00:00"),
    ):
        assert main(args(trace_file, scheduled, "--json", "--start-time", start)) == 0
        peaks[day] = json.loads(capsys.readouterr().out)["peak_replicas"]
    assert peaks == {"monday": 3, "saturday": 1}
    assert main(args(trace_file, scheduled)) == 2
    assert "spec.autoscaling.schedules: the llmfleet policy keeps them when the replay" in (
        capsys.readouterr().err
    )
    assert main(args(trace_file, scheduled, "--start-time", "2026-07-06T09:00:00")) == 2
    assert "give the time's offset" in capsys.readouterr().err
