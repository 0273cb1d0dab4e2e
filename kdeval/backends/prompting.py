"""Prompt rendering, tokenization and decoding shared by every backend.

Backends exchange token ids only; this module is the one place where text becomes ids and ids
become text, so the same token ids give the same text on vLLM and transformers (lm-eval's two
backends disagree here: one keeps special tokens in generated text, the other strips them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.tasks import ChoiceRequest, GenerateRequest, Message, Output
from kdeval.thinking import Split, State, cut_at_stop, split

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Decoded:
    """A generation after EOS and stop-string handling.

    token_ids:     the ids kept: before the EOS, and up to the token that completed a stop string.
    text:          the answer: `decode(token_ids, stop)`, after the thinking trace when there is one.
    output_tokens: tokens the model produced for this answer (kept ids, plus the EOS if it ended on one).
    reasoning:     the thinking trace as generated (kdeval.thinking), "" when none.
    reasoning_tokens: the kept ids up to and including the trace's closing delimiter.
    thinking:      "" (no trace), "closed", or "open" (never closed: no answer).
    stopped:       it ended on EOS or a stop string; False means it ran out of tokens.
    """

    token_ids: list[int]
    text: str
    output_tokens: int
    reasoning: str = ""
    reasoning_tokens: int = 0
    thinking: State = ""
    stopped: bool = True

    def output(self, prompt: str, prompt_tokens: int) -> Output:
        return Output(
            prompt=prompt,
            text=self.text,
            token_ids=self.token_ids,
            prompt_tokens=prompt_tokens,
            output_tokens=self.output_tokens,
            reasoning=self.reasoning,
            reasoning_tokens=self.reasoning_tokens,
            thinking=self.thinking,
            truncated=not self.stopped,
        )


class PromptCodec:
    """Messages -> prompt text -> token ids, and generated ids -> text, for one tokenizer."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        use_chat_template: bool | None = None,
        extra_eos_ids: Iterable[int] = (),
    ) -> None:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ValueError("use_chat_template=True but the tokenizer has no chat_template")
        self.tokenizer = tokenizer
        self._use_template = has_template if use_chat_template is None else use_chat_template
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys([*eos, *extra_eos_ids]))

    @classmethod
    def from_pretrained(
        cls, path: str, *, use_chat_template: bool | None = None, trust_remote_code: bool = False
    ) -> PromptCodec:
        """Load the tokenizer at `path`; EOS ids from generation_config.json count too (Llama 3 has two)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return cls(tokenizer, use_chat_template, _generation_eos_ids(Path(path)))

    @property
    def chat_template_used(self) -> bool:
        return self._use_template

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0])

    def render(self, messages: Sequence[Message]) -> str:
        if self._use_template:
            chat = [{"role": m.role, "content": m.content} for m in messages]
            text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            return str(text)
        return render_plain(messages)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, with BOS exactly once."""
        bos = self.tokenizer.bos_token
        # Chat templates usually write BOS themselves; the tokenizer would add a second one.
        template_has_bos = self._use_template and bool(bos) and text.startswith(bos)
        if template_has_bos:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))

    def encode_prompt(self, req: GenerateRequest | ChoiceRequest) -> list[int]:
        if isinstance(req, GenerateRequest) and req.prompt is not None:
            return self.encode_raw(req.prompt)
        return self.encode_text(self.render(req.messages))

    def render_request(self, req: GenerateRequest | ChoiceRequest) -> str:
        """A request's prompt text: its messages rendered, or its raw text (an lm-eval task's)."""
        if isinstance(req, GenerateRequest) and req.prompt is not None:
            return req.prompt
        if isinstance(req, ChoiceRequest) and req.contexts is not None:
            return req.contexts[0] if req.contexts else ""
        return self.render(req.messages)

    def encode_raw(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Raw text as lm-eval's `hf` model encodes it (HFLM.tok_encode): the tokenizer's own special
        tokens, none when the text already starts with the prefix token (BOS, else EOS)."""
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and text.startswith(str(self.tokenizer.decode([self.prefix_id]))):
            kw = {"add_special_tokens": False}
        return list(self.tokenizer.encode(text, **kw))

    @property
    def prefix_id(self) -> int:
        """lm-eval's prefix token: what an empty context is conditioned on (BOS, else EOS)."""
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.eos_ids[0])

    def encode_choices(self, req: ChoiceRequest) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per choice, split as lm-eval does."""
        if req.rolling:
            raise ValueError("rolling log-likelihood requests are scored in windows (choice_units)")
        if req.contexts is not None:
            return [self._raw_pair(c, x) for c, x in zip(req.contexts, req.choices, strict=True)]
        context = self.render(req.messages)
        return [self._split_choice(context, choice) for choice in req.choices]

    def choice_units(self, req: ChoiceRequest, max_model_len: int) -> list[tuple[int, list[int], list[int]]]:
        """(choice index, context ids, continuation ids) to score; a choice's log-prob is the sum
        over its units. One unit per choice, except rolling requests: lm-eval's rolling windows."""
        if not req.rolling:
            return [(k, ctx, cont) for k, (ctx, cont) in enumerate(self.encode_choices(req))]
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        # choice_sequence keeps max_model_len - 1 ids; a window is max_len + 1 of them
        max_len = max_model_len - 2
        return [
            (k, list(ctx), list(cont))
            for k, text in enumerate(req.choices)
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(self.encode_raw(text), self.prefix_id, max_len, 1),
            )
        ]

    def _raw_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's TemplateLM.loglikelihood + _encode_pair on raw text, for a causal model."""
        if not context:
            return [self.prefix_id], self.encode_raw(continuation, add_special_tokens=False)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        ctx = self.encode_raw(context)
        return ctx, self.encode_raw(context + continuation)[len(ctx) :]

    def _split_choice(self, context: str, choice: str) -> tuple[list[int], list[int]]:
        if not choice:
            raise ValueError("a choice must be a non-empty string")
        # Trailing spaces belong to the continuation, so " yes" stays one BPE token (lm-eval).
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, choice = context[:-n_spaces], context[-n_spaces:] + choice
        ctx_ids = self.encode_text(context)
        whole = self.encode_text(context + choice)
        if whole[: len(ctx_ids)] == ctx_ids and len(whole) > len(ctx_ids):
            cont_ids = whole[len(ctx_ids) :]
        else:  # the merge crossed the boundary: encode the two sides apart
            cont_ids = list(self.tokenizer.encode(choice, add_special_tokens=False))
        if not cont_ids:
            raise ValueError(f"choice {choice!r} encodes to no tokens")
        if not ctx_ids:  # the first continuation token needs something to be conditioned on
            bos = self.tokenizer.bos_token_id
            ctx_ids = [int(bos if bos is not None else self.eos_ids[0])]
        return ctx_ids, cont_ids

    def decode(self, token_ids: Sequence[int], stop: Sequence[str] = ()) -> str:
        """Text of generated ids: up to the first EOS, special tokens skipped, cut at the first stop."""
        text = self._decode(self._before_eos(token_ids))
        return cut_at_stop(text, stop)[0]

    def finish(
        self,
        token_ids: Sequence[int],
        stop: Sequence[str] = (),
        think: tuple[str, str] | None = None,
        opened: bool = False,
    ) -> Decoded:
        """Apply EOS, thinking and stop handling to raw generated ids the same way on every backend.

        Engines stop on stop strings in slightly different places (or generate past them), so
        the kept ids are recomputed here: the shortest prefix whose answer holds a stop string.
        With `think` delimiters, stop strings apply after the trace only (kdeval.thinking).
        """
        kept = self._before_eos(token_ids)
        ended_on_eos = len(kept) < len(token_ids)

        def cut(ids: list[int]) -> Split:
            return split(self._decode(ids), think, stop, opened)

        s = cut(kept)
        if s.stopped:
            kept = kept[: self._first_prefix(kept, lambda ids: cut(ids).stopped)]
            ended_on_eos = False
            s = cut(kept)
        n_trace = 0
        if s.state == "closed":
            n_trace = self._first_prefix(kept, lambda ids: cut(ids).state == "closed")
        elif s.state == "open":
            n_trace = len(kept)
        return Decoded(
            kept,
            s.answer,
            len(kept) + int(ended_on_eos),
            reasoning=s.trace,
            reasoning_tokens=n_trace,
            thinking=s.state,
            stopped=ended_on_eos or s.stopped,
        )

    def _first_prefix(self, ids: list[int], holds: Callable[[list[int]], bool]) -> int:
        # Binary search: `holds` (a stop string or a closing delimiter seen) is monotone in the length.
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if holds(ids[:mid]):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _before_eos(self, token_ids: Sequence[int]) -> list[int]:
        ids = [int(t) for t in token_ids]
        cut = next((i for i, t in enumerate(ids) if t in self.eos_ids), len(ids))
        return ids[:cut]

    def _decode(self, ids: list[int]) -> str:
        # No clean-up of tokenization spaces: it rewrites " ." to "." and the like, so the
        # text would no longer be what the model generated.
        return str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))


