"""The proxies the gateway bench compares, and how each is started on the proxy core.

Called by ``run.py``. Every contender gets the same engine URLs and serves model ``m`` (the
alias contender also ``m-large``, the same engines); its command line is run under
``taskset -c 0``. ``direct`` has no process: the load generator takes the engines' URLs in
turn. Logging is each proxy's default, written to a file, except
LiteLLM's extras (telemetry, spend and message logs), which the bench turns off.

The tenants contenders run our gateway with ``--tenants`` (:func:`tenants_manifest`: four
tenants, each with one key and limits the bench never reaches), and the load sends their
keys in turn; the other contenders get no key, as none checks one.

The feature contenders (:data:`FEATURES`) are the tenants one with one feature more each: a
model alias, the response cache (every request a hit, or every one a miss) and the PII
guardrail. Each is compared with ``llmfleet-tenants`` measured in the same run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmfleet_contract.api import key_hash

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "llmfleet"
ROUTER = CACHE / "bench-venv" / "bin" / "vllm-router"
LITELLM = CACHE / "litellm-venv" / "bin" / "litellm"
MODEL = "m"
LARGE = "m-large"
"""The alias's second tier: a second ``--model`` over the same engines."""
ALIAS = "chat"
"""The alias the load names in the alias contender: tiers ``[m, m-large]``."""
CACHE_TTL_S = 3600
CACHE_MIB = "1"
"""The response cache's bound for the cache contenders: small enough that the misses fill it
within a second, so each stored answer evicts one (a long-running gateway's steady state)."""
TENANTS = 4
TENANT_KEYS = tuple(f"bench-key-{i}" for i in range(TENANTS))
"""One API key per tenant (``bench-N``); the load takes them in turn."""
TENANT_LIMITS = {
    "requestsPerMinute": 10_000_000,
    "tokensPerMinute": 1_000_000_000,
    "concurrentRequests": 100_000,
    "tokensPerDay": 100_000_000_000,
}
"""Every limit an LLMTenant has, far above what the bench sends: evaluated on every
request, never binding."""

Command = Callable[[int, list[str], Path], list[str]]
"""A contender's command line from its port, the engines' URLs and a scratch folder."""


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    command: Command | None
    ready_path: str = "/health"
    environment: tuple[tuple[str, str], ...] = ()
    keys: tuple[str, ...] = ()
    """API keys the load sends (``Authorization: Bearer``), taken in turn; none when empty."""
    redis: bool = False
    """Give it a Redis (``--redis URL`` appended), started on the load core beside the
    engines: it stands for a separate service."""
    model: str = MODEL
    """The model the load's bodies name."""
    deterministic: bool = False
    """The load's bodies carry ``temperature: 0`` (a response cache may keep their answers)."""
    unique: bool = False
    """Every body carries its own ``seed``, counting up through the run: none repeats."""


def _ours(*extra: str) -> Command:
    def command(port: int, urls: list[str], _: Path) -> list[str]:
        gateway = [str(REPO / ".venv" / "bin" / "llmfleet"), "gateway", "--port", str(port)]
        return [*gateway, "--model", f"{MODEL}={','.join(urls)}", *extra]

    return command


def tenants_manifest(models: tuple[str, ...] = (MODEL,), cache_ttl_s: int | None = None) -> str:
    """The ``--tenants`` file: per tenant, an LLMTenant allowed ``models`` (with ``--model``,
    a model's LLMDeployment is its name) with :data:`TENANT_LIMITS` and, with
    ``cache_ttl_s``, a response cache; and its keys' Secret."""
    limits = "".join(f"    {name}: {value}\n" for name, value in TENANT_LIMITS.items())
    cache = "" if cache_ttl_s is None else f"  responseCache: {{ttlSeconds: {cache_ttl_s}}}\n"
    return "---\n".join(
        "apiVersion: v1\n"
        "kind: Secret\n"
        f"metadata: {{name: bench-{i}-keys}}\n"
        f"stringData: {{load: '{key_hash(key)}'}}\n"
        "---\n"
        "apiVersion: llmfleet.io/v1alpha1\n"
        "kind: LLMTenant\n"
        f"metadata: {{name: bench-{i}}}\n"
        "spec:\n"
        f"  apiKeys: {{name: bench-{i}-keys}}\n"
        f"  models: [{', '.join(models)}]\n"
        f"  limits:\n{limits}{cache}"
        for i, key in enumerate(TENANT_KEYS)
    )


def _ours_with_tenants(*extra: str, cache_ttl_s: int | None = None) -> Command:
    def command(port: int, urls: list[str], scratch: Path) -> list[str]:
        manifest = scratch / "tenants.yaml"
        manifest.write_text(tenants_manifest(cache_ttl_s=cache_ttl_s))
        return _ours("--tenants", str(manifest), *extra)(port, urls, scratch)

    return command


def _ours_with_alias(port: int, urls: list[str], scratch: Path) -> list[str]:
    """Tenants allowed both tiers, and alias ``chat``: ``m`` first, then ``m-large`` (the same
    engines under a second name); its escalation rules left at their defaults."""
    manifest, aliases = scratch / "tenants.yaml", scratch / "aliases.yaml"
    manifest.write_text(tenants_manifest(models=(MODEL, LARGE)))
    aliases.write_text(f"aliases:\n- name: {ALIAS}\n  tiers: [{MODEL}, {LARGE}]\n")
    large = ["--model", f"{LARGE}={','.join(urls)}"]
    extra = ["--tenants", str(manifest), *large, "--aliases", str(aliases)]
    return _ours(*extra)(port, urls, scratch)


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


FEATURES = (
    Contender(
        "llmfleet-alias",
        f"model alias on ({ALIAS}: {MODEL}, then {LARGE})",
        _ours_with_alias,
        keys=TENANT_KEYS,
        model=ALIAS,
    ),
    Contender(
        "llmfleet-cache-hit",
        "response cache on, every request a hit",
        _ours_with_tenants("--response-cache-mib", CACHE_MIB, cache_ttl_s=CACHE_TTL_S),
        keys=TENANT_KEYS,
        deterministic=True,
    ),
    Contender(
        "llmfleet-cache-miss",
        "response cache on, every request a miss (kept)",
        _ours_with_tenants("--response-cache-mib", CACHE_MIB, cache_ttl_s=CACHE_TTL_S),
        keys=TENANT_KEYS,
        deterministic=True,
        unique=True,
    ),
    Contender(
        "llmfleet-pii",
        "PII guardrail on",
        _ours_with_tenants("--guardrail", "pii"),
        keys=TENANT_KEYS,
    ),
    Contender(
        "llmfleet-tenants-again",
        "none: the baseline again, after the features",
        _ours_with_tenants(),
        keys=TENANT_KEYS,
    ),
)
"""Our gateway with tenants and limits on, as ``llmfleet-tenants``, and one feature more: each
is compared with that one (the baseline) in the same run, measured just before them. The
last measures the baseline again: how far two runs of the same gateway differ here."""

CONTENDERS = (
    Contender("direct", "direct (no proxy)", None),
    Contender("llmfleet", "llmfleet gateway", _ours()),
    Contender(
        "llmfleet-quiet", "llmfleet gateway, access log off", _ours("--log-level", "WARNING")
    ),
    Contender(
        "llmfleet-tenants",
        "llmfleet gateway, tenants and limits on",
        _ours_with_tenants(),
        keys=TENANT_KEYS,
    ),
    *FEATURES,
    Contender(
        "llmfleet-tenants-redis",
        "llmfleet gateway, tenants and limits on, with Redis",
        _ours_with_tenants(),
        keys=TENANT_KEYS,
        redis=True,
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
