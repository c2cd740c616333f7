"""The owned-flag matcher against vLLM 0.32's own ``vllm serve`` parser.

Cases: every option string vLLM's parser knows is refused in ``engine.extraArgs`` exactly when
it sets a value the operator owns (its ``dest`` is one an owned flag sets), so a new alias or
negation in vLLM fails here rather than slipping past the API; no other option is refused,
and the parser takes abbreviations (why the matcher refuses any prefix of an owned flag).
"""

from __future__ import annotations

import json
import subprocess

from llmfleet_contract.engine import OWNED_FLAGS, owned_flags_in

DUMP = """
import json
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
options = {o: a.dest for a in parser._actions for o in a.option_strings}
print(json.dumps({"abbrev": parser.allow_abbrev, "options": options}))
"""


def test_refused_exactly_when_vllm_would_set_an_owned_value(vllm_python: str) -> None:
    done = subprocess.run(
        [vllm_python, "-c", DUMP], capture_output=True, text=True, check=True, timeout=300
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    options: dict[str, str] = found["options"]
    assert found["abbrev"] is True
    assert {f"--{flag}" for flag in OWNED_FLAGS} <= options.keys()
    owned = {options[f"--{flag}"] for flag in OWNED_FLAGS}
    wrong = {
        option: dest
        for option, dest in options.items()
        if option != "-h" and (dest in owned) != bool(owned_flags_in([f"{option}=1"]))
    }
    assert wrong == {}
