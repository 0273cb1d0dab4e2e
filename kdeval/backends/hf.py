"""The transformers backend: batched greedy (or seeded sampled) generation and choice scoring."""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kdeval.backends.base import Backend, GenerationSettings, ModelInfo, OnDone
from kdeval.backends.prompting import PromptCodec, choice_sequence, fit_prompt
from kdeval.backends.registry import BackendKind, Needs, ResolvedModel
from kdeval.tasks import ChoiceRequest, GenerateRequest, Output, Request
from kdeval.thinking import opens_trace
from kdeval.threads import set_torch_threads, torch_threads

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig

    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.probes import Engine

T = TypeVar("T")


@dataclass
class _Prompt:
    index: int
    text: str
    ids: list[int]
    seed: int | None = None


@dataclass
class _Choices:
    """A ChoiceRequest in flight: one scored sequence per choice (several for a rolling one)."""

    index: int
    text: str
    seqs: list[tuple[list[int], int]]  # (context + continuation ids, continuation length)
    owner: list[int]  # the choice each sequence belongs to
    scores: list[float]
    greedy: list[bool]
    left: int = 0  # sequences not scored yet
    raw: bool = False  # an lm-eval request: its outputs say which choices are greedy


class HFBackend:
    name = "hf"

    def __init__(
        self,
        path: str,
        settings: GenerationSettings,
        *,
        use_chat_template: bool | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
        device_map: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.settings = settings
        self.codec = PromptCodec.from_pretrained(
            path, use_chat_template=use_chat_template, trust_remote_code=trust_remote_code
        )
        extra = {"device_map": device_map} if device_map else {}
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=settings.dtype, trust_remote_code=trust_remote_code, **extra
        )
        # vLLM ignores the checkpoint's sampling defaults (top_k, repetition_penalty, ...) when
        # given explicit SamplingParams; a neutral config makes generate() do the same.
        model.generation_config = GenerationConfig()
        if device_map:  # accelerate placed the layers; inputs go where the embeddings are
            self.device = str(model.get_input_embeddings().weight.device)
        else:
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = model.to(self.device)
        self.model: Any = model.eval()
        self.info = ModelInfo(
            chat_template=self.codec.chat_template_used,
            n_params=sum(p.numel() for p in model.parameters()),
            dtype=str(model.dtype).removeprefix("torch."),
        )
        # On CPU, torch's threads follow kdeval's one rule (kdeval.threads) until close().
        self._threads_before: int | None = None
        if self.device == "cpu":
            self._threads_before = set_torch_threads(torch_threads(self.info.n_params))

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        choices = [(i, r) for i, r in enumerate(requests) if isinstance(r, ChoiceRequest)]
        generate = [(i, r) for i, r in enumerate(requests) if isinstance(r, GenerateRequest)]
        self._run_choices(choices, on_done)
        self._run_generate(generate, on_done)

    def close(self) -> None:
        import torch

        self.model = None
        if self._threads_before is not None:
            set_torch_threads(self._threads_before)
            self._threads_before = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- generation -------------------------------------------------------------------------

    def _run_generate(self, items: list[tuple[int, GenerateRequest]], on_done: OnDone) -> None:
        # One generate() call serves one (max_tokens, stop, thinking) setting, so group by it.
        groups: dict[tuple[int, tuple[str, ...], tuple[str, str] | None], list[_Prompt]] = defaultdict(list)
        for i, req in items:
            text = self.codec.render_request(req)
            raw = req.prompt is not None
            ids, max_tokens = fit_prompt(
                self.codec.encode_raw(text) if raw else self.codec.encode_text(text),
                req.max_tokens,
                self.settings.max_model_len,
            )
            groups[(max_tokens, req.stop, req.think)].append(_Prompt(i, text, ids, req.seed))
        import torch

        n_batch = 0
        sampled = self.settings.temperature > 0
        for (max_tokens, stop, think), prompts in groups.items():
            prompts.sort(key=lambda p: len(p.ids), reverse=True)  # similar lengths pad less
            engine_stops = () if think else stop  # stops must not cut a trace (kdeval.thinking)
            # A sample with its own seed runs alone: generate() takes no per-row generator, and
            # its result must not depend on which other rows shared its batch.
            alone = [[p] for p in prompts if sampled and p.seed is not None]
            together = [p for p in prompts if not (sampled and p.seed is not None)]
            for batch in [*_chunks(together, self.settings.batch_size), *alone]:
                if sampled:
                    # seed each batch, so a run is repeatable and a batch does not depend on
                    # the batches sampled before it
                    seed = batch[0].seed if batch[0].seed is not None else self.settings.seed + n_batch
                    torch.manual_seed(seed)
                n_batch += 1
                rows = self._generate_batch([p.ids for p in batch], max_tokens, engine_stops)
                for prompt, row in zip(batch, rows, strict=True):
                    done = self.codec.finish(row, stop, think, opens_trace(prompt.text, think))
                    on_done(prompt.index, done.output(prompt.text, len(prompt.ids)))

    def _generate_batch(
        self, rows: list[list[int]], max_tokens: int, stop: tuple[str, ...]
    ) -> list[list[int]]:
        import torch

        ids, mask = self._left_pad(rows)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=self._generation_config(max_tokens, stop),
                tokenizer=self.codec.tokenizer if stop else None,
            )
        return [list(map(int, row)) for row in out[:, ids.shape[1] :].tolist()]

    def _generation_config(self, max_tokens: int, stop: tuple[str, ...]) -> GenerationConfig:
        from transformers import GenerationConfig

        eos = list(self.codec.eos_ids)
        sampling: dict[str, Any] = {"do_sample": False}
        if self.settings.temperature > 0:
            s = self.settings
            # top_k=0: no top-k cut, as vLLM (HF's own default would be 50).
            sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p, "top_k": 0}
        return GenerationConfig(
            max_new_tokens=max_tokens,
            num_beams=1,
            repetition_penalty=1.0,
            eos_token_id=eos,
            # Finished rows are filled with EOS rather than pad, so PromptCodec.finish drops them.
            pad_token_id=eos[0],
            stop_strings=list(stop) or None,
            **sampling,
        )

    # -- multiple choice ----------------------------------------------------------------------

    def _run_choices(self, items: list[tuple[int, ChoiceRequest]], on_done: OnDone) -> None:
        limit = self.settings.max_model_len
        pending = []
        for i, req in items:
            units = self.codec.choice_units(req, limit)
            n = len(req.choices)
            seqs = [(choice_sequence(ctx, cont, limit), len(cont)) for _, ctx, cont in units]
            owner = [k for k, _, _ in units]
            text = self.codec.render_request(req)
            raw = req.contexts is not None or bool(req.rolling)
            pending.append(_Choices(i, text, seqs, owner, [0.0] * n, [True] * n, len(seqs), raw))
        # Longest first, a request's choices kept together so it completes early.
        pending.sort(key=lambda c: max((len(s) for s, _ in c.seqs), default=0), reverse=True)
        for c in pending:
            if not c.seqs:  # only empty rolling texts: nothing to score
                on_done(c.index, _choice_output(c))
        # Sequences with the same input (one-token choices after one context) run once, as in
        # lm-eval: the input's last logits score every one of them.
        rows: dict[tuple[int, ...], list[tuple[_Choices, int]]] = defaultdict(list)
        for c in pending:
            for k, (seq, _) in enumerate(c.seqs):
                rows[tuple(seq[:-1])].append((c, k))
        for batch in _chunks(list(rows.items()), self.settings.batch_size):
            scored = self._score_batch([(list(inp), [c.seqs[k] for c, k in row]) for inp, row in batch])
            for (_, row), results in zip(batch, scored, strict=True):
                for (c, k), (score, greedy) in zip(row, results, strict=True):
                    c.scores[c.owner[k]] += score
                    c.greedy[c.owner[k]] &= greedy
                    c.left -= 1
                    if not c.left:
                        on_done(c.index, _choice_output(c))

    def _score_batch(
        self, batch: list[tuple[list[int], list[tuple[list[int], int]]]]
    ) -> list[list[tuple[float, bool]]]:
        """Per input, for each sequence it is the input of: the sum of the continuation's log-probs
        (lm-eval's loglikelihood) and whether greedy decoding would produce it (lm-eval's is_greedy)."""
        import torch

        ids, mask = self._left_pad([inp for inp, _ in batch])
        # Left padding puts every continuation at the end, so only the last `keep` logits are
        # needed; explicit positions make padded rows see the same positions as unpadded ones.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(n for _, seqs in batch for _, n in seqs)
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
            logprobs = logits.float().log_softmax(-1)
        scores = []
        for row, (_, seqs) in enumerate(batch):
            per_seq = []
            for seq, n in seqs:
                targets = torch.tensor(seq[-n:], device=logprobs.device)
                picked = logprobs[row, keep - n :].gather(-1, targets[:, None])
                greedy = bool((logprobs[row, keep - n :].argmax(-1) == targets).all())
                per_seq.append((float(picked.sum()), greedy))
            scores.append(per_seq)
        return scores

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.codec.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)


