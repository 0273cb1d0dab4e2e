"""Checkpoints for `--resume`: everything that decides the rest of a run, in one file per step.

A checkpoint holds the student's weights, the optimizer and scheduler state, the RNG state and the
loop position (epoch, step within the epoch). The data order of an epoch is a pure function of
(seed, epoch), so the position alone restores it. Files are written to a temporary name and
renamed, so a `kill -9` leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class Position:
    """Where the training loop is: after `global_step` optimizer steps."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in `epoch`
    tokens: int = 0  # valid target tokens trained on so far
    seconds: float = 0.0  # training time so far (excluding set-up), for tokens/s


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: depends on (seed, epoch) only, so resumable."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=gen)]


def save_checkpoint(
    out: Path,
    position: Position,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    keep: int = 1,
) -> Path:
    """Write OUT/checkpoints/step-N.pt atomically and drop all but the newest `keep`."""
    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{position.global_step:08d}.pt"
    tmp = folder / f".{path.name}.tmp"
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "position": asdict(position),
    }
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(out)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> Position:
    """Restore model, optimizer, scheduler and RNG in place; return the loop position."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Position(**state["position"])
