"""The training loop: AdamW, linear schedule, gradient accumulation, checkpoints and `--resume`.

`train(config)` is the whole job: it reads the data, sets up the teacher source (a dense teacher
run alongside, or the top-k cache written once), trains the student, and writes OUT as a normal
Hugging Face model directory plus train_log.jsonl, loss_curve.png, distill_config.yaml and
distill_summary.json.

Under a multi-process launch (kdeval.distill.accel) every process runs this loop on its share of
each global batch; only the main process writes files (log, checkpoints, model), and every process
restores a checkpoint the same way, so `--resume` works whatever the process count.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdeval.datafiles import write_atomic
from kdeval.distill.accel import Dist, check_method, start
from kdeval.distill.checkpoint import (
    CHECKPOINTS,
    Position,
    epoch_order,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from kdeval.distill.config import CONFIG_FILE, DistillConfig
from kdeval.distill.data import TokenizedExample, collate
from kdeval.distill.lora import save_student
from kdeval.distill.outputs import CURVE, TrainLog, plot_curve, read_summary, write_summary
from kdeval.distill.setup import Setup, prepare
from kdeval.errors import UserError
from kdeval.threads import count_params, using_torch_threads

if TYPE_CHECKING:
    from tqdm import tqdm

#: Called after each optimizer step with (step, loss); raising from it stops the run (tests use
#: this to simulate a crash between checkpoints).
StepHook = Callable[[int, float], None]
#: Seconds of a monotonic clock; the time-based checkpoints read it (tests pass their own).
Clock = Callable[[], float]
#: Settings that may change between a run and its resumption without changing its result.
_RESUMABLE = (
    "checkpoint_every",
    "checkpoint_minutes",
    "keep_checkpoints",
    "topk_shard",
    "gradient_checkpointing",
    "save_adapter",
)
#: Teacher caches a fresh run may find in OUT (they check their own validity).
_CACHES = ("teacher_topk", "teacher_responses.jsonl")


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    tokens: int  # valid target (response) tokens trained on, all epochs
    seconds: float  # training loop time, excluding loading and the top-k cache
    resumed_from: int | None = None  # the checkpoint's step when resumed

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def train(
    cfg: DistillConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: StepHook | None = None,
    clock: Clock = time.monotonic,
) -> TrainResult:
    """Train the student as `cfg` says; with `resume`, continue from OUT's last checkpoint.

    Checkpoints are written every `checkpoint_every` steps and, between those, whenever
    `checkpoint_minutes` passed since the last one (by `clock`), so a `kill -9` loses at most
    that much training (plus the step under way). Every checkpoint holds the whole state, so
    resuming from any of them ends with the same weights as an uninterrupted run."""
    dist = start(cfg.precision)
    check_method(cfg.method, dist.world)
    out = cfg.out_dir
    done = _check_out(out, cfg, resume)
    dist.barrier()  # every process looked at OUT before the main one writes to it
    if done is not None:
        return done
    torch.manual_seed(cfg.seed)
    progress = progress and dist.main
    with dist.main_first():  # caches (top-k, seqkd answers) are built once, by the main process
        run = prepare(cfg, progress=progress, device=dist.device)
    optimizer, scheduler, total = _optimizer(cfg, run)
    position, resumed_from = Position(), None
    checkpoints = list_checkpoints(out) if resume else []
    if checkpoints:
        position = load_checkpoint(checkpoints[-1], run.student, optimizer, scheduler)
        resumed_from = position.global_step
    dist.barrier()  # every process read the checkpoint before the main one may replace it
    log = TrainLog(out) if dist.main else _NoLog(out)
    log.rewind(position.global_step)
    if dist.main:
        write_atomic(out / CONFIG_FILE, cfg.to_yaml())
    saver = _Saver(cfg, run, optimizer, scheduler, clock, enabled=dist.main)
    teacher = getattr(run.objective.teacher, "model", None)  # a dense teacher runs in this process
    with using_torch_threads(count_params([run.student, teacher])) as threads:  # kdeval.threads' rule
        dist.share_cpus(threads)
        last = _loop(cfg, run, optimizer, scheduler, total, position, log, progress, on_step, saver, dist)
    result = _finish(cfg, run, position, log, last, resumed_from, dist)
    dist.barrier()  # OUT is complete when any process returns
    return result


class _NoLog(TrainLog):
    """The log as a non-main process sees it: read-only (the main process writes it)."""

    def rewind(self, step: int) -> None:
        pass

    def append(self, record: dict[str, Any]) -> None:
        pass


def trainable(run: Setup) -> list[torch.nn.Parameter]:
    """The parameters AdamW updates: all of the student's, or a LoRA adapter's."""
    return [p for p in run.student.parameters() if p.requires_grad]


def _check_out(out: Path, cfg: DistillConfig, resume: bool) -> TrainResult | None:
    """Refuse to mix runs in one folder; a finished run asked to resume is returned as is."""
    if not resume:
        if out.exists() and any(p.name not in _CACHES for p in out.iterdir()):
            raise UserError(
                "output folder is not empty",
                where=str(out),
                fix="pass --resume to continue it, or a new --out",
            )
        return None
    saved = out / CONFIG_FILE
    if saved.is_file():
        import yaml

        old = yaml.safe_load(saved.read_text())
        new = cfg.model_dump(mode="json")
        diff = [k for k in new if k not in _RESUMABLE and old.get(k) != new[k]]
        if diff:
            raise UserError(
                f"--resume with different settings ({', '.join(diff)})",
                where=str(saved),
                fix="resume with the settings of the interrupted run, or train into a new --out",
            )
    summary = read_summary(out)
    if summary is None:
        return None
    return TrainResult(out, summary["steps"], summary["final_loss"], summary["tokens"], summary["seconds"])


def _optimizer(cfg: DistillConfig, run: Setup) -> tuple[torch.optim.Optimizer, Any, int]:
    """AdamW with linear warm-up and linear decay to zero (the Hugging Face default schedule)."""
    per_epoch = math.ceil(math.ceil(len(run.train) / cfg.batch_size) / cfg.grad_accum)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)
    warmup = math.ceil(cfg.warmup_ratio * total)
    optimizer = torch.optim.AdamW(trainable(run), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), total


def _loop(
    cfg: DistillConfig,
    run: Setup,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    total: int,
    position: Position,
    log: TrainLog,
    progress: bool,
    on_step: StepHook | None,
    saver: _Saver,
    dist: Dist,
) -> float:
    """Train from `position` to the end; returns the last step's loss."""
    bar = _bar(total, position.global_step, progress)
    last = math.nan
    run.student.train()
    per_step = cfg.batch_size * cfg.grad_accum  # the global batch, whatever the process count
    while position.epoch < cfg.epochs and position.global_step < total:
        order = epoch_order(len(run.train), cfg.seed, position.epoch)
        steps = [order[i : i + per_step] for i in range(0, len(order), per_step)]
        for s in range(position.step_in_epoch, len(steps)):
            if position.global_step >= total:
                break
            started = time.perf_counter()
            stats = _step(cfg, run, optimizer, scheduler, steps[s], dist, position.global_step)
            position.seconds += time.perf_counter() - started
            position.global_step, position.step_in_epoch = position.global_step + 1, s + 1
            position.tokens += stats["tokens"]
            last = stats["loss"]
            log.append(
                {
                    "kind": "train",
                    "step": position.global_step,
                    "epoch": position.epoch,
                    **stats,
                    "seconds": round(position.seconds, 3),
                }
            )
            bar.set_postfix(loss=f"{last:.4f}", tok_s=f"{position.tokens / max(position.seconds, 1e-9):.0f}")
            bar.update(1)
            saver.after_step(position)
            if on_step is not None:
                on_step(position.global_step, last)
        if position.step_in_epoch >= len(steps):
            position.epoch, position.step_in_epoch = position.epoch + 1, 0
        if position.global_step < total:  # the final evaluation is _finish's
            _validate(cfg, run, position, log, dist)
    bar.close()
    return last


