"""Peak memory (and time) of one KD loss forward + backward, with and without chunking.

    python benchmarks/bench_loss_memory.py [--tokens 2048] [--vocab 32000] [--hidden 256] [--chunk 256]

Each variant runs in a fresh process so the peak of one cannot hide the other. On CUDA the peak is
torch.cuda.max_memory_allocated above what was allocated once the inputs existed. On CPU it is the
process's maximum resident memory above the same point (ru_maxrss), measured with a fixed glibc
mmap threshold: by default glibc raises that threshold after large frees and then keeps freed
chunks in its heap, so the RSS would show allocator caching rather than live tensors. That
setting slows allocation, so the seconds come from a second run with the default allocator.
The unchunked variant is the same code with one chunk holding every token, i.e. the usual
tokens x vocabulary logits.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(tokens: int, vocab: int, hidden: int, chunk: int, device: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from kdeval.distill.losses import LossSpec, TeacherTarget, chunked_loss_sums

    g = torch.Generator().manual_seed(0)
    h = (torch.randn(tokens, hidden, generator=g) / hidden**0.5).to(device).requires_grad_(True)
    w_s = (torch.randn(vocab, hidden, generator=g)).to(device).requires_grad_(True)
    h_t = torch.randn(tokens, hidden, generator=g).to(device) / hidden**0.5
    w_t = torch.randn(vocab, hidden, generator=g).to(device)
    targets = torch.randint(0, vocab, (tokens,), generator=g).to(device)
    spec = LossSpec("kd", temperature=2.0, alpha=0.5)

    def teacher(a: int, b: int) -> TeacherTarget:  # a dense teacher projected chunk by chunk
        return TeacherTarget(F.log_softmax(F.linear(h_t[a:b], w_t) / 2.0, -1))

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    sums = chunked_loss_sums(spec, h, lambda x: F.linear(x, w_s), targets, teacher, chunk)
    spec.combine(sums, tokens).backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "peak_mib": peak / 2**20,
        "seconds": time.perf_counter() - start,
        "loss": float(sums.detach().sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048, help="valid tokens in the batch (batch x length)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child is not None:  # one measurement, in this fresh process
        print(json.dumps(measure(args.tokens, args.vocab, args.hidden, args.child, args.device)))
        return
    one = args.tokens * args.vocab * 4 / 2**20
    print(
        f"tokens={args.tokens} vocab={args.vocab} hidden={args.hidden} device={args.device}; "
        f"one float32 tokens x vocab tensor = {one:.0f} MiB"
    )
    print("| variant | chunk | peak MiB | seconds | loss |\n|---|---:|---:|---:|---:|")
    for name, chunk in (("unchunked", args.tokens), ("chunked", args.chunk)):
        cmd = [sys.executable, __file__, "--tokens", str(args.tokens), "--vocab", str(args.vocab)]
        cmd += ["--hidden", str(args.hidden), "--device", args.device, "--child", str(chunk)]
        mem = _child(cmd, {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
        timed = _child(cmd, {}) if args.device == "cpu" else mem
        print(f"| {name} | {chunk} | {mem['peak_mib']:.0f} | {timed['seconds']:.2f} | {mem['loss']:.6f} |")


def _child(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    import os

    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    result: dict[str, float] = json.loads(done.stdout)
    return result


if __name__ == "__main__":
    main()
