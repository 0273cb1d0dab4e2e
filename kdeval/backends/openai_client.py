"""The openai backend's client: kdeval requests over HTTP with the official `openai` SDK
(AsyncOpenAI), `concurrency` in flight, each answer handed to the store as it lands.

The SDK retries 408/409/429/5xx answers, timeouts and dropped connections with exponential
backoff and honours Retry-After; once a request's retries are spent the run stops with one line
(what finished is stored). What the server is and how to talk to it was settled when the model
was resolved (kdeval.backends.openai).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from kdeval.backends.base import ModelInfo, OnDone
from kdeval.backends.openai import OpenAIOptions, api_key, describe
from kdeval.backends.prompting import PromptCodec, choice_sequence, engine_stop, fit_prompt, render_plain
from kdeval.backends.registry import ResolvedModel
from kdeval.errors import UserError
from kdeval.tasks import ChoiceRequest, GenerateRequest, Message, Output, Request
from kdeval.thinking import DEFAULT, cut_at_stop, opens_trace, split

if TYPE_CHECKING:
    from openai import AsyncOpenAI

T = TypeVar("T")


# -- the backend ------------------------------------------------------------------------------


class OpenAIBackend:
    """Serve kdeval requests from the server, `concurrency` in flight, each stored when it lands."""

    name = "openai"

    def __init__(self, model: ResolvedModel) -> None:
        self.model = model
        self.opts = OpenAIOptions.model_validate(model.options)
        self.settings = model.settings
        self.served: str = model.facts["model"]
        self.vllm = model.facts.get("server") == "vllm"
        self.logprobs: str | None = model.facts.get("logprobs")
        tokenizer = model.facts.get("tokenizer")
        self.codec = (
            PromptCodec.from_pretrained(
                tokenizer,
                use_chat_template=model.use_chat_template,
                trust_remote_code=model.trust_remote_code,
            )
            if tokenizer
            else None
        )
        self.url = model.path
        self._key = api_key(self.opts, model.name)
        self._loop = asyncio.new_event_loop()
        self._client: AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self.finished = 0
        #: what else holds connections to the server (the cost probes), closed with the backend
        self.closers: list[Callable[[], None]] = []
        chat = self.opts.endpoint == "chat" or bool(self.codec and self.codec.chat_template_used)
        self.info = ModelInfo(
            chat_template=chat,
            n_params=self.opts.n_params,
            dtype="server",
            extra={"server_model": self.served, "host": self.url, "endpoint": self.opts.endpoint},
        )

    # -- plumbing ---------------------------------------------------------------------------

    def call(self, make: Callable[[AsyncOpenAI], Awaitable[T]]) -> Awaitable[T]:
        """One HTTP request, waiting for a place among the `concurrency` in flight."""

        async def go() -> T:
            client, sem = self._session()
            async with sem:
                return await make(client)

        return go()

    def _session(self) -> tuple[AsyncOpenAI, asyncio.Semaphore]:
        if self._client is None or self._sem is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.opts.base_url,
                api_key=self._key,
                timeout=self.opts.timeout,
                max_retries=self.opts.max_retries,
            )
            self._sem = asyncio.Semaphore(self.opts.concurrency)
        return self._client, self._sem

    def drive(self, work: Awaitable[T]) -> T:
        """Run coroutines on this backend's own loop; a request that failed after its retries
        stops everything with one line (what finished is already stored)."""
        import openai

        try:
            return self._loop.run_until_complete(work)
        except openai.APIError as exc:
            status = getattr(exc, "status_code", None)
            retried = (
                isinstance(exc, openai.APIConnectionError)
                or status in (408, 409, 429)
                or (status or 0) >= 500
            )
            tried = f" (after {self.opts.max_retries} retries)" if retried else ""
            raise UserError(
                f"{describe(exc, self.model.name, self.url)}{tried}; "
                f"{self.finished} requests finished and are stored",
                fix="bring the server back and run the same command: finished requests are not sent again",
            ) from None

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        async def one(i: int, req: Request) -> None:
            out = await (self._choices(req) if isinstance(req, ChoiceRequest) else self._generate(req))
            self.finished += 1
            on_done(i, out)

        self.drive(_all([one(i, r) for i, r in enumerate(requests)]))

    @property
    def api_key(self) -> str:
        return self._key

    def cost_body(self, prompt: list[int] | str, output_len: int) -> dict[str, Any]:
        """The JSON of a cost-phase request: the run's sampling with exactly output_len tokens
        (vLLM's ignore_eos, as `vllm bench serve --ignore-eos`; min_tokens elsewhere)."""
        params = self.sampling(output_len)
        extra = dict(params.pop("extra_body", {}))
        extra.pop("stop_token_ids", None)
        extra.pop("return_token_ids", None)
        extra.update({"ignore_eos": True} if self.vllm else {"min_tokens": output_len})
        return {**params, **extra, "prompt": prompt}

    def answer_body(self, prompt: list[int] | str, max_tokens: int, stop: Sequence[str]) -> dict[str, Any]:
        """The JSON of a request answered in full (the cost of one answer): the quality run's
        sampling, to EOS or a stop string within max_tokens."""
        params = self.sampling(max_tokens, stop)
        extra = dict(params.pop("extra_body", {}))
        extra.pop("return_token_ids", None)
        return {**params, **extra, "prompt": prompt}

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
            self._client = None
        self._loop.close()

    # -- generation -------------------------------------------------------------------------

    def sampling(self, max_tokens: int, stop: Sequence[str] = (), seed: int | None = None) -> dict[str, Any]:
        """The request's sampling fields: the run's settings, with vLLM's extensions set to what
        the offline engine uses (a server would otherwise apply the checkpoint's own defaults)."""
        s = self.settings
        sampled = s.temperature > 0
        params: dict[str, Any] = {
            "model": self.served,
            "max_tokens": max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p if sampled else 1.0,
        }
        if sampled:
            params["seed"] = s.seed if seed is None else seed
        if stop:
            params["stop"] = list(stop)
        extra: dict[str, Any] = {}
        if self.vllm:
            extra = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "return_token_ids": True}
            if self.codec is not None:
                extra["stop_token_ids"] = list(self.codec.eos_ids)
        extra.update(self.opts.extra_body)
        if extra:
            params["extra_body"] = extra
        return params

    def prompt_of(self, messages: Sequence[Message], max_tokens: int) -> tuple[str, list[int] | str, int]:
        """(prompt as recorded, prompt as sent, max_tokens) for the completions endpoint."""
        if self.codec is None:
            return render_plain(messages), render_plain(messages), max_tokens
        text = self.codec.render(messages)
        ids, max_tokens = fit_prompt(self.codec.encode_text(text), max_tokens, self.settings.max_model_len)
        return text, ids, max_tokens

    async def _generate(self, req: Request) -> Output:
        assert isinstance(req, GenerateRequest)
        if self.opts.endpoint == "chat":
            return await self._chat(req)
        text, prompt, max_tokens = self.prompt_of(req.messages, req.max_tokens)
        params = self.sampling(max_tokens, engine_stop(req), req.seed)
        resp = await self.call(lambda c: c.completions.create(prompt=prompt, **params))
        choice = resp.choices[0]
        usage = resp.usage
        n_prompt = len(prompt) if isinstance(prompt, list) else (usage.prompt_tokens if usage else 0)
        ids = (choice.model_extra or {}).get("token_ids")
        out = self._output(text, choice.text or "", ids, req, n_prompt, usage)
        if ids is None:  # text only: the server's finish reason says whether it ran out of tokens
            out.truncated = out.truncated or choice.finish_reason == "length"
        return out

    async def _chat(self, req: GenerateRequest) -> Output:
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        params = self.sampling(req.max_tokens, engine_stop(req), req.seed)
        resp = await self.call(lambda c: c.chat.completions.create(messages=messages, **params))  # type: ignore[arg-type]
        choice = resp.choices[0]
        msg = choice.message
        extra = msg.model_extra or {}
        reasoning = str(extra.get("reasoning_content") or extra.get("reasoning") or "")
        shown = self.codec.render(req.messages) if self.codec else render_plain(req.messages)
        usage = resp.usage
        n_prompt = usage.prompt_tokens if usage else 0
        if reasoning:  # the server's reasoning parser split the trace off: content is the answer
            answer, _ = cut_at_stop(msg.content or "", req.stop)
            closed = bool(msg.content)
            out = Output(shown, answer, [], [], n_prompt, _completion(usage))
            out.reasoning, out.thinking = reasoning, "closed" if closed else "open"
            end = (req.think or DEFAULT)[1] if closed else ""
            out.reasoning_tokens = _reasoning_tokens(usage) or self._count(reasoning + end)
        else:
            out = self._output(
                shown, msg.content or "", None, req, usage.prompt_tokens if usage else 0, usage
            )
        out.truncated = choice.finish_reason == "length"
        return out

    def _output(
        self, prompt: str, text: str, ids: list[int] | None, req: GenerateRequest, n_prompt: int, usage: Any
    ) -> Output:
        opened = opens_trace(prompt, req.think)
        if self.codec is not None and ids is not None:
            # the same ids give the same text (trace, answer, stops) as offline
            return self.codec.finish(ids, req.stop, req.think, opened).output(prompt, n_prompt)
        s = split(text, req.think, req.stop, opened)
        out = Output(prompt, s.answer, [], [], n_prompt, _completion(usage))
        out.reasoning, out.thinking = s.trace, s.state
        return out

    def _count(self, text: str) -> int:
        """Trace tokens the server did not count: the trace (and its closing delimiter) re-encoded
        with the local tokenizer; 0 without one."""
        if self.codec is None:
            return 0
        return len(self.codec.tokenizer.encode(text, add_special_tokens=False))

    # -- multiple choice --------------------------------------------------------------------

    async def _choices(self, req: Request) -> Output:
        assert isinstance(req, ChoiceRequest) and self.codec is not None
        limit = self.settings.max_model_len
        pairs = self.codec.encode_choices(req)
        seqs = [(choice_sequence(ctx, cont, limit), cont) for ctx, cont in pairs]
        scores = await self.continuation_logprobs(seqs)
        text = self.codec.render(req.messages)
        return Output(prompt=text, choice_logprobs=scores, prompt_tokens=sum(len(s) for s, _ in seqs))

    async def continuation_logprobs(self, seqs: list[tuple[list[int], list[int]]]) -> list[float]:
        """Per (sequence, continuation): the sum of the log-probs of the continuation's tokens at
        the end of the sequence (lm-eval's loglikelihood). All of a request's choices go in one
        HTTP request: the completions API takes a list of prompts."""
        prompts = [seq for seq, _ in seqs]
        if self.logprobs == "prompt_logprobs":
            rows = await self.prompt_logprobs(prompts, 0)
            return [
                float(sum(r[len(seq) - len(cont) + j][str(t)]["logprob"] for j, t in enumerate(cont)))
                for (seq, cont), r in zip(seqs, rows, strict=True)
            ]
        resp = await self.call(
            lambda c: c.completions.create(
                model=self.served, prompt=prompts, max_tokens=1, temperature=0.0, echo=True, logprobs=1
            )
        )
        out = []
        for (seq, cont), choice in zip(seqs, sorted(resp.choices, key=lambda x: x.index), strict=True):
            lp = choice.logprobs
            assert lp is not None and lp.token_logprobs is not None
            out.append(float(sum(x or 0.0 for x in lp.token_logprobs[len(seq) - len(cont) : len(seq)])))
        return out

    async def prompt_logprobs(self, seqs: list[list[int]], k: int) -> list[list[dict[str, Any]]]:
        """vLLM's prompt_logprobs for each sequence (one request): per prompt token, {token id:
        {logprob, rank}} with the top k and the actual token (None for the first)."""
        resp = await self.call(
            lambda c: c.completions.create(
                model=self.served,
                prompt=seqs,
                max_tokens=1,
                temperature=0.0,
                extra_body={"prompt_logprobs": k},
            )
        )
        choices = sorted(resp.choices, key=lambda x: x.index)
        rows = [(c.model_extra or {}).get("prompt_logprobs") for c in choices]
        if len(rows) != len(seqs) or any(
            not isinstance(r, list) or len(r) != len(s) for r, s in zip(rows, seqs, strict=False)
        ):
            raise UserError(f"the server of model '{self.model.name}' returned no prompt_logprobs")
        return rows  # type: ignore[return-value]

    def prompt_topk(
        self, seqs: Sequence[list[int]], k: int, on_done: Callable[[int, list[Any]], None]
    ) -> None:
        """The top-k log-probs of every token of every sequence (the trainer's teacher cache)."""

        async def one(i: int, seq: list[int]) -> None:
            (rows,) = await self.prompt_logprobs([seq], k)
            self.finished += 1
            on_done(i, rows)

        self.drive(_all([one(i, s) for i, s in enumerate(seqs)]))


async def _all(work: Sequence[Awaitable[None]]) -> None:
    """Run all; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _completion(usage: Any) -> int:
    return int(usage.completion_tokens) if usage else 0


def _reasoning_tokens(usage: Any) -> int:
    """Trace tokens when the server counts them (`completion_tokens_details.reasoning_tokens`)."""
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    return int(getattr(details, "reasoning_tokens", 0) or 0)
