"""``llmfleet gateway`` flags -> GatewaySettings.

Cases: the routing flags reach RoutingSettings and the prefix index's time to live; their
defaults are the settings' own; the peer flags reach the settings; --watch-namespace repeats;
a bad value or a flag without the one it needs exits with 2 and names the problem.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet_gateway.cli import build_parser, main, settings_from_args
from llmfleet_gateway.routing import RoutingSettings
from llmfleet_gateway.server import GatewaySettings

MODEL = ["--model", "m=http://127.0.0.1:8001,http://127.0.0.1:8002"]


def test_routing_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(
        [
            *MODEL,
            "--prefill-tokens-per-s",
            "9000",
            "--typical-prompt-tokens",
            "12000",
            "--affinity-load-factor",
            "1.5",
            "--prefix-min-share",
            "0.5",
            "--prefix-ttl-seconds",
            "45",
        ]
    )
    settings = settings_from_args(args)
    assert settings.routing.prefill_tokens_per_s == 9000
    assert settings.routing.typical_prompt_tokens == 12000
    assert settings.routing.affinity_load_factor == 1.5
    assert settings.routing.prefix_min_share == 0.5
    assert settings.prefix_ttl_seconds == 45


def test_peer_flags_reach_the_settings(tmp_path: Path) -> None:
    key = tmp_path / "peer.key"
    key.write_text("s3cret\n")
    argv = [*MODEL, "--region", "a", "--peer", "b=http://10.0.0.2:8080/", "--peer-key-file"]
    settings = settings_from_args(build_parser().parse_args([*argv, str(key)]))
    assert (settings.region, dict(settings.peers), settings.peer_key) == (
        "a",
        {"b": "http://10.0.0.2:8080"},
        "s3cret",
    )


def test_an_objective_in_a_cluster_belongs_to_the_llmdeployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _exit_code(["--ttft-objective-seconds", "1"]) == 2
    assert "spec.serving.ttftObjectiveSeconds" in capsys.readouterr().err


def test_defaults_are_the_settings_own() -> None:
    settings = settings_from_args(build_parser().parse_args(MODEL))
    defaults = RoutingSettings()
    assert settings.routing.prefill_tokens_per_s == defaults.prefill_tokens_per_s
    assert settings.routing.typical_prompt_tokens == defaults.typical_prompt_tokens
    assert settings.routing.affinity_load_factor == defaults.affinity_load_factor
    assert settings.routing.prefix_min_share == defaults.prefix_min_share
    assert settings.prefix_ttl_seconds == GatewaySettings(models=()).prefix_ttl_seconds


def _exit_code(argv: list[str]) -> object:
    """``main``'s code, whether argparse exits (bad syntax) or main returns (bad value)."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--prefill-tokens-per-s", "0"], "must be positive"),
        (["--typical-prompt-tokens", "many"], "not a whole number"),
        (["--affinity-load-factor", "0.5"], "affinity_load_factor must be at least 1"),
        (["--engine-queue", "-1"], "must be at least 0"),
        (["--peer", "b=http://10.0.0.2:8080"], "--peer needs --region and --peer-key-file"),
        (["--peer", "b"], "expected NAME=http://HOST:PORT"),
        (["--peer-key-file", "/dev/null"], "--peer-key-file goes with --peer"),
        (
            ["--region", "a", "--peer", "a=http://10.0.0.2:8080"],
            "not this gateway's --region",
        ),
    ],
)
def test_bad_values_exit_with_2(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code([*MODEL, *flags]) == 2
    assert said in capsys.readouterr().err


def test_watched_namespaces_repeat() -> None:
    args = build_parser().parse_args(["--watch-namespace", "team-a", "--watch-namespace", "b"])
    cluster = settings_from_args(args).cluster
    assert cluster is not None
    assert cluster.namespaces == ("team-a", "b")
    everywhere = settings_from_args(build_parser().parse_args([])).cluster
    assert everywhere is not None
    assert everywhere.namespaces == ()
