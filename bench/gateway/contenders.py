"""The proxies the gateway bench compares, and how each is started on the proxy core.

Called by ``run.py``. Every contender gets the same engine URLs and serves model ``m``; its
command line is run under ``taskset -c 0``. ``direct`` has no process: the load generator
takes the engines' URLs in turn. Logging is each proxy's default, written to a file, except
LiteLLM's extras (telemetry, spend and message logs), which the bench turns off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "llmfleet"
ROUTER = CACHE / "bench-venv" / "bin" / "vllm-router"
LITELLM = CACHE / "litellm-venv" / "bin" / "litellm"
MODEL = "m"

Command = Callable[[int, list[str], Path], list[str]]
"""A contender's command line from its port, the engines' URLs and a scratch folder."""


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    command: Command | None
    ready_path: str = "/health"
    environment: tuple[tuple[str, str], ...] = ()


def _ours(*extra: str) -> Command:
    def command(port: int, urls: list[str], _: Path) -> list[str]:
        gateway = [str(REPO / ".venv" / "bin" / "llmfleet"), "gateway", "--port", str(port)]
        return [*gateway, "--model", f"{MODEL}={','.join(urls)}", *extra]

    return command


def _router(policy: str) -> Command:
    def command(port: int, urls: list[str], _: Path) -> list[str]:
        listen = ["--host", "127.0.0.1", "--port", str(port)]
        return [str(ROUTER), *listen, "--policy", policy, "--worker-urls", *urls]

    return command


def _plain(policy: str) -> Command:
    def command(port: int, urls: list[str], _: Path) -> list[str]:
        script = str(Path(__file__).resolve().parent / "plain_proxy.py")
        return [sys.executable, script, "--port", str(port), "--policy", policy, *urls]

    return command


def litellm_config(urls: list[str]) -> str:
    """A LiteLLM proxy config: each engine a deployment of model ``m``, no database, no
    telemetry, no spend or message logs, and no key (as the other contenders: none checks
    one; LiteLLM refuses to start keyless unless told)."""
    deployments = "".join(
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{MODEL}\n"
        f"      api_base: {url}/v1\n"
        "      api_key: none\n"
        for url in urls
    )
    return (
        f"model_list:\n{deployments}"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
        "  turn_off_message_logging: true\n"
        "  drop_params: true\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
        "  disable_error_logs: true\n"
        "  store_model_in_db: false\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )


def _litellm(port: int, urls: list[str], scratch: Path) -> list[str]:
    config = scratch / "litellm.yaml"
    config.write_text(litellm_config(urls))
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    return [
        str(LITELLM),
        "--config",
        str(config),
        *listen,
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]


CONTENDERS = (
    Contender("direct", "direct (no proxy)", None),
    Contender("llmfleet", "llmfleet gateway", _ours()),
    Contender(
        "llmfleet-quiet", "llmfleet gateway, access log off", _ours("--log-level", "WARNING")
    ),
    Contender("vllm-router-cache_aware", "vllm-router cache_aware", _router("cache_aware")),
    Contender("vllm-router-round_robin", "vllm-router round_robin", _router("round_robin")),
    Contender("plain-round_robin", "plain aiohttp, round_robin", _plain("round_robin")),
    Contender("plain-least_load", "plain aiohttp, least_load", _plain("least_load")),
    Contender(
        "litellm",
        "LiteLLM proxy",
        _litellm,
        "/health/liveliness",
        (
            ("LITELLM_LOG", "ERROR"),
            ("LITELLM_TELEMETRY", "False"),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ),
    ),
)