def _choice_output(c: _Choices) -> Output:
    return Output(
        prompt=c.text,
        choice_logprobs=c.scores,
        prompt_tokens=sum(len(seq) for seq, _ in c.seqs),  # tokens run through the model
        choice_greedy=c.greedy if c.raw else [],
    )


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    step = max(1, size)
    for start in range(0, len(items), step):
        yield items[start : start + step]


# -- the registry entry --------------------------------------------------------------------------


class HFOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps (default: cuda when available)")
    device_map: str | None = Field(
        None, description="'auto': spread a model too big for one device over all of them (accelerate)"
    )


class HFKind(BackendKind):
    name = "hf"
    summary = "transformers in this process (batched generate; log-likelihood from the logits)"
    Options = HFOptions
    placement = frozenset({"device", "device_map"})

    def resolve(self, model: ModelSpec, run: RunSpec, needs: Needs) -> ResolvedModel:
        from kdeval.backends.local import resolve_local

        return resolve_local(self, model, run, self.check_options(model))

    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        return HFBackend(
            model.path,
            model.settings,
            use_chat_template=model.use_chat_template,
            trust_remote_code=model.trust_remote_code,
            **model.options,
        )

    def cost_engine(self, backend: Backend) -> Engine:
        from kdeval.efficiency.engines import HFEngine

        assert isinstance(backend, HFBackend)
        return HFEngine(backend, backend.settings.temperature, backend.settings.seed)

    def on_gpu(self, backend: Backend) -> bool:
        return str(getattr(backend, "device", "")).startswith("cuda")

    def kv_cache(self, backend: Backend) -> tuple[int | None, str]:
        return None, "transformers allocates the KV cache per request: it is inside the peak, not reserved"

    def engine_settings(self, backend: Backend) -> dict[str, Any]:
        assert isinstance(backend, HFBackend)
        return {
            "dtype": backend.info.dtype,
            "batch_size": backend.settings.batch_size,
            "device": backend.device,
        }


KIND = HFKind()
