"""The probes' view of the local backends: one batch-1 request, one all-at-once batch.
(The remote backend's view, over HTTP, is in kdeval.backends.openai.)

Both force exactly `output_len` new tokens per request (vLLM: ignore_eos, as its benchmarks do;
transformers: min_new_tokens = max_new_tokens), except `answer`: one request answered in full, to
EOS or a stop string within the task's budget, which is what an answer costs a model that thinks.

TTFT on vLLM comes from the engine's own request metrics (`RequestOutput.metrics.
first_token_latency`, present when the engine was started with stats logging on, which the
bench does); on an engine without them it is the time of a separate max_tokens=1 request. On
transformers a streamer notes when the first new token arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kdeval.efficiency.probes import Batch, Timing, timed

if TYPE_CHECKING:
    from kdeval.backends.hf import HFBackend
    from kdeval.backends.vllm import VLLMBackend

# vLLM's tqdm bar would write to stderr on every call
_QUIET: dict[str, Any] = {"use_tqdm": False}


class VLLMEngine:
    def __init__(self, backend: VLLMBackend, temperature: float = 0.0, seed: int = 0) -> None:
        self.llm: Any = backend.llm
        self.eos_ids = list(backend.codec.eos_ids)
        self.temperature, self.seed = temperature, seed
        self.ttft_method = "vLLM request metrics (first_token_latency)"

    def _params(self, output_len: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            temperature=self.temperature,
            top_p=1.0,
            # No per-request seed: it gives each request its own generator, which slows batched
            # sampling; with EOS ignored the cost does not depend on which tokens are drawn.
            max_tokens=output_len,
            ignore_eos=True,  # exactly output_len tokens; min_tokens would add a logits processor
            # kdeval decodes ids itself (PromptCodec), so the engine's detokenizer is not part
            # of the cost; compare with `vllm bench ... --disable-detokenize`.
            detokenize=False,
        )

    def _generate(self, prompts: list[list[int]], output_len: int) -> tuple[list[Any], float]:
        from vllm.inputs import TokensPrompt

        batch = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        outs, elapsed = timed(lambda: self.llm.generate(batch, self._params(output_len), **_QUIET))
        return list(outs), elapsed

    def one(self, prompt: list[int], output_len: int) -> Timing:
        (out,), e2e = self._generate([prompt], output_len)
        metrics = getattr(out, "metrics", None)
        ttft = getattr(metrics, "first_token_latency", None) or None  # 0.0 = not recorded
        if ttft is None:
            self.ttft_method = "time of a separate max_tokens=1 request"
        return Timing(e2e, ttft, len(out.outputs[0].token_ids))

    def first_token_s(self, prompt: list[int]) -> float:
        return self._generate([prompt], 1)[1]

    def answer(self, prompt: list[int], max_tokens: int, stop: Sequence[str]) -> Timing:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampled = self.temperature > 0
        params = SamplingParams(
            temperature=self.temperature,
            top_p=1.0,
            seed=self.seed if sampled else None,
            max_tokens=max_tokens,
            stop_token_ids=self.eos_ids,
            stop=list(stop) or None,
            detokenize=bool(stop),  # stop strings need the detokenizer, as in the quality run
        )
        token = TokensPrompt(prompt_token_ids=prompt)
        (out,), e2e = timed(lambda: self.llm.generate([token], params, **_QUIET))
        ttft = getattr(getattr(out, "metrics", None), "first_token_latency", None) or None
        return Timing(e2e, ttft, len(out.outputs[0].token_ids))

    def all(self, prompts: list[list[int]], output_len: int) -> Batch:
        outs, elapsed = self._generate(prompts, output_len)
        # Token counts from the engine's outputs, as `vllm bench throughput` counts them.
        n_out = [sum(len(o.token_ids) for o in r.outputs) for r in outs]
        n_prompt = sum(len(r.prompt_token_ids or ()) for r in outs)
        return Batch(elapsed, len(outs), n_prompt, sum(n_out), min(n_out), max(n_out))


class _FirstToken:
    """A transformers streamer that notes when the first generated token arrives.

    generate() calls put() once with the prompt, then once per new token."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_at: float | None = None

    def put(self, value: Any) -> None:
        import time

        self.calls += 1
        if self.calls == 2:
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


