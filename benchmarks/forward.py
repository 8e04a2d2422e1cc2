"""Model forward throughput (fp32, eval, inference_mode, random weights) and its efficiency
against the machine's own matmul peak."""
from __future__ import annotations

import time

import torch

from forgeryloc.complexity import count_macs
from forgeryloc.cpu import keep_large_allocations
from forgeryloc.model.m2sformer import build_model, count_parameters

from .settings import Settings
from .timing import matmul_peak, synchronizer, time_step


def measured_peak(device: torch.device, settings: Settings, log, short: bool = False) -> dict:
    """Best GFLOP/s of a large fp32 torch.mm; `short`: fewer samples, taken beside a row."""
    if not short:
        log(f"matmul peak: {settings.matmul_size}^3 fp32 on {device}")
    return matmul_peak(device, settings.matmul_size,
                       repeats=min(3, settings.matmul_repeats) if short else settings.matmul_repeats,
                       min_time_s=settings.matmul_min_time_s)


def macs_per_image(model: torch.nn.Module, size: int) -> int:
    """MACs of one image; a batch costs exactly batch times this (every layer is per-sample)."""
    return count_macs(model, size, batch=1)


def run_forward(settings: Settings, device: torch.device, log) -> dict:
    if device.type == "cpu":
        keep_large_allocations()  # as forgeryloc's Predictor does for CPU inference
    sync = synchronizer(device)
    peak_before = measured_peak(device, settings, log)
    results = []
    for name in settings.configs:
        torch.manual_seed(0)
        model = build_model(name).to(device).eval()
        parameters = count_parameters(model)
        variants = [("eager", model)]
        if settings.compile:
            # Static shapes: one graph per (size, batch), compiled on its first call, whose
            # duration is reported apart (first_call_s) from the timing.
            variants.append(("compiled", torch.compile(model, dynamic=False)))
        for size in settings.sizes:
            macs = macs_per_image(model, size)
            for batch in settings.batch_sizes:
                generator = torch.Generator().manual_seed(size * 100 + batch)
                images = torch.randn(batch, 3, size, size, generator=generator).to(device)
                for variant, runner in variants:
                    log(f"forward {name} {size}x{size} batch {batch} ({variant})")
                    with torch.inference_mode():
                        started = time.perf_counter()
                        runner(images)
                        sync()
                        first_call_s = time.perf_counter() - started
                        local_before = measured_peak(device, settings, log, short=True)
                        timing = time_step(lambda: runner(images), warmup=settings.warmup,
                                           repeats=settings.repeats,
                                           min_time_s=settings.min_time_s, sync=sync)
                        local_after = measured_peak(device, settings, log, short=True)
                    flops = 2.0 * macs * batch
                    local_peak = max(local_before["gflops"], local_after["gflops"])
                    results.append({
                        "config": name, "size": size, "batch": batch, "variant": variant,
                        "parameters": parameters, "gmacs_per_image": macs / 1e9,
                        "first_call_s": first_call_s,
                        "images_per_s": batch / timing.median_s,
                        "images_per_s_mean": batch / timing.mean_s,
                        "ms_per_batch": timing.median_s * 1e3,
                        "ms_per_batch_mean": timing.mean_s * 1e3,
                        "ms_per_batch_std": timing.std_s * 1e3,
                        "ms_per_batch_min": timing.min_s * 1e3,
                        "ms_per_batch_max": timing.max_s * 1e3,
                        "relative_spread": timing.relative_spread,
                        "gflops": flops / timing.median_s / 1e9,
                        "timing": timing.to_dict(),
                        # the peak measured just before and just after this row's timing: on
                        # a machine whose speed drifts, the fairer reference for this row
                        "local_matmul_peak_gflops": local_peak,
                        "pct_of_local_matmul_peak": 100.0 * flops / timing.median_s / 1e9
                        / local_peak,
                    })
        model = images = variants = runner = None  # free before the next config is built
    # The peak is taken again afterwards: on a shared machine the better of the two is the
    # nearer to what the hardware can do, and a large gap between them says the run was noisy.
    peak_after = measured_peak(device, settings, log)
    peak = max(peak_before["gflops"], peak_after["gflops"])
    for row in results:
        row["pct_of_matmul_peak"] = 100.0 * row["gflops"] / peak
    return {"device": str(device), "dtype": "float32", "mode": "eval, torch.inference_mode",
            "weights": "random (torch.manual_seed(0))",
            "matmul_peak_gflops": peak,
            "matmul_peak_before": peak_before, "matmul_peak_after": peak_after,
            "results": results}
