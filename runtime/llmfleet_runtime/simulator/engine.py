"""A deterministic step model of one vLLM V1 engine: continuous batching over a KV budget.

Who calls it: :mod:`.server` (in real time, scaled) and the fleet simulator
(:mod:`llmfleet_fleetsim`, as fast as it can). No clock, no I/O, no randomness: time is
the ``now`` passed in, and the same calls give the same results.

How a step is scheduled (after vLLM V1's scheduler, FCFS policy):

1. Running requests first, in arrival order: one decode token each, or the next chunk of
   a prompt still being prefilled, within ``max_num_batched_tokens``. A request that needs
   a KV block when none is free preempts the most recently admitted running request
   (recompute: its blocks are freed and it goes back to the head of the queue).
2. Then, if nothing was preempted, waiting requests are admitted while a slot
   (``max_num_seqs``), token budget and KV blocks remain. A prompt's leading blocks that
   are in the prefix cache are not computed again.
3. The step lasts :func:`.perf.step_seconds` x ``slowdown``. When it ends, every request
   whose known tokens are all computed samples one new token.

A request waits in ``waiting`` (reason ``capacity``) until admitted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .kvcache import BlockPool
from .perf import step_seconds
from .profiles import Profile
from .requests import EngineCounters, FinishedRequest, Request, StepResult, TokenOutput


@dataclass
class _Seq:
    """Mutable state of one admitted or waiting request."""

    request: Request
    arrival: float
    num_tokens: int
    num_computed: int = 0
    num_output: int = 0
    anonymous_blocks: int = 0
    cached: list[int] = field(default_factory=list)
    registered_upto: int = 0
    cached_tokens: int = 0
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    preemptions: int = 0
    done: bool = False

    @property
    def blocks_held(self) -> int:
        return self.anonymous_blocks + len(self.cached)


def _blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


class Engine:
    """One engine replica driven by :meth:`add`, :meth:`abort` and :meth:`advance`."""

    def __init__(
        self,
        profile: Profile,
        *,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool = True,
    ) -> None:
        if profile.num_gpu_blocks * profile.block_size < profile.max_model_len:
            raise ValueError(
                f"KV cache of {profile.num_gpu_blocks} blocks x {profile.block_size} tokens "
                f"cannot hold one sequence of max_model_len={profile.max_model_len}"
            )
        self.profile = profile
        self.enable_chunked_prefill = enable_chunked_prefill
        self.pool = BlockPool(profile.num_gpu_blocks, enable_prefix_caching=enable_prefix_caching)
        self.counters = EngineCounters()
        self.slowdown = 1.0
        """Multiplies every step's duration (the ``slow`` fault); takes effect next step."""
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self._by_id: dict[str, _Seq] = {}
        self._step: list[tuple[_Seq, int]] = []
        self._step_start = 0.0
        self._step_end: float | None = None

    # -- inputs ---------------------------------------------------------------

    def add(self, request: Request, now: float) -> None:
        """Queue ``request`` at time ``now``.

        An idle engine starts its next step on the next :meth:`advance` call, so requests
        added at the same instant are batched together; call ``advance(now)`` after adding.
        """
        if request.request_id in self._by_id:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        total = request.prompt_tokens + request.max_tokens
        if request.prompt_tokens < 1 or request.max_tokens < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        if total > self.profile.max_model_len:
            raise ValueError(
                f"prompt ({request.prompt_tokens}) + max_tokens ({request.max_tokens}) "
                f"exceeds max_model_len {self.profile.max_model_len}"
            )
        seq = _Seq(request=request, arrival=now, num_tokens=request.prompt_tokens)
        self._by_id[request.request_id] = seq
        self.waiting.append(seq)

    def abort(self, request_id: str, now: float) -> FinishedRequest | None:
        """Drop a request (client went away); its blocks are freed now."""
        seq = self._by_id.get(request_id)
        if seq is None or seq.done:
            return None
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        return self._finish(seq, "abort", now)

    # -- time -----------------------------------------------------------------

    def next_event_time(self) -> float | None:
        """When the step in progress ends, or None when the engine is idle."""
        return self._step_end

    def advance(self, now: float) -> list[StepResult]:
        """Complete every step that ends at or before ``now``, in order; start the next."""
        results: list[StepResult] = []
        while self._step_end is not None and self._step_end <= now:
            end = self._step_end
            results.append(self._complete_step(end))
            self._start_step(end)
        if self._step_end is None and self.waiting:
            self._start_step(now)
        return results

    # -- views ----------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def kv_usage(self) -> float:
        """Fraction of KV blocks held by requests (``vllm:kv_cache_usage_perc``)."""
        return self.pool.usage()

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- scheduling -----------------------------------------------------------

    def _start_step(self, now: float) -> None:
        step, preempted = self._schedule(now)
        self._step = step
        if not step:
            self._step_end = None
            return
        prefill_tokens = prefill_seqs = decode_seqs = 0
        for seq, n in step:
            if seq.num_output > 0 and seq.num_tokens - seq.num_computed == 1:
                decode_seqs += 1
            else:
                prefill_tokens += n
                prefill_seqs += 1
        duration = step_seconds(self.profile, prefill_tokens, prefill_seqs, decode_seqs)
        self._step_start = now
        self._step_end = now + duration * self.slowdown
        self.counters.preemptions += preempted

    def _schedule(self, now: float) -> tuple[list[tuple[_Seq, int]], int]:
        budget = self.profile.max_num_batched_tokens
        block_size = self.profile.block_size
        step: list[tuple[_Seq, int]] = []
        preempted = 0
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed, budget)
            need = _blocks_for(seq.num_computed + n, block_size) - seq.blocks_held
            while need > self.pool.free_blocks() and self.running[-1] is not seq:
                self._preempt(self.running.pop())
                preempted += 1
            if need > self.pool.free_blocks():
                self._preempt(self.running.pop())
                preempted += 1
                break
            self.pool.allocate(need)
            seq.anonymous_blocks += need
            step.append((seq, n))
            budget -= n
            i += 1
        if preempted:
            return step, preempted
        while self.waiting and budget > 0 and len(self.running) < self.profile.max_num_seqs:
            seq = self.waiting[0]
            hashes = seq.request.block_hashes
            hit_blocks = 0
            if seq.num_computed == 0:
                hit_blocks = min(self.pool.match_prefix(hashes), (seq.num_tokens - 1) // block_size)
            start = hit_blocks * block_size
            n = seq.num_tokens - start
            if n > budget:
                if not self.enable_chunked_prefill:
                    break
                n = budget
            need = _blocks_for(start + n, block_size) - hit_blocks
            reuse = hashes[:hit_blocks]
            if need > self.pool.free_blocks() - self.pool.evictable_among(reuse):
                break
            self.waiting.popleft()
            self.pool.acquire_cached(reuse)
            self.pool.allocate(need)
            seq.cached.extend(reuse)
            seq.registered_upto = hit_blocks
            seq.anonymous_blocks += need
            seq.num_computed = start
            if seq.first_scheduled is None:
                seq.first_scheduled = now
                seq.cached_tokens = start
                self.counters.prefix_cache_queries += seq.request.prompt_tokens
                self.counters.prefix_cache_hits += start
            self.running.append(seq)
            step.append((seq, n))
            budget -= n
        return step, preempted

    def _preempt(self, seq: _Seq) -> None:
        self.pool.release(seq.anonymous_blocks, seq.cached)
        seq.anonymous_blocks = 0
        seq.cached = []
        seq.registered_upto = 0
        seq.num_computed = 0
        seq.preemptions += 1
        self.waiting.appendleft(seq)

    def _complete_step(self, end: float) -> StepResult:
        tokens: list[TokenOutput] = []
        finished: list[FinishedRequest] = []
        computed = 0
        block_size = self.profile.block_size
        for seq, n in self._step:
            if seq.done:
                continue
            computed += n
            seq.num_computed += n
            hashes = seq.request.block_hashes
            full = min(seq.num_computed, seq.request.prompt_tokens) // block_size
            for idx in range(seq.registered_upto, min(full, len(hashes))):
                if self.pool.register(hashes[idx]):
                    seq.anonymous_blocks -= 1
                    seq.cached.append(hashes[idx])
            seq.registered_upto = max(seq.registered_upto, min(full, len(hashes)))
            if seq.num_computed < seq.num_tokens:
                continue
            previous = seq.last_token
            seq.num_tokens += 1
            seq.num_output += 1
            seq.last_token = end
            if seq.first_token is None:
                seq.first_token = end
                self.counters.prompt_tokens += seq.request.prompt_tokens
                self.counters.prompt_tokens_cached += seq.cached_tokens
            self.counters.generation_tokens += 1
            reason = self._finish_reason(seq)
            since = None if previous is None else end - previous
            ttft = end - seq.arrival if previous is None else None
            tokens.append(
                TokenOutput(seq.request.request_id, seq.num_output - 1, end, since, reason, ttft)
            )
            if reason is not None:
                self.running.remove(seq)
                finished.append(self._finish(seq, reason, end))
        self.counters.steps += 1
        return StepResult(
            start=self._step_start, end=end, tokens=tokens, finished=finished, num_tokens=computed
        )

    @staticmethod
    def _finish_reason(seq: _Seq) -> str | None:
        request = seq.request
        if request.stop_after is not None and seq.num_output >= request.stop_after:
            return "stop"
        if seq.num_output >= request.max_tokens:
            return "length"
        return None

    def _finish(self, seq: _Seq, reason: str, now: float) -> FinishedRequest:
        seq.done = True
        self.pool.release(seq.anonymous_blocks, seq.cached)
        seq.anonymous_blocks = 0
        seq.cached = []
        del self._by_id[seq.request.request_id]
        self.counters.finished[reason] = self.counters.finished.get(reason, 0) + 1
        return FinishedRequest(
            request_id=seq.request.request_id,
            finish_reason=reason,
            prompt_tokens=seq.request.prompt_tokens,
            output_tokens=seq.num_output,
            max_tokens=seq.request.max_tokens,
            cached_tokens=seq.cached_tokens,
            preemptions=seq.preemptions,
            arrival=seq.arrival,
            first_scheduled=seq.first_scheduled,
            first_token=seq.first_token,
            last_token=seq.last_token,
            finished=now,
        )