class _Saver:
    """Decides after each optimizer step whether to write a checkpoint: every `checkpoint_every`
    steps, or once `checkpoint_minutes` passed since the last one (or since training started)."""

    def __init__(
        self,
        cfg: DistillConfig,
        run: Setup,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        clock: Clock,
        enabled: bool = True,
    ) -> None:
        self.cfg, self.run, self.optimizer, self.scheduler, self.clock = cfg, run, optimizer, scheduler, clock
        self.enabled = enabled  # the main process writes; every process holds the same state
        self.last = clock()

    def due(self, step: int) -> bool:
        every, minutes = self.cfg.checkpoint_every, self.cfg.checkpoint_minutes
        by_count = bool(every) and step % every == 0
        return by_count or (minutes > 0 and self.clock() - self.last >= 60.0 * minutes)

    def after_step(self, position: Position) -> None:
        if self.enabled and self.due(position.global_step):
            save_checkpoint(self.cfg.out_dir, position, self.run.student, self.optimizer, self.scheduler)
            self.last = self.clock()


def _step(
    cfg: DistillConfig,
    run: Setup,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ids: list[int],
    dist: Dist,
    step: int = 0,
) -> dict[str, Any]:
    """One optimizer step on the global batch `ids`: this process's share, then the summed gradient."""
    mine = dist.share(ids)
    micro = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    # valid targets of the global batch; an on-policy method (one process) counts its written responses
    n_tokens = None if run.on_policy is not None else sum(run.train[i].n_response for i in ids)
    sums, n_tokens = accumulate(run, micro, n_tokens, dist, step)
    params = trainable(run)
    dist.sum_grads(params)
    sums = dist.sum(sums)
    if dist.scaler is not None:
        dist.scaler.unscale_(optimizer)
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    if dist.scaler is not None:
        dist.scaler.step(optimizer)
        dist.scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    n = max(n_tokens, 1)
    loss = float(run.spec.combine(sums, n))
    return {"loss": loss, "ce": float(sums[0]) / n, "div": float(sums[1]) / n, "lr": lr, "tokens": n_tokens}