class HFEngine:
    ttft_method = "transformers streamer (time the first new token reaches the streamer)"

    def __init__(self, backend: HFBackend, temperature: float = 0.0, seed: int = 0) -> None:
        self.backend = backend
        self.temperature, self.seed = temperature, seed

    def _config(self, output_len: int, full: bool = True, stop: Sequence[str] = ()) -> Any:
        from transformers import GenerationConfig

        eos = list(self.backend.codec.eos_ids)
        sampled = self.temperature > 0
        return GenerationConfig(
            max_new_tokens=output_len,
            # EOS is masked until then: exactly output_len tokens (unless answering in full)
            min_new_tokens=output_len if full else None,
            stop_strings=list(stop) or None,
            do_sample=sampled,
            temperature=self.temperature if sampled else None,
            top_k=0 if sampled else None,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=eos[0],
        )

    def _generate(
        self, rows: list[list[int]], output_len: int, streamer: Any = None, config: Any = None
    ) -> Any:
        import torch

        be = self.backend
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), be.codec.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding, as the backend itself pads
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        if self.temperature > 0:
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = be.model.generate(
                input_ids=ids.to(be.device),
                attention_mask=mask.to(be.device),
                generation_config=config or self._config(output_len),
                streamer=streamer,
                # stop strings need the tokenizer (full answers only; the probes have none)
                tokenizer=be.codec.tokenizer if config is not None and config.stop_strings else None,
            )
        if str(be.device).startswith("cuda"):
            torch.cuda.synchronize()  # the clock stops when the device is done, not when queued
        return out[:, width:]

    def one(self, prompt: list[int], output_len: int) -> Timing:
        import time

        streamer = _FirstToken()
        start = time.perf_counter()
        new = self._generate([prompt], output_len, streamer)
        e2e = time.perf_counter() - start
        ttft = None if streamer.first_at is None else streamer.first_at - start
        return Timing(e2e, ttft, int(new.shape[1]))

    def first_token_s(self, prompt: list[int]) -> float:
        return timed(self._generate, [prompt], 1)[1]

    def answer(self, prompt: list[int], max_tokens: int, stop: Sequence[str]) -> Timing:
        import time

        streamer = _FirstToken()
        start = time.perf_counter()
        new = self._generate([prompt], max_tokens, streamer, self._config(max_tokens, False, stop))
        e2e = time.perf_counter() - start
        ttft = None if streamer.first_at is None else streamer.first_at - start
        done = self.backend.codec.finish([int(t) for t in new[0]], stop)
        return Timing(e2e, ttft, done.output_tokens)

    def all(self, prompts: list[list[int]], output_len: int) -> Batch:
        # transformers has no continuous batching: fixed batches of the run's batch size, longest
        # prompts together so little padding is computed (vLLM's `--backend hf` does the same).
        order = sorted(prompts, key=len, reverse=True)
        size = max(1, self.backend.settings.batch_size)
        counts: list[int] = []

        def run() -> None:
            for start in range(0, len(order), size):
                new = self._generate(order[start : start + size], output_len)
                counts.extend([int(new.shape[1])] * new.shape[0])

        _, elapsed = timed(run)
        n_prompt = sum(len(p) for p in prompts)
        return Batch(elapsed, len(prompts), n_prompt, sum(counts), min(counts), max(counts))


def vllm_kv_cache_bytes(llm: Any) -> tuple[int | None, str]:
    """The KV cache vLLM reserved: blocks × block size × bytes per token (K and V, all layers).

    Exact for ordinary attention; for MLA or hybrid models it is an estimate (noted)."""
    try:
        import torch

        cfg = llm.llm_engine.vllm_config
        cache, model = cfg.cache_config, cfg.model_config
        blocks, block = cache.num_gpu_blocks, cache.block_size
        layers = model.get_num_layers(cfg.parallel_config)
        heads = model.get_num_kv_heads(cfg.parallel_config)
        dtype = model.dtype if cache.cache_dtype == "auto" else _cache_dtype(cache.cache_dtype)
        size = torch.empty((), dtype=dtype).element_size()
        per_token = 2 * layers * heads * model.get_head_size() * size
    except Exception as exc:  # an engine version without these fields: say so, do not guess
        return None, f"KV-cache reservation unknown ({type(exc).__name__}: {exc})"
    note = "KV cache = blocks reserved by vLLM × block size × K/V bytes per token"
    if getattr(model, "use_mla", False) or getattr(model, "is_hybrid", False):
        note += " (estimate: MLA/hybrid layers store less per token)"
    return int(blocks * block * per_token), note


def vllm_engine_settings(llm: Any) -> dict[str, Any]:
    """What the engine really runs with, read back from its config (not what was asked for):
    two measurements agree only if these do, and vLLM fills several of them in itself."""
    engine = llm.llm_engine
    cfg = engine.vllm_config
    sched, model, cache = cfg.scheduler_config, cfg.model_config, cfg.cache_config
    return {
        "max_num_seqs": sched.max_num_seqs,
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "chunked_prefill": getattr(sched, "enable_chunked_prefill", None),
        "async_scheduling": getattr(sched, "async_scheduling", None),
        "enforce_eager": model.enforce_eager,
        "dtype": str(model.dtype).removeprefix("torch."),
        "max_model_len": model.max_model_len,
        "prefix_caching": cache.enable_prefix_caching,
        "block_size": cache.block_size,
        "kv_cache_blocks": cache.num_gpu_blocks,
        "log_stats": getattr(engine, "log_stats", None),
    }


def _cache_dtype(name: str) -> Any:
    from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE

    return STR_DTYPE_TO_TORCH_DTYPE[name]
