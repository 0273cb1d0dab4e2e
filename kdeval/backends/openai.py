"""The `openai` backend: a model behind any OpenAI-compatible server (`vllm serve` across GPUs and
nodes, SGLang, TGI, Azure AI, OpenAI).

Requests go through the official `openai` client (AsyncOpenAI): it retries 408/409/429/5xx answers,
timeouts and dropped connections with exponential backoff and honours Retry-After. kdeval keeps
`concurrency` requests in flight and hands every answer to the store the moment it arrives, so a
dead server or a killed kdeval loses only the requests in flight; once the retries are spent the
run stops with one line, and the same command later sends only what is missing.

Prompts. With the model's tokenizer (option `tokenizer`, else the checkpoint directory the server
reports as its root, when that exists here) prompts are rendered and tokenized exactly as the
local backends do and sent as token ids; the ids the server generated (vLLM's `return_token_ids`)
are decoded by the shared PromptCodec, so a served model gives the text offline vLLM gives.
Without a tokenizer the completions endpoint gets the prompt as plain text and the chat endpoint
gets the messages (`endpoint: chat`), whose template the server applies.

Log-likelihood (multiple choice) always uses /completions with the token ids: vLLM's
`prompt_logprobs` (the log-prob of each actual prompt token) or the portable `echo` + `logprobs`.
A server that gives neither is refused up front for such tasks (chat endpoints return no prompt
log-probs; silently scoring another way would give numbers that compare with nothing).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdeval.backends.base import Backend, GenerationSettings, ModelInfo, OnDone
from kdeval.backends.prompting import PromptCodec, choice_sequence, cut_at_stop, fit_prompt, render_plain
from kdeval.backends.registry import BackendKind, Needs, ResolvedModel
from kdeval.errors import UserError
from kdeval.tasks import ChoiceRequest, GenerateRequest, Message, Output, Request

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.probes import Batch, Engine, Timing

T = TypeVar("T")
_PROBE_TIMEOUT_S = 30.0
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the API root, e.g. http://gpu-node-0:8000/v1")
    model: str | None = Field(default=None, description="served model name (default: the only one served)")
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key (never written)"
    )
    endpoint: Literal["completions", "chat"] = Field(
        default="completions", description="chat: generation tasks send messages (the server's template)"
    )
    concurrency: int = Field(default=32, ge=1, le=4096, description="requests in flight")
    max_retries: int = Field(default=5, ge=0, le=100, description="per request, with backoff")
    timeout: float = Field(default=600.0, gt=0, description="seconds per request (and per stall)")
    tokenizer: str | None = Field(
        default=None, description="the model's tokenizer (path or hub id): prompts go as token ids"
    )
    revision: str | None = Field(default=None, description="part of the model's identity (store, gate)")
    server: Literal["auto", "vllm", "generic"] = Field(
        default="auto", description="vllm: use vLLM's request extensions (auto: when /models says vllm)"
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="added to every request")
    n_params: int | None = Field(default=None, ge=1, description="stated for the cost table")
    memory_mib: float | None = Field(default=None, gt=0, description="stated for the cost table")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.lower().startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")


def safe_url(url: str) -> str:
    """The URL without user:password@ or a query string (which can hold keys), for logs and results.

    >>> safe_url("https://user:secret@api.example.com/v1?key=abc")
    'https://api.example.com/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_key(options: OpenAIOptions, model: str, where: str | None = None) -> str:
    """The key from the named environment variable ("EMPTY" when none is named, as vLLM expects)."""
    if options.api_key_env is None:
        return "EMPTY"
    key = os.environ.get(options.api_key_env)
    if not key:
        raise UserError(
            f"model '{model}': the environment variable {options.api_key_env} (api_key_env) is not set",
            where=where,
            fix=f"export {options.api_key_env}=... (kdeval reads the key from there and never writes it)",
        )
    return key


# -- errors -----------------------------------------------------------------------------------


