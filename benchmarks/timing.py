"""Repeated timing of one step, and the matmul peak that makes model throughput comparable."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for queued device work, so a timer sees the real end of a step."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


@dataclass
class Timing:
    """Seconds per step over `repeats` samples; each sample averages `iterations` steps."""
    warmup: int
    iterations: int
    repeats: int
    median_s: float
    mean_s: float
    std_s: float
    min_s: float
    max_s: float
    samples_s: list[float]

    @property
    def relative_spread(self) -> float:
        """Standard deviation over mean (0 = perfectly steady)."""
        return self.std_s / self.mean_s if self.mean_s > 0 else 0.0

    def to_dict(self) -> dict:
        values = asdict(self)
        values["relative_spread"] = self.relative_spread
        return values


def time_step(step: Callable[[], object], *, warmup: int, repeats: int, min_time_s: float,
              sync: Callable[[], None] = lambda: None, max_iterations: int = 1000) -> Timing:
    """Runs `warmup` untimed steps, calibrates how many steps make a sample last at least
    `min_time_s` (one step when 0), then takes `repeats` samples."""
    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    step()
    sync()
    one = max(time.perf_counter() - started, 1e-9)  # the calibration step doubles as warm-up
    iterations = 1 if min_time_s <= 0 else min(max_iterations, max(1, math.ceil(min_time_s / one)))
    samples = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        for _ in range(iterations):
            step()
        sync()
        samples.append((time.perf_counter() - started) / iterations)
    return Timing(warmup=warmup + 1, iterations=iterations, repeats=len(samples),
                  median_s=statistics.median(samples), mean_s=statistics.fmean(samples),
                  std_s=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                  min_s=min(samples), max_s=max(samples), samples_s=samples)


def matmul_peak(device: torch.device, size: int, *, dtype: torch.dtype = torch.float32,
                repeats: int = 5, min_time_s: float = 0.2) -> dict:
    """Best achieved GFLOP/s of a size x size x size torch.mm (2 n^3 FLOPs), out= preallocated:
    the machine's own practical peak for dense float work at this moment."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    with torch.inference_mode():
        timing = time_step(lambda: torch.mm(a, b, out=out), warmup=1, repeats=repeats,
                           min_time_s=min_time_s, sync=synchronizer(device))
    flops = 2.0 * size ** 3
    return {"size": size, "dtype": str(dtype).replace("torch.", ""),
            "gflops": flops / timing.min_s / 1e9,
            "gflops_median": flops / timing.median_s / 1e9,
            "timing": timing.to_dict()}
