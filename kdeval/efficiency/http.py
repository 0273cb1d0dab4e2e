"""The cost probes over HTTP, for models behind a server: what a client of the server sees.

Requests go out with aiohttp, the client vLLM's own serving benchmark uses, not with the openai
SDK that serves the quality run: the SDK's per-request work (httpx, response models, retry
wrapper) cost 10-15% of the throughput measured on a 2-core client machine, and that is the
client's cost, not the server's. Latency requests stream, and TTFT is the arrival of the first
chunk that carries a token (as `vllm bench serve` times it); the throughput pass keeps
`concurrency` requests in flight and counts tokens from the server's `usage`. All requests share
one session (kept-alive connections, as `vllm bench serve` does), so no latency sample pays for a
new connection or TLS handshake.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from kdeval.efficiency.probes import Batch, EnginePrompt, Timing

#: (prompt, output_len) -> the request's JSON body
BodyFn = Callable[[EnginePrompt, int], dict[str, Any]]
#: (prompt, max_tokens, stop) -> the JSON body of a request answered in full (EOS not ignored)
AnswerBodyFn = Callable[[EnginePrompt, int, Sequence[str]], dict[str, Any]]


class HTTPEngine:
    ttft_method = "client side: arrival of the first streamed chunk with a token (as vllm bench serve)"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        body: BodyFn,
        concurrency: int,
        timeout_s: float,
        answer_body: AnswerBodyFn | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.body, self.concurrency, self.timeout_s = body, concurrency, timeout_s
        self.answer_body = answer_body
        self._loop = asyncio.new_event_loop()
        self._open: Any = None

    def _session(self) -> Any:
        """The engine's one session, opened inside its loop on first use."""
        if self._open is None:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            self._open = aiohttp.ClientSession(timeout=timeout, connector=connector, headers=self.headers)
        return self._open

    def close(self) -> None:
        if self._open is not None:
            self._loop.run_until_complete(self._open.close())
            self._open = None
        self._loop.close()

    async def _stream(
        self, prompt: EnginePrompt, output_len: int, body: dict[str, Any] | None = None
    ) -> Timing:
        body = {
            **(body or self.body(prompt, output_len)),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        first: float | None = None
        n_out = 0
        session = self._session()
        start = time.perf_counter()
        async with session.post(self.url, json=body) as resp:
            await _check(resp)
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("choices") and first is None:
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    n_out = int(chunk["usage"]["completion_tokens"])
        return Timing(time.perf_counter() - start, first, n_out)

    async def _batch(self, prompts: list[EnginePrompt], output_len: int) -> Batch:
        sem = asyncio.Semaphore(self.concurrency)
        counts: list[tuple[int, int]] = []
        session = self._session()

        async def one(prompt: EnginePrompt) -> None:
            async with sem, session.post(self.url, json=self.body(prompt, output_len)) as resp:
                await _check(resp)
                usage = json.loads(await resp.read()).get("usage") or {}
                counts.append((int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))))

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        elapsed = time.perf_counter() - start
        outs = [c[1] for c in counts]
        return Batch(elapsed, len(prompts), sum(c[0] for c in counts), sum(outs), min(outs), max(outs))

    def one(self, prompt: EnginePrompt, output_len: int) -> Timing:
        return self._loop.run_until_complete(self._stream(prompt, output_len))

    def first_token_s(self, prompt: EnginePrompt) -> float:
        return self.one(prompt, 1).e2e_s

    def all(self, prompts: list[EnginePrompt], output_len: int) -> Batch:
        return self._loop.run_until_complete(self._batch(prompts, output_len))

    def answer(self, prompt: EnginePrompt, max_tokens: int, stop: Sequence[str]) -> Timing:
        if self.answer_body is None:
            raise RuntimeError("this engine was built without a full-answer request body")
        body = self.answer_body(prompt, max_tokens, stop)
        return self._loop.run_until_complete(self._stream(prompt, max_tokens, body))


async def _check(resp: Any) -> None:
    if resp.status != 200:
        text = " ".join((await resp.text()).split())[:200]
        raise RuntimeError(f"the server answered {resp.status} to a cost-phase request: {text}")
