"""Processes, devices and precision through Hugging Face accelerate.

`start(cfg)` returns a `Dist`: this process's rank among `world` processes, its device, the
autocast context of `--precision` and fp16's loss scaler, and the collectives the trainer uses.

One process or many, a run trains the same model: every optimizer step takes the same global
batch (batch_size x grad_accum examples, in the epoch's order), split into contiguous shares, one
per process (`share`); each process divides its loss sums by the step's *global* count of valid
tokens, and the gradients are summed over processes once per step (`sum_grads`), so every process
holds the gradient of the per-token mean over the global batch and takes the same AdamW step.
Process count changes only speed and memory (and float summation order).

Launch with `accelerate launch -m kdeval distill ...` (torchrun underneath; gloo on CPU, NCCL on
GPU) or `kdeval distill --num-processes N`, which runs that launcher itself (`launch_command`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdeval.errors import UserError

#: --precision -> accelerate's mixed_precision name.
MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
#: Launcher settings this trainer does not implement (it shards nothing: each process holds the model).
_UNSUPPORTED_ENV = {
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


def launched_world() -> int:
    """Processes of the launch this process belongs to (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_precision(precision: str, device: str) -> None:
    """Precisions the device cannot train in are one line, before any model loads."""
    if precision == "fp16" and device != "cuda":
        raise UserError(
            "--precision fp16 needs a CUDA GPU (fp16 training uses loss scaling on the GPU)",
            fix="use --precision bf16 or fp32 on this machine",
        )
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--precision bf16 is not supported by this GPU", fix="use --precision fp16 or fp32")


def check_launch(precision: str, num_processes: int | None = None) -> None:
    """The launcher's settings (accelerate config, flags, environment) must agree with kdeval's."""
    for var, name in _UNSUPPORTED_ENV.items():
        if os.environ.get(var, "").lower() in ("1", "true"):
            raise UserError(
                f"the accelerate launch asks for {name}, which kdeval distill does not run",
                where=var,
                fix="launch plain data parallelism: accelerate launch --multi_gpu, or --num-processes N",
            )
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower()
    if mixed not in ("", "no", MIXED[precision]):
        raise UserError(
            f"the accelerate launch asks for mixed precision {mixed} but --precision is {precision}",
            where="ACCELERATE_MIXED_PRECISION",
            fix=f"pass --precision {'fp32' if mixed == 'no' else mixed} or launch with "
            f"--mixed_precision {MIXED[precision]}",
        )
    world = launched_world()
    if num_processes is not None and world > 1 and num_processes != world:
        raise UserError(
            f"--num-processes {num_processes} but the launcher started {world} processes",
            fix="drop --num-processes under accelerate launch, or make the two agree",
        )


def check_num_processes(n: int) -> None:
    """At most one process per GPU; on CPU at most one per core this process may use."""
    if n < 1:
        raise UserError(f"--num-processes must be at least 1, got {n}")
    if torch.cuda.is_available():
        have, what = torch.cuda.device_count(), "GPUs"
    else:
        from kdeval.threads import available_cpus

        have, what = available_cpus(), "CPU cores"
    if n > have:
        raise UserError(
            f"--num-processes {n} is more than the {have} {what} here",
            fix=f"pass --num-processes {have} or fewer",
        )


def check_method(method: str, processes: int) -> None:
    """On-policy methods (gkd) run in one process: the student's sampled responses depend on how
    the batch is split, so N processes would not train as one does."""
    from kdeval.distill import methods

    if processes > 1 and methods.get(method).on_policy:
        raise UserError(
            f"--method {method} trains in one process only (its sampled responses depend on the split)",
            fix="drop --num-processes, or launch one process",
        )


def launch_command(argv: Sequence[str], n: int, precision: str) -> list[str]:
    """`accelerate launch` running `python -m kdeval` with `argv` (no --num-processes) in n processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
        "--mixed_precision", MIXED[precision], "--dynamo_backend", "no",
        "-m", "kdeval", *argv,
    ]  # fmt: skip


def strip_flag(argv: Sequence[str], flag: str) -> list[str]:
    """argv without `flag` and its value (as `--flag V` or `--flag=V`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


@dataclass
class Dist:
    accelerator: Any
    precision: str
    scaler: Any = None  # fp16's loss scaler (torch.amp.GradScaler); None otherwise

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.accelerator.device
        return device

    def share(self, ids: Sequence[int]) -> list[int]:
        """This process's contiguous share of a global batch (sizes differ by at most one)."""
        per, extra = divmod(len(ids), self.world)
        start = self.rank * per + min(self.rank, extra)
        return list(ids[start : start + per + (self.rank < extra)])

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients over processes, in one flat all-reduce (a rank with no examples adds 0)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.to(self.device).clone()
        torch.distributed.all_reduce(t)
        return t.cpu()

    def share_cpus(self, threads: int) -> None:
        """Processes on one CPU machine split its cores: `threads` (kdeval.threads' rule for one
        process) divided by the processes here, unless KDEVAL_TORCH_THREADS says otherwise."""
        from kdeval.threads import THREADS_ENV, set_torch_threads

        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        if self.device.type == "cpu" and local > 1 and not os.environ.get(THREADS_ENV, "").strip():
            set_torch_threads(max(1, threads // local))

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. building a cache), then the others."""
        with self.accelerator.main_process_first():
            yield


def start(precision: str) -> Dist:
    """This process's place in the launch, after the bad-input checks."""
    from accelerate import Accelerator

    from kdeval.distill.models import default_device

    device = default_device()
    check_precision(precision, device)
    check_launch(precision)
    # Autocast and the fp16 scaler are set here, not by Accelerator(mixed_precision=...): its state
    # is process-wide and refuses a second precision in one process (tests train several runs).
    accelerator = Accelerator(cpu=device == "cpu")
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return Dist(accelerator, precision, scaler)