def accumulate(
    run: Setup,
    micro: Sequence[Sequence[int]],
    n_tokens: int | None = None,
    dist: Dist | None = None,
    step: int = 0,
) -> tuple[torch.Tensor, int]:
    """Backward over the micro-batches of one optimizer step; returns ([CE, div] sums, tokens).

    Each micro-batch's loss sum is divided by the valid tokens of the whole step (`n_tokens`, the
    global batch's under several processes; default: these micro-batches'), so the accumulated
    gradient is the per-token mean over the step however it is split: two micro-batches of one
    example give the gradient of one micro-batch of two, and two processes that of one. With an
    on-policy method (gkd) the student first writes the responses of some micro-batches (`step`
    seeds that).
    """
    batches = [collate(_examples(run, ids, step, j), run.pad_id) for j, ids in enumerate(micro)]
    if n_tokens is None:
        n_tokens = sum(b.n_targets for b in batches)
    sums = torch.zeros(2)
    for ids, batch in zip(micro, batches, strict=True):
        with dist.autocast() if dist is not None else contextlib.nullcontext():
            part = run.objective.loss_sums(batch, ids)  # float32 sums, whatever the precision
        loss = run.spec.combine(part, max(n_tokens, 1))
        if dist is not None:
            dist.backward(loss)
        else:
            loss.backward()
        sums += part.detach().float().cpu()
    return sums, n_tokens


def _examples(run: Setup, ids: Sequence[int], step: int, micro: int) -> list[TokenizedExample]:
    """The micro-batch's examples; for gkd, possibly with student-written responses."""
    examples = [run.train[i] for i in ids]
    if run.on_policy is None:
        return examples
    return run.on_policy.examples(run.student, examples, step, micro)


def _validate(cfg: DistillConfig, run: Setup, position: Position, log: TrainLog, dist: Dist) -> None:
    """CE of the student on the validation responses: one number comparable across methods
    (computed and logged by the main process)."""
    if not run.valid or not dist.main:
        return
    with dist.autocast():
        ce, n = evaluate_ce(run, run.valid, max(cfg.batch_size, 8))
    log.append({"kind": "valid", "step": position.global_step, "epoch": position.epoch, "valid_ce": ce / n})
    run.student.train()


def evaluate_ce(run: Setup, examples: Sequence[TokenizedExample], batch_size: int) -> tuple[float, int]:
    """(summed CE, tokens) of the student on `examples`' response tokens."""
    run.student.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], run.pad_id)
            total += float(run.objective.loss_sums(batch, [], ce_only=True)[0])
            n += batch.n_targets
    return total, n


def _finish(
    cfg: DistillConfig,
    run: Setup,
    position: Position,
    log: TrainLog,
    last: float,
    resumed_from: int | None,
    dist: Dist,
) -> TrainResult:
    out = cfg.out_dir
    if math.isnan(last):  # resumed at the very end: take the loss from the log
        last = next((r["loss"] for r in reversed(list(log.records())) if r.get("kind") == "train"), math.nan)
    result = TrainResult(out, position.global_step, last, position.tokens, position.seconds, resumed_from)
    if not dist.main:
        return result
    _validate(cfg, run, position, log, dist)
    save_student(run.student, out, cfg.save_adapter)
    run.tokenizer.save_pretrained(out)
    plot_curve(log, out / CURVE, f"{cfg.method}: {Path(cfg.student).name}")
    write_summary(
        out,
        {
            "steps": result.steps,
            "final_loss": last,
            "tokens": result.tokens,
            "seconds": result.seconds,
            "tokens_per_s": result.tokens_per_s,
            "method": cfg.method,
            "processes": dist.world,
            "precision": cfg.precision,
        },
    )
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return result


def _bar(total: int, initial: int, enabled: bool) -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc="distill",
        unit="step",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
