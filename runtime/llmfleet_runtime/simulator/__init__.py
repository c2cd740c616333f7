"""The engine simulator: a vLLM-faithful model of one engine and its OpenAI API.

Layers (each module's docstring says who calls it):

* pure core, no I/O and no clock: :mod:`.calibrate` (fit latency tables from a CSV),
  :mod:`.profiles`, :mod:`.perf` (step latency), :mod:`.kvcache`, :mod:`.engine`
  (continuous batching, KV budget, preemption, prefix cache), :mod:`.requests`,
  :mod:`.tokens` (the stand-in tokenizer);
* :mod:`.metrics`: the vLLM V1 Prometheus families (prometheus-client, no HTTP);
* the shell: :mod:`.driver` (asyncio clock), :mod:`.server` (aiohttp, speaking the OpenAI
  wire shapes of :mod:`llmfleet_contract.openai`), :mod:`.cli`.

The fleet simulator (:mod:`llmfleet_fleetsim`) imports :class:`Engine`, :class:`Request` and
the profiles only.
"""

from .engine import Engine
from .profiles import CALIBRATED, FAST, PROFILES, Profile, get_profile
from .requests import EngineCounters, FinishedRequest, Request, StepResult, TokenOutput

__all__ = [
    "CALIBRATED",
    "FAST",
    "PROFILES",
    "Engine",
    "EngineCounters",
    "FinishedRequest",
    "Profile",
    "Request",
    "StepResult",
    "TokenOutput",
    "get_profile",
]
