"""Latency and throughput probes, measured the way vLLM's own benchmarks measure them.

- Latency: after warm-up, batch-1 requests one at a time over a fixed sample of prompts; each
  request's end-to-end time, time to first token (TTFT) and time per output token
  TPOT = (E2E - TTFT) / (output tokens - 1), as vLLM's serving benchmark defines it.
- Throughput: every prompt submitted at once; requests/s, output tokens/s and total
  (prompt + output) tokens/s, the tokens counted from the engine's outputs (`vllm bench
  throughput` does the same; its `tokens_per_second` is the total).
- Every request generates exactly `output_len` tokens (EOS ignored), so models are compared on
  the same amount of work and not on how early each one happens to stop.

The memory sampler watches only the untimed warm-up (its full-batch pass reaches the peak) and
is paused while anything is timed.

How many times the passes repeat: a fixed `repeats` when set; otherwise (the default) until the
figures are stable or the time budget is spent (`stop_reason`): after at least `min_repeats`,
stop once the relative spread ((max - min) / median) of the latency p50 and of output tokens/s
over the last `window` repeats are both within `noisy_spread` ("stable"); or when one more
repeat, at the mean pace so far, would take the timed passes past `budget_s` ("budget"); or
at `max_repeats` ("max_repeats"). In that adaptive mode the figures come from the last `window`
repeats (the earlier ones only warmed the machine up further); with a fixed count, from all.
Latency percentiles pool the requests of those repeats (more samples for p99); throughput is
their median repeat. Each headline figure also gets its min / median / max over them, and a
spread above `noisy_spread` flags the run as noisy. `repeats` in the figures records what was
done: repeats run, repeats used, why it stopped, the budget and the threshold.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Timing:
    """One batch-1 request. ttft_s is None when the engine cannot tell (then it is probed apart)."""

    e2e_s: float
    ttft_s: float | None
    output_tokens: int


@dataclass(frozen=True)
class Batch:
    """One all-at-once pass: wall time and the token counts the engine reported."""

    elapsed_s: float
    requests: int
    prompt_tokens: int
    output_tokens: int
    fewest_output_tokens: int  # of one request: with EOS ignored, all requests make the same number
    most_output_tokens: int


#: A prompt as an engine takes it: token ids, or text for a server without a local tokenizer.
EnginePrompt = Any


class Engine(Protocol):
    """What the probes need from a backend (each backend kind's `cost_engine`)."""

    #: how TTFT is obtained, recorded in results.json
    ttft_method: str

    def one(self, prompt: EnginePrompt, output_len: int) -> Timing: ...

    def first_token_s(self, prompt: EnginePrompt) -> float: ...

    def all(self, prompts: list[EnginePrompt], output_len: int) -> Batch: ...

    def answer(self, prompt: EnginePrompt, max_tokens: int, stop: Sequence[str]) -> Timing:
        """One batch-1 request answered in full: until EOS (or a stop string), within max_tokens."""
        ...


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass(frozen=True)
class ProbeConfig:
    output_len: int = 128  # vLLM's `bench latency` default
    warmup: int = 3
    repeats: int | None = None  # a fixed number of repeats; None: adaptive (see the module doc)
    noisy_spread: float = 0.10  # (max - min) / median over repeats: the stability threshold
    min_repeats: int = 2
    max_repeats: int = 10
    budget_s: float = 30.0  # seconds of timed passes per model (adaptive mode)
    window: int = 3  # the last repeats the stability test and the figures look at


def stop_reason(
    p50s: Sequence[float], tps: Sequence[float], elapsed_s: float, cfg: ProbeConfig
) -> str | None:
    """Why the repeats stop after these ones ("fixed", "stable", "max_repeats", "budget"), or None
    to run another. `p50s` and `tps` hold one latency p50 and one output tokens/s per repeat so
    far; `elapsed_s` is the time the timed passes took.

    >>> cfg = ProbeConfig(min_repeats=2, budget_s=60)
    >>> stop_reason([10.0], [100.0], 5, cfg) is None          # fewer than min_repeats
    True
    >>> stop_reason([10.0, 10.5], [100.0, 98.0], 10, cfg)      # within 10% over the last repeats
    'stable'
    >>> stop_reason([10.0, 14.0], [100.0, 98.0], 10, cfg) is None
    True
    >>> stop_reason([10.0, 14.0], [100.0, 98.0], 45, cfg)      # a third repeat would pass 60 s
    'budget'
    """
    n = len(p50s)
    if cfg.repeats is not None:
        return "fixed" if n >= cfg.repeats else None
    if n < max(1, cfg.min_repeats):
        return None
    last_p50, last_tps = p50s[-cfg.window :], tps[-cfg.window :]
    if n > 1 and max(relative_spread(last_p50), relative_spread(last_tps)) <= cfg.noisy_spread:
        return "stable"
    if n >= cfg.max_repeats:
        return "max_repeats"
    if elapsed_s + elapsed_s / n > cfg.budget_s:
        return "budget"
    return None


# -- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks, as numpy.percentile's default.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([10.0], 99)
    10.0
    >>> round(percentile(list(range(1, 101)), 90), 6)
    90.1
    """
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p90 / p99 in milliseconds (the keys the gate's latency rules read)."""
    ms = [1000 * s for s in seconds]
    return {
        "mean": _r(statistics.fmean(ms)),
        "p50": _r(percentile(ms, 50)),
        "p90": _r(percentile(ms, 90)),
        "p99": _r(percentile(ms, 99)),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of a figure over repeats.

    >>> spread([3.0, 1.0, 2.0])
    {'min': 1.0, 'median': 2.0, 'max': 3.0}
    """
    return {"min": _r(min(values)), "median": _r(statistics.median(values)), "max": _r(max(values))}


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median; 0 for a single value.

    >>> relative_spread([95.0, 100.0, 110.0])
    0.15
    """
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def noisy_warnings(figures: dict[str, Sequence[float]], threshold: float) -> list[str]:
    """One warning per figure whose repeats disagree by more than `threshold` of their median."""
    out = []
    for name, values in figures.items():
        if len(values) > 1 and relative_spread(values) > threshold:
            out.append(
                f"{name} varied by {100 * relative_spread(values):.0f}% across {len(values)} repeats "
                f"(more than {100 * threshold:.0f}%): the machine was busy or throttling; "
                "re-run on a quiet machine before trusting small differences"
            )
    return out


def _r(x: float) -> float:
    return round(x, 3)


# -- the passes ----------------------------------------------------------------------------------


def latency_pass(engine: Engine, prompts: list[EnginePrompt], output_len: int) -> list[Timing]:
    """Batch-1 requests one after another; TTFT probed by a separate request if the engine has none."""
    timings = []
    for prompt in prompts:
        t = engine.one(prompt, output_len)
        if t.ttft_s is None:
            t = Timing(t.e2e_s, engine.first_token_s(prompt), t.output_tokens)
        timings.append(t)
    return timings


def tpot_s(t: Timing) -> float | None:
    """Time per output token after the first: (E2E - TTFT) / (n - 1)."""
    if t.ttft_s is None or t.output_tokens < 2:
        return None
    return max(0.0, t.e2e_s - t.ttft_s) / (t.output_tokens - 1)


def throughput(b: Batch) -> dict[str, float]:
    total = b.prompt_tokens + b.output_tokens
    return {
        "requests_per_s": _r(b.requests / b.elapsed_s),
        "tokens_per_s": _r(total / b.elapsed_s),  # total tokens, as vLLM's tokens_per_second
        "output_tokens_per_s": _r(b.output_tokens / b.elapsed_s),
        "total_tokens_per_s": _r(total / b.elapsed_s),
        "elapsed_s": _r(b.elapsed_s),
    }


def median_throughput(batches: Sequence[Batch]) -> dict[str, float]:
    """Each throughput figure's median over the repeats."""
    each = [throughput(b) for b in batches]
    return {k: _r(statistics.median(f[k] for f in each)) for k in each[0]}


def warm_up(
    engine: Engine,
    latency: list[EnginePrompt],
    batch: list[EnginePrompt],
    cfg: ProbeConfig,
    *,
    full_batch: bool,
) -> None:
    """Batch-1 requests, then one all-at-once pass: the first calls of an engine allocate
    buffers and pick kernels, and must not be timed.

    With `full_batch` the all-at-once pass submits every throughput prompt, even without
    warm-up requests: it is the untimed pass the memory sampler watches, and the peak is reached
    with every request in flight. Otherwise a small batch warms the batched path up."""
    for prompt in (latency * cfg.warmup)[: cfg.warmup]:
        engine.one(prompt, cfg.output_len)
    if full_batch:
        engine.all(batch, cfg.output_len)
    elif cfg.warmup:
        engine.all(batch[: min(8, len(batch))], cfg.output_len)


def run_probes(
    engine: Engine,
    latency_prompts: list[EnginePrompt],
    batch_prompts: list[EnginePrompt],
    cfg: ProbeConfig,
    sampler: Pausable | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Warm up, then (latency pass, throughput pass) repeated until `stop_reason` says stop; the
    figures for results.json.

    The memory sampler runs through the warm-up (whose full-batch pass reaches the peak) and is
    paused for every timed pass: reading /proc costs CPU that the requests need, and sampling
    during the throughput pass made it up to a fifth slower than `vllm bench throughput`."""
    warm_up(engine, latency_prompts, batch_prompts, cfg, full_batch=sampler is not None)
    runs: list[list[Timing]] = []
    p50s: list[float] = []
    tps: list[float] = []
    batches: list[Batch] = []
    if sampler:
        sampler.pause()
    start = clock()
    try:
        while True:
            run = latency_pass(engine, latency_prompts, cfg.output_len)
            runs.append(run)
            p50s.append(1000 * percentile([t.e2e_s for t in run], 50))
            batches.append(engine.all(batch_prompts, cfg.output_len))
            tps.append(batches[-1].output_tokens / batches[-1].elapsed_s)
            stopped = stop_reason(p50s, tps, clock() - start, cfg)
            if stopped is not None:
                break
    finally:
        if sampler:
            sampler.resume()
    used = len(runs) if cfg.repeats is not None else min(cfg.window, len(runs))
    timings = [t for run in runs[-used:] for t in run]
    figures = _figures(timings, p50s[-used:], batches[-used:], cfg, engine.ttft_method)
    figures["repeats"] |= {
        "n": len(runs),
        "used": used,
        "stopped": stopped,
        "elapsed_s": _r(clock() - start),
        "budget_s": None if cfg.repeats is not None else cfg.budget_s,
        "threshold": cfg.noisy_spread,
    }
    return figures


def _figures(
    timings: list[Timing], p50s: list[float], batches: list[Batch], cfg: ProbeConfig, ttft_method: str
) -> dict[str, Any]:
    tps = [b.output_tokens / b.elapsed_s for b in batches]
    tpots = [x for x in map(tpot_s, timings) if x is not None]
    ttfts = [t.ttft_s for t in timings if t.ttft_s is not None]
    out_tokens = [t.output_tokens for t in timings]
    out_tokens += [n for b in batches for n in (b.fewest_output_tokens, b.most_output_tokens)]
    warnings = noisy_warnings({"latency p50": p50s, "output tokens/s": tps}, cfg.noisy_spread)
    if min(out_tokens) != cfg.output_len or max(out_tokens) != cfg.output_len:
        warnings.append(
            f"requests produced {min(out_tokens)}–{max(out_tokens)} output tokens, not {cfg.output_len}: "
            "the context window cut them short"
        )
    return {
        "latency_ms": summary_ms([t.e2e_s for t in timings]),
        "ttft_ms": summary_ms(ttfts) if ttfts else None,
        "tpot_ms": summary_ms(tpots) if tpots else None,
        "throughput": median_throughput(batches),
        "output_tokens": {"min": min(out_tokens), "max": max(out_tokens), "requested": cfg.output_len},
        "repeats": {
            "n": len(p50s),
            "latency_p50_ms": spread(p50s),
            "output_tokens_per_s": spread(tps),
        },
        "noisy": any("varied" in w for w in warnings),
        "warnings": warnings,
        "ttft_method": ttft_method,
    }


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """fn(*args) and its wall time in seconds (perf_counter, as vLLM's benchmarks)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start