def engine_stop(req: GenerateRequest) -> tuple[str, ...]:
    """The stop strings an engine may stop on: none for a thinking model, whose trace they would cut."""
    return () if req.think else req.stop


def fit_prompt(prompt_ids: list[int], max_tokens: int, max_model_len: int) -> tuple[list[int], int]:
    """Left-truncate a prompt so prompt + answer fit the context window (lm-eval does the same).

    A prompt and budget that fit are kept as they are (a reasoning budget may be most of the
    window); otherwise the answer gets at most half the window and the prompt the rest."""
    if max_tokens >= 1 and len(prompt_ids) + max_tokens <= max_model_len:
        return prompt_ids, max_tokens
    max_tokens = max(1, min(max_tokens, max_model_len // 2))
    room = max_model_len - max_tokens
    return prompt_ids[-room:], max_tokens


def choice_sequence(ctx: list[int], cont: list[int], max_model_len: int) -> list[int]:
    """Context + continuation, left-truncated to the window; the last len(cont) ids are scored."""
    seq = ctx + cont
    limit = max_model_len - 1  # vLLM generates one token after the prompt
    if len(cont) >= limit:
        raise ValueError(f"a choice of {len(cont)} tokens does not fit max_model_len={max_model_len}")
    return seq[-limit:]


def render_plain(messages: Sequence[Message]) -> str:
    system = [m.content for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    head = "".join(f"{s}\n\n" for s in system)
    if len(turns) == 1 and turns[0].role == "user":
        return head + turns[0].content
    body = "".join(f"{m.role.capitalize()}: {m.content}\n\n" for m in turns)
    return head + body + "Assistant:"


def _generation_eos_ids(path: Path) -> list[int]:
    """EOS ids from generation_config.json when present (an int or a list)."""
    config = path / "generation_config.json"
    if not config.is_file():
        return []
    eos: Any = json.loads(config.read_text()).get("eos_token_id")
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]
