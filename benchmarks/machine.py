"""What the numbers were measured on."""
from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_features() -> list[str]:
    """The vector extensions that decide fp32 matmul speed on x86 (empty elsewhere)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
              "amx_bf16")
    return [flag for flag in wanted if flag in flags]


def memory_total_mib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota, when one is set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]), idle


def cpu_busy_fraction(interval_s: float = 0.5) -> float | None:
    """Share of all CPUs busy over `interval_s` while this process sleeps: what other work is
    taking from the benchmark (0 = an idle machine, 1 = every core taken)."""
    first = _cpu_times()
    time.sleep(interval_s)
    second = _cpu_times()
    if first is None or second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return round(max(0.0, min(1.0, 1.0 - idle / total)), 3)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_info(device: torch.device, threads_default: int, busy_interval_s: float = 0.5
                 ) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": __import__("numpy").__version__,
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "cgroup_cpu_limit": cgroup_cpu_limit(),
        "memory_total_mib": memory_total_mib(),
        "threads": torch.get_num_threads(),
        "threads_default": threads_default,
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "device": str(device),
        "load_average_start": load_average(),
        "cpu_busy_at_start": cpu_busy_fraction(busy_interval_s),
        "cuda": None,
    }
    if torch.cuda.is_available():
        index = device.index if device.type == "cuda" and device.index is not None else 0
        props = torch.cuda.get_device_properties(index)
        info["cuda"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_mib": props.total_memory / 2 ** 20,
            "multiprocessors": props.multi_processor_count,
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    return info
