"""A real vLLM OpenAI-compatible server for the tests, and a fault-injecting proxy in front of it.

Both listen on 127.0.0.1 only. The server is the installed vLLM's own entry point (one per test
session: it takes ~30-60 s to start on 2 cores); the proxy is a small aiohttp app that forwards to
it and, on a schedule, answers 429 with Retry-After, 500, stalls past the client's timeout, drops
the connection, or refuses log-prob requests (an endpoint without log-probs). Every proxy stops
with its test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a model directory, on loopback."""

    def __init__(
        self, model: Path, log: Path, start_timeout_s: float = 300.0, extra_args: list[str] | None = None
    ) -> None:
        self.model, self.log, self.timeout = model, log, start_timeout_s
        self.extra_args = list(extra_args or [])
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VLLMServer:
        argv = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager", "--max-model-len", "2048",
            "--dtype", "float32", "--max-logprobs", "32", *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        with self.log.open("ab") as fh:
            # Its own process group, so kill() takes the engine-core process with it; not its own
            # session: Linux schedules each session as one group (autogroup), and a server in a
            # session of its own served a client's load up to ten times slower here.
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, process_group=0)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.kill()
        raise RuntimeError(f"vLLM server did not start in {self.timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL the server and its engine (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


@dataclass
class Faults:
    """Which fault the proxy injects on the n-th request (a cycle of `every` requests).

    A request on the schedule gets its fault on its first attempt; a retry of it, being a new
    request, falls where the count puts it. `stall_s` should exceed the client's timeout."""

    every: int = 0  # 0: no faults
    at: dict[int, str] = field(default_factory=dict)  # position in the cycle -> 429 | 500 | stall | drop
    stall_s: float = 4.0
    no_logprobs: bool = False  # refuse echo / prompt_logprobs with 400, as an endpoint without them
    counts: dict[str, int] = field(default_factory=dict)

    def pick(self, n: int) -> str:
        if not self.every:
            return "forward"
        return self.at.get(n % self.every, "forward")


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in a thread of its own; stops when the test ends (`with`)."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:PORT (no /v1)
        self.faults = faults
        self.port = free_port()
        self._n = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web

        body = await request.read()
        f = self.faults
        if f.no_logprobs and (
            b'"echo": true' in body or b'"echo":true' in body or b"prompt_logprobs" in body
        ):
            return web.json_response({"error": {"message": "logprobs are not supported"}}, status=400)
        fault = "forward" if request.path.endswith("/models") else f.pick(self._n)
        self._n += 1
        f.counts[fault] = f.counts.get(fault, 0) + 1
        if fault == "429":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "1"}
            )
        if fault == "500":
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if fault == "stall":
            await asyncio.sleep(f.stall_s)
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.abort()  # no response at all: the client sees the connection drop
            raise asyncio.CancelledError
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as up,
        ):
            data = await up.read()
            return web.Response(body=data, status=up.status, content_type=up.content_type)
