"""Memory figures: parameters and weight bytes from the checkpoint, peak memory while serving.

On CPU the peak is the proportional set size (PSS) of the whole process tree: vLLM serves from
worker processes, so the RSS of the Python process alone misses the model, and summing RSS over
processes counts shared pages (the weights are often mmapped by several) more than once. PSS
splits each shared page between the processes that map it, so the tree's sum is its footprint.

On a GPU the peak is device memory in use (NVML) above what was in use before the engine
started. vLLM reserves most of the device for its KV cache up front, so that peak says little on
its own: the KV-cache reservation and the weights are reported beside it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

MIB = 1024 * 1024
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


# -- the checkpoint ------------------------------------------------------------------------------


def weight_files(path: Path) -> list[Path]:
    """The weight files of a checkpoint directory: safetensors if any, else the other formats
    (a directory may hold both, and only one of them is loaded)."""
    files = sorted(f for f in path.glob("*") if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    safetensors = [f for f in files if f.suffix == ".safetensors"]
    return safetensors or [f for f in files if f.name != "training_args.bin"]


def weight_bytes(path: Path) -> int | None:
    """Bytes of the weight files on disk (None when the directory has none, e.g. a hub id)."""
    files = weight_files(path) if path.is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


def param_count(path: Path) -> int | None:
    """Parameters from the safetensors headers; reads a few KiB, loads no tensor."""
    files = [f for f in weight_files(path) if f.suffix == ".safetensors"] if path.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header: dict[str, Any] = json.loads(fh.read(size))
        for name, meta in header.items():
            if name != "__metadata__":
                n = 1
                for dim in meta["shape"]:
                    n *= dim
                total += n
    return total


# -- the process tree (Linux /proc) --------------------------------------------------------------


def pss_bytes(pid: int) -> int | None:
    """PSS of one process from /proc/PID/smaps_rollup; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_pss_bytes(root: int | None = None) -> int | None:
    """PSS summed over a process and its descendants; None where /proc has no smaps_rollup."""
    if not os.path.exists("/proc/self/smaps_rollup"):
        return None
    sizes = [pss_bytes(pid) for pid in process_tree(os.getpid() if root is None else root)]
    return sum(s for s in sizes if s is not None)


# -- GPU (NVML) ----------------------------------------------------------------------------------


@functools.cache
def nvml() -> Any | None:
    """An initialised NVML module (nvidia-ml-py, or the copy vLLM ships), or None without a GPU."""
    try:  # the driver's library first: importing vLLM's copy loads all of vLLM (seconds)
        ctypes.CDLL("nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1")
    except OSError:
        return None
    for name in ("pynvml", "vllm.third_party.pynvml"):
        try:
            module = importlib.import_module(name)
            module.nvmlInit()
            if module.nvmlDeviceGetCount() > 0:
                return module
        except Exception:  # no bindings, driver or device: all mean "no NVML here"
            continue
    return None


def gpu_used_bytes(lib: Any, index: int = 0) -> int:
    """Device memory in use by every process: vLLM's workers are not this process."""
    return int(lib.nvmlDeviceGetMemoryInfo(lib.nvmlDeviceGetHandleByIndex(index)).used)


