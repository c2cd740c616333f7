"""vLLM V1 Prometheus metrics for the simulated engine (names, types, labels, buckets).

Who calls it: :mod:`.server` feeds it every :class:`.requests.StepResult` and calls
:meth:`EngineMetrics.refresh` before each scrape. The fleet simulator
(:mod:`llmfleet_fleetsim`) does not need it (it reads the engine directly).

The families, their types, label names and histogram buckets are those of vLLM 0.32's
``/metrics`` (checked by ``tests/parity``). Counters are declared without ``_total``:
prometheus-client appends it, as in vLLM. Each instance owns its registry: no global
state, several engines may live in one process (tests, the fleet simulator).
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from llmfleet_contract.metrics import (
    ENGINE,
    KV_CACHE_USAGE,
    MODEL_NAME,
    RUNNING,
    TIME_TO_FIRST_TOKEN,
    WAITING,
)

from .engine import Engine
from .requests import FinishedRequest, StepResult

REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


def request_tokens_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series capped at ``max_model_len`` (token-count histograms)."""
    buckets: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > max_model_len:
                return buckets
            buckets.append(float(value))
        scale *= 10


class EngineMetrics:
    """The Prometheus view of one :class:`.engine.Engine`."""

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        *,
        engine_index: str = "0",
        process_metrics: bool = True,
        cache_info: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR):
                self.registry.register(collector)
        labels = {ENGINE: engine_index, MODEL_NAME: model_name}
        names = list(labels)
        reg = self.registry

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, names + list(extra), registry=reg)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, names + list(extra), registry=reg)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | list[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=reg).labels(**labels)

        self._running = gauge(RUNNING, "Requests in model execution batches.")
        self._waiting = gauge(WAITING, "Requests waiting to be processed.")
        self._waiting_by_reason = gauge(
            "vllm:num_requests_waiting_by_reason", "Waiting requests by reason.", ("reason",)
        )
        sleep = gauge("vllm:engine_sleep_state", "Engine sleep state.", ("sleep_state",))
        for state, value in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):
            sleep.labels(**labels, sleep_state=state).set(value)
        self._kv = gauge(KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage.")

        plain = {
            "estimated_flops_per_gpu": "Estimated floating point operations per GPU.",
            "estimated_read_bytes_per_gpu": "Estimated bytes read from memory per GPU.",
            "estimated_write_bytes_per_gpu": "Estimated bytes written to memory per GPU.",
            "prefix_cache_queries": "Prefix cache queries, in queried tokens.",
            "prefix_cache_hits": "Prefix cache hits, in cached tokens.",
            "external_prefix_cache_queries": "External prefix cache queries, in tokens.",
            "external_prefix_cache_hits": "External prefix cache hits, in tokens.",
            "mm_cache_queries": "Multi-modal cache queries, in items.",
            "mm_cache_hits": "Multi-modal cache hits, in items.",
            "num_preemptions": "Cumulative number of preemptions from the engine.",
            "prompt_tokens": "Number of prefill tokens processed.",
            "prompt_tokens_cached": "Number of cached prompt tokens (local + external).",
            "generation_tokens": "Number of generation tokens processed.",
        }
        self._counters = {k: counter(f"vllm:{k}", doc).labels(**labels) for k, doc in plain.items()}
        by_source = counter("vllm:prompt_tokens_by_source", "Prompt tokens by source.", ("source",))
        self._by_source = {
            s: by_source.labels(**labels, source=s)
            for s in ("local_compute", "local_cache_hit", "external_kv_transfer")
        }
        cached_by = counter(
            "vllm:prompt_tokens_cached_by_source", "Prefix-cache hit tokens by tier.", ("source",)
        )
        self._cached_by_source = {
            s: cached_by.labels(**labels, source=s)
            for s in ("device", "host", "p2p", "disk", "external_unspecified")
        }
        success = counter(
            "vllm:request_success", "Successfully processed requests.", ("finished_reason",)
        )
        self._success = {r: success.labels(**labels, finished_reason=r) for r in FINISHED_REASONS}
        rejections = Counter(
            "vllm:admission_rejections",
            "Admission attempts rejected by a queue limit, by reason.",
            ["model_name", "reason"],
            registry=reg,
        )
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.labels(model_name=model_name, reason=reason)

        tokens = request_tokens_buckets(engine.profile.max_model_len)
        self._h_prompt = histogram(
            "vllm:request_prompt_tokens", "Prefill tokens per request.", tokens
        )
        self._h_generation = histogram(
            "vllm:request_generation_tokens", "Generation tokens per request.", tokens
        )
        self._h_iteration = histogram(
            "vllm:iteration_tokens_total", "Tokens per engine step.", ITERATION_TOKENS_BUCKETS
        )
        self._h_max_generation = histogram(
            "vllm:request_max_num_generation_tokens", "Max generation tokens per request.", tokens
        )
        self._h_n = histogram("vllm:request_params_n", "The n request parameter.", PARAMS_N_BUCKETS)
        self._h_max_tokens = histogram(
            "vllm:request_params_max_tokens", "The max_tokens request parameter.", tokens
        )
        self._h_ttft = histogram(TIME_TO_FIRST_TOKEN, "Time to first token.", TTFT_BUCKETS)
        self._h_itl = histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", ITL_BUCKETS
        )
        self._h_tpot = histogram(
            "vllm:request_time_per_output_token_seconds", "Time per output token.", ITL_BUCKETS
        )
        latency = REQUEST_LATENCY_BUCKETS
        self._h_e2e = histogram("vllm:e2e_request_latency_seconds", "End-to-end latency.", latency)
        self._h_queue = histogram("vllm:request_queue_time_seconds", "Time in WAITING.", latency)
        self._h_inference = histogram(
            "vllm:request_inference_time_seconds", "Time RUNNING.", latency
        )
        self._h_prefill = histogram("vllm:request_prefill_time_seconds", "Prefill phase.", latency)
        self._h_decode = histogram("vllm:request_decode_time_seconds", "Decode phase.", latency)
        self._h_preemptions = histogram(
            "vllm:request_num_preemptions", "Preemptions per request.", PREEMPTIONS_BUCKETS
        )
        self._h_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens", "New KV tokens computed in prefill.", tokens
        )
        info = cache_info or cache_config_labels(engine)
        Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [ENGINE, *sorted(info)],
            registry=reg,
        ).labels(engine=engine_index, **info).set(1)
        self._labels = labels
        self._seen = dict.fromkeys(
            (
                "prompt_tokens",
                "prompt_tokens_cached",
                "generation_tokens",
                "prefix_cache_queries",
                "prefix_cache_hits",
                "preemptions",
            ),
            0,
        )
        self.refresh()

    def refresh(self) -> None:
        """Copy the engine's gauges and counter totals into the registry (before a scrape)."""
        engine = self.engine
        self._running.labels(**self._labels).set(engine.num_running)
        self._waiting.labels(**self._labels).set(engine.num_waiting)
        self._waiting_by_reason.labels(**self._labels, reason="capacity").set(engine.num_waiting)
        self._waiting_by_reason.labels(**self._labels, reason="deferred").set(0)
        self._kv.labels(**self._labels).set(engine.kv_usage())
        c = engine.counters
        totals = {
            "prompt_tokens": c.prompt_tokens,
            "prompt_tokens_cached": c.prompt_tokens_cached,
            "generation_tokens": c.generation_tokens,
            "prefix_cache_queries": c.prefix_cache_queries,
            "prefix_cache_hits": c.prefix_cache_hits,
            "preemptions": c.preemptions,
        }
        delta = {k: v - self._seen[k] for k, v in totals.items()}
        self._seen = totals
        self._counters["prompt_tokens"].inc(delta["prompt_tokens"])
        self._counters["prompt_tokens_cached"].inc(delta["prompt_tokens_cached"])
        self._counters["generation_tokens"].inc(delta["generation_tokens"])
        self._counters["prefix_cache_queries"].inc(delta["prefix_cache_queries"])
        self._counters["prefix_cache_hits"].inc(delta["prefix_cache_hits"])
        self._counters["num_preemptions"].inc(delta["preemptions"])
        self._by_source["local_cache_hit"].inc(delta["prompt_tokens_cached"])
        self._by_source["local_compute"].inc(delta["prompt_tokens"] - delta["prompt_tokens_cached"])
        self._cached_by_source["device"].inc(delta["prompt_tokens_cached"])

    def observe_step(self, result: StepResult) -> None:
        """Record one step: tokens per step, first-token and inter-token latencies, finished
        requests."""
        self._h_iteration.observe(result.num_tokens)
        itl = self._h_itl
        for token in result.tokens:
            if token.since_previous is not None:
                itl.observe(token.since_previous)
            if token.since_arrival is not None:  # vLLM counts TTFT at the first token
                self._h_ttft.observe(token.since_arrival)
        for finished in result.finished:
            self.observe_finished(finished)

    def observe_finished(self, done: FinishedRequest) -> None:
        """Record the per-request histograms of a request that left the engine."""
        self._success[done.finish_reason].inc()
        self._h_prompt.observe(done.prompt_tokens)
        self._h_generation.observe(done.output_tokens)
        self._h_max_generation.observe(done.max_tokens)
        self._h_max_tokens.observe(done.max_tokens)
        self._h_n.observe(1)
        self._h_preemptions.observe(done.preemptions)
        self._h_e2e.observe(done.finished - done.arrival)
        if done.first_scheduled is None:
            return
        self._h_queue.observe(done.first_scheduled - done.arrival)
        self._h_kv_computed.observe(done.prompt_tokens - done.cached_tokens)
        if done.first_token is None or done.last_token is None:
            return
        self._h_prefill.observe(done.first_token - done.first_scheduled)
        self._h_decode.observe(done.last_token - done.first_token)
        self._h_inference.observe(done.last_token - done.first_scheduled)
        if done.output_tokens > 1:
            self._h_tpot.observe((done.last_token - done.first_token) / (done.output_tokens - 1))


