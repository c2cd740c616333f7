"""The ``llmfleet`` command: one entry point, subcommands imported only when used.

Each subcommand is a ``main(argv) -> exit code`` in its own module, so ``llmfleet
validate`` in a CI image needs neither kopf nor aiohttp, and the engine pods' launcher
does not import the operator.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("llmfleet_contract.commands:crds", "print or write the generated CRD YAML"),
    "validate": ("llmfleet_contract.commands:validate", "check llmfleet manifests offline"),
    "key": ("llmfleet_contract.commands:key", "make a tenant API key and its hash"),
    "operator": ("llmfleet_operator.operator_main:main", "run the LLMDeployment operator"),
    "launch": ("llmfleet_runtime.launcher.cli:main", "start this pod's vLLM engine and drain it"),
    "engine-sim": ("llmfleet_runtime.simulator.cli:main", "run the vLLM-faithful engine simulator"),
    "gateway": ("llmfleet_gateway.cli:main", "run the OpenAI gateway in front of the replicas"),
    "simulate": ("llmfleet_fleetsim.cli:main", "replay a trace through a simulated fleet"),
    "usage": ("llmfleet_operator.usage:main", "what each tenant used and cost, from Prometheus"),
}

UNUSED: dict[str, tuple[str, ...]] = {
    # kopf imports kubernetes_asyncio's models whenever the package is installed (the
    # gateway's extra brings it): 40 MiB of the operator's memory for a client it never uses.
    "operator": ("kubernetes_asyncio",),
}
"""Installed packages a subcommand must not load: importing them raises ImportError."""


def usage() -> str:
    lines = ["usage: llmfleet <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `llmfleet <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"llmfleet: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    for unused in UNUSED.get(name, ()):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    module, function = SUBCOMMANDS[name][0].split(":")
    entry = getattr(importlib.import_module(module), function)
    code: int = entry(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