def describe(exc: BaseException, model: str, url: str) -> str:
    """One line for a failed request: what the server (or the network) said."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"the server of model '{model}' at {url} did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"cannot reach the server of model '{model}' at {url} ({type(cause).__name__})"
    if isinstance(exc, openai.APIStatusError):
        body = getattr(exc, "body", None)
        detail = body.get("message") if isinstance(body, dict) else None
        text = " ".join(str(detail or exc.message).split())[:200]
        return f"the server of model '{model}' at {url} answered {exc.status_code}: {text}"
    return f"request to model '{model}' at {url} failed: {type(exc).__name__}: {exc}"


# -- the registry entry -----------------------------------------------------------------------


class OpenAIKind(BackendKind):
    name = "openai"
    summary = "an OpenAI-compatible server (vllm serve, SGLang, TGI, managed endpoints)"
    Options = OpenAIOptions
    remote = True
    placement = frozenset(
        {"base_url", "api_key_env", "concurrency", "max_retries", "timeout", "n_params", "memory_mib"}
    )

    def missing(self) -> str | None:
        import importlib.util

        return None if importlib.util.find_spec("openai") else "the openai package is not installed"

    def resolve(self, model: ModelSpec, run: RunSpec, needs: Needs) -> ResolvedModel:
        reason = self.missing()
        if reason:
            raise UserError(f"model '{model.name}' is on a server, but {reason}", fix="pip install openai")
        opts = OpenAIOptions.model_validate(self.check_options(model))
        url = safe_url(opts.base_url)
        client = _sync_client(opts, api_key(opts, model.name, model.where_of("options.api_key_env")))
        try:
            served = _served_model(client, opts, model, url)
            facts = _facts(served, opts)
            codec = _codec(facts.get("tokenizer"), run, model)
            if "multiple_choice" in needs or "topk" in needs:
                facts["logprobs"] = _logprob_mode(client, facts, codec, model, url, needs)
        finally:
            client.close()
        settings = GenerationSettings(
            temperature=run.temperature,
            top_p=run.top_p,
            seed=run.seed,
            dtype="server",
            max_model_len=min(model.max_model_len or run.max_model_len, facts["max_model_len"] or 1 << 30),
            batch_size=run.batch_size,
        )
        options = opts.model_dump(mode="json")
        from kdeval.config import digest

        identity = {k: facts.get(k) for k in ("model", "root", "max_model_len")}
        return ResolvedModel(
            name=model.name,
            role=model.role,
            backend=self.name,
            path=url,
            fingerprint=digest({"remote": identity, "revision": opts.revision}),
            settings=settings,
            options=options,
            output_options={**self.output_options(options), "prompts": "tokens" if codec else "text"},
            use_chat_template=run.use_chat_template,
            trust_remote_code=run.trust_remote_code,
            remote=True,
            facts=facts,
        )

    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        return OpenAIBackend(model)

    def cost_engine(self, backend: Backend) -> Engine:
        assert isinstance(backend, OpenAIBackend)
        return OpenAIEngine(backend)

    def engine_settings(self, backend: Backend) -> dict[str, Any]:
        assert isinstance(backend, OpenAIBackend)
        o = backend.opts
        facts = {k: backend.model.facts.get(k) for k in ("model", "max_model_len", "server", "logprobs")}
        return {"concurrency": o.concurrency, "endpoint": o.endpoint, "timeout_s": o.timeout, **facts}


def _sync_client(opts: OpenAIOptions, key: str) -> OpenAI:
    from openai import OpenAI

    return OpenAI(base_url=opts.base_url, api_key=key, timeout=_PROBE_TIMEOUT_S, max_retries=1)


def _served_model(client: OpenAI, opts: OpenAIOptions, model: ModelSpec, url: str) -> Any:
    """The /models entry of the model to evaluate; every way this fails is one line."""
    import openai

    where = model.where_of("options.base_url")
    try:
        listed = list(client.models.list())
    except openai.AuthenticationError:
        raise UserError(
            f"the server at {url} refused the API key of model '{model.name}' (401)",
            where=where,
            fix=f"check the key in ${opts.api_key_env}" if opts.api_key_env else "set options.api_key_env",
        ) from None
    except openai.NotFoundError:
        raise UserError(
            f"no /models endpoint at {url} (model '{model.name}')",
            where=where,
            fix="base_url is the API root, usually ending in /v1",
        ) from None
    except openai.APIError as exc:
        raise UserError(
            describe(exc, model.name, url), where=where, fix="start the server or fix base_url"
        ) from None
    ids = [m.id for m in listed]
    if opts.model is None:
        if len(listed) != 1:
            raise UserError(
                f"the server at {url} serves {len(ids)} models ({', '.join(ids) or 'none'})",
                where=model.where_of(""),
                fix=f"name one: options.model (or --option {model.name}.model=NAME)",
            )
        return listed[0]
    entry = next((m for m in listed if m.id == opts.model), None)
    if entry is None:
        raise UserError(
            f"model '{opts.model}' is not served at {url} (it serves: {', '.join(ids) or 'nothing'})",
            where=model.where_of("options.model"),
            fix="use one of those names in options.model",
        )
    return entry


def _facts(served: Any, opts: OpenAIOptions) -> dict[str, Any]:
    """What the server says of the model (its identity), and how kdeval will talk to it."""
    extra = served.model_extra or {}
    root = extra.get("root")
    max_len = extra.get("max_model_len")
    owned = getattr(served, "owned_by", None)
    server = opts.server if opts.server != "auto" else ("vllm" if owned == "vllm" else "generic")
    tokenizer = opts.tokenizer
    here = Path(root) if isinstance(root, str) else None
    if tokenizer is None and here is not None and any((here / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = str(here)  # the server's own checkpoint, readable here
    return {
        "model": served.id,
        "root": root,
        "max_model_len": max_len if isinstance(max_len, int) else None,
        "owned_by": owned,
        "server": server,
        "tokenizer": tokenizer,
    }


def _codec(tokenizer: str | None, run: RunSpec, model: ModelSpec) -> PromptCodec | None:
    if tokenizer is None:
        return None
    try:
        return PromptCodec.from_pretrained(
            tokenizer, use_chat_template=run.use_chat_template, trust_remote_code=run.trust_remote_code
        )
    except Exception as exc:  # a path without tokenizer files, a hub id without network, ...
        raise UserError(
            f"cannot load the tokenizer of model '{model.name}' from {tokenizer} ({type(exc).__name__})",
            where=model.where_of("options.tokenizer"),
            fix="set options.tokenizer to a local tokenizer directory",
        ) from None


def _logprob_mode(
    client: OpenAI, facts: dict[str, Any], codec: PromptCodec | None, model: ModelSpec, url: str, needs: Needs
) -> str:
    """How this server scores prompt tokens: 'prompt_logprobs' (vLLM) or 'echo'; refused up front
    when it can do neither, or when there is no tokenizer to split context and continuation."""
    kinds = ", ".join(sorted(n for n in needs if n in ("multiple_choice", "topk")))
    if codec is None:
        raise UserError(
            f"model '{model.name}' has no tokenizer here, which {kinds} needs (to send token ids "
            "and split context from continuation)",
            where=model.where_of("options"),
            fix="set options.tokenizer to the model's tokenizer (a path or hub id)",
        )
    seq = codec.encode_text("The quick brown fox")
    if facts["server"] == "vllm" and _probe(client, facts, seq, prompt_logprobs=0):
        return "prompt_logprobs"
    if "topk" not in needs and _probe(client, facts, seq, echo=True, logprobs=1):
        return "echo"
    what = "vLLM's prompt_logprobs" + ("" if "topk" in needs else " nor echo + logprobs")
    raise UserError(
        f"the server of model '{model.name}' at {url} returns no prompt log-probs ({what}), "
        f"which {kinds} needs; kdeval will not score them another way",
        where=model.where_of(""),
        fix="serve the model with vLLM, run it on a local backend, or leave those tasks out",
    )


def _probe(client: OpenAI, facts: dict[str, Any], seq: list[int], **ask: Any) -> bool:
    import openai

    body = {"prompt_logprobs": ask.pop("prompt_logprobs")} if "prompt_logprobs" in ask else {}
    try:
        resp = client.completions.create(
            model=facts["model"], prompt=seq, max_tokens=1, temperature=0.0, extra_body=body or None, **ask
        )
    except openai.APIStatusError:
        return False
    choice = resp.choices[0]
    if body:
        got = (choice.model_extra or {}).get("prompt_logprobs")
        return isinstance(got, list) and len(got) == len(seq) and str(seq[-1]) in (got[-1] or {})
    lp = choice.logprobs
    return lp is not None and lp.token_logprobs is not None and len(lp.token_logprobs) >= len(seq)


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
            raise UserError(
                f"{describe(exc, self.model.name, self.url)} (after {self.opts.max_retries} retries); "
                f"{self.finished} requests finished and are stored",
                fix="bring the server back and run the same command: finished requests are not sent again",
            ) from None

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        async def one(i: int, req: Request) -> None:
            out = await (self._choices(req) if isinstance(req, ChoiceRequest) else self._generate(req))
            self.finished += 1
            on_done(i, out)

        self.drive(_all([one(i, r) for i, r in enumerate(requests)]))

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
            self._client = None
        self._loop.close()

    # -- generation -------------------------------------------------------------------------

    def sampling(self, max_tokens: int, stop: Sequence[str] = ()) -> dict[str, Any]:
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
            params["seed"] = s.seed
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
        params = self.sampling(max_tokens, req.stop)
        resp = await self.call(lambda c: c.completions.create(prompt=prompt, **params))
        choice = resp.choices[0]
        usage = resp.usage
        n_prompt = len(prompt) if isinstance(prompt, list) else (usage.prompt_tokens if usage else 0)
        ids = (choice.model_extra or {}).get("token_ids")
        return self._output(text, choice.text or "", ids, req.stop, n_prompt, usage)

    async def _chat(self, req: GenerateRequest) -> Output:
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        params = self.sampling(req.max_tokens, req.stop)
        resp = await self.call(lambda c: c.chat.completions.create(messages=messages, **params))  # type: ignore[arg-type]
        msg = resp.choices[0].message
        extra = msg.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        shown = self.codec.render(req.messages) if self.codec else render_plain(req.messages)
        usage = resp.usage
        out = self._output(
            shown, msg.content or "", None, req.stop, usage.prompt_tokens if usage else 0, usage
        )
        out.reasoning = str(reasoning)
        return out

    def _output(
        self, prompt: str, text: str, ids: list[int] | None, stop: Sequence[str], n_prompt: int, usage: Any
    ) -> Output:
        if self.codec is not None and ids is not None:
            done = self.codec.finish(ids, stop)  # the same ids give the same text as offline
            return Output(prompt, done.text, done.token_ids, [], n_prompt, done.output_tokens)
        text = cut_at_stop(text, stop)[0]
        n_out = usage.completion_tokens if usage else 0
        return Output(prompt, text, [], [], n_prompt, n_out)

    # -- multiple choice --------------------------------------------------------------------

    async def _choices(self, req: Request) -> Output:
        assert isinstance(req, ChoiceRequest) and self.codec is not None
        limit = self.settings.max_model_len
        pairs = self.codec.encode_choices(req)
        seqs = [(choice_sequence(ctx, cont, limit), cont) for ctx, cont in pairs]
        scores = await asyncio.gather(*(self.continuation_logprob(seq, cont) for seq, cont in seqs))
        text = self.codec.render(req.messages)
        return Output(prompt=text, choice_logprobs=list(scores), prompt_tokens=sum(len(s) for s, _ in seqs))

    async def continuation_logprob(self, seq: list[int], cont: list[int]) -> float:
        """Sum of the log-probs of the last len(cont) tokens of seq (lm-eval's loglikelihood)."""
        first = len(seq) - len(cont)
        if self.logprobs == "prompt_logprobs":
            rows = await self.prompt_logprobs(seq, 0)
            return float(sum(rows[first + j][str(t)]["logprob"] for j, t in enumerate(cont)))
        resp = await self.call(
            lambda c: c.completions.create(
                model=self.served, prompt=seq, max_tokens=1, temperature=0.0, echo=True, logprobs=1
            )
        )
        lp = resp.choices[0].logprobs
        assert lp is not None and lp.token_logprobs is not None
        return float(sum(x or 0.0 for x in lp.token_logprobs[first : len(seq)]))

    async def prompt_logprobs(self, seq: list[int], k: int) -> list[dict[str, Any]]:
        """vLLM's prompt_logprobs: per prompt token, {token id: {logprob, rank}} with the top k
        and the actual token (None for the first)."""
        resp = await self.call(
            lambda c: c.completions.create(
                model=self.served,
                prompt=seq,
                max_tokens=1,
                temperature=0.0,
                extra_body={"prompt_logprobs": k},
            )
        )
        rows = (resp.choices[0].model_extra or {}).get("prompt_logprobs")
        if not isinstance(rows, list) or len(rows) != len(seq):
            raise UserError(f"the server of model '{self.model.name}' returned no prompt_logprobs")
        return rows

    def prompt_topk(
        self, seqs: Sequence[list[int]], k: int, on_done: Callable[[int, list[Any]], None]
    ) -> None:
        """The top-k log-probs of every token of every sequence (the trainer's teacher cache)."""

        async def one(i: int, seq: list[int]) -> None:
            rows = await self.prompt_logprobs(seq, k)
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


# -- the cost phase's view --------------------------------------------------------------------


class OpenAIEngine:
    """Latency as a client sees it (streamed: TTFT when the first token arrives), throughput with
    `concurrency` requests in flight; every request asks for exactly output_len tokens (vLLM's
    ignore_eos, as `vllm bench serve --ignore-eos`)."""

    ttft_method = "client side: arrival of the first streamed token"

    def __init__(self, backend: OpenAIBackend) -> None:
        self.b = backend

    def _params(self, output_len: int) -> dict[str, Any]:
        params = self.b.sampling(output_len)
        extra = dict(params.pop("extra_body", {}))
        if self.b.vllm:
            extra.update(ignore_eos=True, return_token_ids=False)
            extra.pop("stop_token_ids", None)
        else:
            extra.setdefault("min_tokens", output_len)
        params["extra_body"] = extra
        return params

    async def _stream(self, prompt: list[int] | str, output_len: int) -> tuple[float, float | None, int]:
        start = time.perf_counter()
        first: float | None = None
        n_out = 0
        params = self._params(output_len)
        stream = await self.b.call(
            lambda c: c.completions.create(
                prompt=prompt, stream=True, stream_options={"include_usage": True}, **params
            )
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text and first is None:
                first = time.perf_counter() - start
            if chunk.usage is not None:
                n_out = chunk.usage.completion_tokens
        return time.perf_counter() - start, first, n_out

    def one(self, prompt: list[int] | str, output_len: int) -> Timing:
        from kdeval.efficiency.probes import Timing

        e2e, ttft, n = self.b.drive(self._stream(prompt, output_len))
        return Timing(e2e, ttft, n)

    def first_token_s(self, prompt: list[int] | str) -> float:
        return self.one(prompt, 1).e2e_s

    def all(self, prompts: list[Any], output_len: int) -> Batch:
        from kdeval.efficiency.probes import Batch

        params = self._params(output_len)
        counts: list[tuple[int, int]] = []

        async def one(prompt: list[int] | str) -> None:
            resp = await self.b.call(lambda c: c.completions.create(prompt=prompt, **params))
            u = resp.usage
            counts.append((u.prompt_tokens, u.completion_tokens) if u else (0, 0))

        start = time.perf_counter()
        self.b.drive(_all([one(p) for p in prompts]))
        elapsed = time.perf_counter() - start
        outs = [c[1] for c in counts]
        return Batch(elapsed, len(prompts), sum(c[0] for c in counts), sum(outs), min(outs), max(outs))


KIND = OpenAIKind()