def cache_config_labels(engine: Engine) -> dict[str, str]:
    """The label set of ``vllm:cache_config_info`` (vLLM 0.32's CacheConfig fields)."""
    p = engine.profile
    tokens = p.num_gpu_blocks * p.block_size
    return {
        "_block_size_resolved": "True",
        "block_size": str(p.block_size),
        "cache_dtype": "auto",
        "cache_hit_alignment_tokens": "None",
        "effective_attention_block_size": str(p.block_size),
        "enable_mamba_shared_prefix_checkpoint": "False",
        "enable_prefix_caching": str(engine.pool.enable_prefix_caching),
        "gpu_memory_utilization": str(p.gpu_memory_utilization),
        "hash_block_size": "None",
        "is_attention_free": "False",
        "kv_cache_dtype_skip_layers": "[]",
        "kv_cache_layout": "None",
        "kv_cache_max_concurrency": str(round(tokens / p.max_model_len, 2)),
        "kv_cache_memory_bytes": "None",
        "kv_cache_size_tokens": str(tokens),
        "kv_offloading_backend": "native",
        "kv_offloading_size": "None",
        "kv_sharing_fast_prefill": "False",
        "mamba_block_size": "None",
        "mamba_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "mamba_page_size_padded": "None",
        "mamba_ssm_cache_dtype": "float32",
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(p.num_gpu_blocks),
        "num_gpu_blocks_override": "None",
        "prefix_cache_retention_interval": "0",
        "prefix_caching_hash_algo": "sha256",
        "prefix_match_unit": "None",
        "replayssm_buffer_len": "16",
        "skip_page_size_padded": "None",
        "sliding_window": "None",
        "swa_bounded_replay": "True",
        "use_kda_recoverssm": "False",
        "use_replayssm": "False",
        "user_specified_block_size": "False",
    }