def gpu_index() -> int:
    """The device vLLM and torch use first: the first entry of CUDA_VISIBLE_DEVICES, if numeric."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


# -- sampling the peak ---------------------------------------------------------------------------


@dataclass
class Peak:
    """What a PeakSampler saw: bytes before the engine started and the largest sample since."""

    host_before: int | None = None
    host_peak: int | None = None
    gpu_before: int | None = None
    gpu_peak: int | None = None
    samples: int = 0
    notes: list[str] = field(default_factory=list)


class PeakSampler:
    """Samples the process tree's PSS (and GPU memory in use) in a background thread.

    Use as a context manager around the engine's whole life. Reading PSS is not free: the kernel
    walks every page table of every process for /proc/PID/smaps_rollup, about 50 ms of CPU for
    vLLM's three processes on a small CPU machine, so a fixed 50 ms interval kept a core half
    busy and cut the throughput it was measuring by about a fifth. Hence:

    - `pause()` stops sampling (and waits for a sample in flight) while anything is timed; the
      probes sample an untimed full-batch pass instead, where the peak is reached (every request
      in flight), and pause for every timed pass;
    - between samples the thread waits at least `interval_s`, and long enough that sampling
      takes no more than `max_duty` of one core (start-up, which is timed, runs beside it).
    """

    def __init__(self, interval_s: float = 0.05, *, gpu: bool | None = None, max_duty: float = 0.1) -> None:
        self.interval_s = interval_s
        self.max_duty = max_duty
        self.peak = Peak()
        self._lib = nvml() if gpu is not False else None
        self._index = gpu_index()
        self._stop = threading.Event()
        self._active = threading.Event()
        self._busy = threading.Lock()  # held while a sample is taken
        self._thread = threading.Thread(target=self._loop, name="kdeval-memory", daemon=True)

    def __enter__(self) -> PeakSampler:
        self.peak.host_before = tree_pss_bytes()
        if self.peak.host_before is None:
            self.peak.notes.append("no /proc/*/smaps_rollup here: host memory not measured")
        if self._lib is not None:
            self.peak.gpu_before = gpu_used_bytes(self._lib, self._index)
        self._active.set()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._active.set()
        self._thread.join()

    def pause(self) -> None:
        """Stop sampling; returns once no sample is running, so a timed pass starts undisturbed."""
        self._active.clear()
        with self._busy:
            pass

    def resume(self) -> None:
        self.sample()  # catch what happened while paused, at least at its end
        self._active.set()

    def sample(self) -> None:
        with self._busy:
            p = self.peak
            host = tree_pss_bytes() if p.host_before is not None else None
            if host is not None:
                p.host_peak = max(p.host_peak or 0, host)
            if self._lib is not None:
                p.gpu_peak = max(p.gpu_peak or 0, gpu_used_bytes(self._lib, self._index))
            p.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._active.wait()
            if self._stop.is_set():
                break
            start = time.perf_counter()
            self.sample()
            self._stop.wait(pause_after(time.perf_counter() - start, self.interval_s, self.max_duty))
        self.sample()


def pause_after(cost_s: float, interval_s: float, max_duty: float) -> float:
    """Seconds to wait after a sample that took `cost_s`, so sampling uses at most `max_duty`
    of a core (and never waits less than `interval_s`).

    >>> pause_after(0.001, 0.05, 0.1)
    0.05
    >>> round(pause_after(0.05, 0.05, 0.1), 3)
    0.45
    """
    return max(interval_s, cost_s * (1 - max_duty) / max_duty)


def loaded_bytes(n_params: int | None, dtype: str) -> int | None:
    """Weights in memory: parameters × bytes of the dtype they were loaded in."""
    if not n_params:
        return None
    size = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}.get(dtype)
    return n_params * size if size else None


def mib(n: float | None) -> float | None:
    return None if n is None else round(n / MIB, 1)


def memory_figures(
    peak: Peak, *, weights_loaded: int | None, kv_cache: int | None, kv_note: str
) -> tuple[dict[str, float | None], str, list[str]]:
    """(memory_mib, where the peak comes from, notes) for results.json.

    memory_mib keeps the gate's keys (weights, kv_cache, peak) and adds the host side.
    """
    notes = list(peak.notes)
    gpu_delta = None
    if peak.gpu_peak is not None and peak.gpu_before is not None:
        gpu_delta = peak.gpu_peak - peak.gpu_before
    source = "nvml" if gpu_delta is not None else "pss"
    if source == "pss":
        notes.append("no GPU: peak is the PSS of the process tree; GPU device memory not measured")
    else:
        notes.append("peak is device memory in use (NVML) above the level before the engine started")
    if kv_note:
        notes.append(kv_note)
    figures = {
        "weights": mib(weights_loaded),
        "kv_cache": mib(kv_cache),
        "peak": mib(gpu_delta if gpu_delta is not None else peak.host_peak),
        "host_peak": mib(peak.host_peak),
        "host_before": mib(peak.host_before),
    }
    return figures, source, notes
