"""The `openai` backend: a model behind any OpenAI-compatible server (`vllm serve` across GPUs and
nodes, SGLang, TGI, Azure AI, OpenAI).

This module holds the options and the checks made before anything runs (the server answers, the
model is served, the key is set, log-probs exist where the tasks need them); the client that
serves requests is kdeval.backends.openai_client, the cost probes kdeval.efficiency.http.

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

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdeval.backends.base import Backend, GenerationSettings
from kdeval.backends.prompting import PromptCodec
from kdeval.backends.registry import BackendKind, Needs, ResolvedModel
from kdeval.errors import UserError

if TYPE_CHECKING:
    from openai import OpenAI

    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.probes import Engine

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

    def public_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """base_url without user:password@ or a query string, where keys sometimes hide."""
        return {**options, "base_url": safe_url(options["base_url"])}

    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        from kdeval.backends.openai_client import OpenAIBackend

        return OpenAIBackend(model)

    def cost_engine(self, backend: Backend) -> Engine:
        from kdeval.backends.openai_client import OpenAIBackend
        from kdeval.efficiency.http import HTTPEngine

        assert isinstance(backend, OpenAIBackend)
        b = backend
        engine = HTTPEngine(
            b.opts.base_url, b.api_key, b.cost_body, b.opts.concurrency, b.opts.timeout, b.answer_body
        )
        b.closers.append(engine.close)  # its session goes with the backend
        return engine

    def engine_settings(self, backend: Backend) -> dict[str, Any]:
        from kdeval.backends.openai_client import OpenAIBackend

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


KIND = OpenAIKind()
