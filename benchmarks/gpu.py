"""GPU throughput and allocator peak of one config under fp32, fp16 and bf16 autocast."""
from __future__ import annotations

import contextlib

import torch

from forgeryloc.model.m2sformer import build_model, count_parameters

from .forward import macs_per_image
from .settings import Settings
from .timing import matmul_peak, synchronizer, time_step

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIB = 2 ** 20


def _autocast(dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def run_gpu(settings: Settings, log) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "CUDA is not available"}
    device = torch.device("cuda")
    sync = synchronizer(device)
    unknown = [d for d in settings.gpu_dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"unknown --gpu-dtypes {unknown}; choose from {sorted(DTYPES)}")
    size = 1024 if settings.quick else 8192
    peaks = {}
    for name in settings.gpu_dtypes:
        if name == "bfloat16" and not torch.cuda.is_bf16_supported():
            continue
        log(f"gpu: matmul peak {size}^3 {name}")
        peaks[name] = matmul_peak(device, size, dtype=DTYPES[name],
                                  repeats=settings.matmul_repeats,
                                  min_time_s=settings.matmul_min_time_s)
    torch.manual_seed(0)
    model = build_model(settings.gpu_config).to(device).eval()
    sync()
    weights_mib = torch.cuda.memory_allocated(device) / MIB
    results = []
    for image_size in settings.gpu_sizes:
        macs = macs_per_image(model, image_size)
        for name in settings.gpu_dtypes:
            if name not in peaks:
                results.append({"size": image_size, "dtype": name,
                                "skipped": "not supported by this GPU"})
                continue
            for batch in settings.gpu_batch_sizes:
                log(f"gpu: {settings.gpu_config} {image_size}x{image_size} {name} batch {batch}")
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                images = torch.randn(batch, 3, image_size, image_size, device=device)
                with torch.inference_mode(), _autocast(DTYPES[name]):
                    timing = time_step(lambda: model(images), warmup=settings.warmup,
                                       repeats=settings.repeats, min_time_s=settings.min_time_s,
                                       sync=sync)
                peak = torch.cuda.max_memory_allocated(device)
                gflops = 2.0 * macs * batch / timing.median_s / 1e9
                results.append({
                    "size": image_size, "dtype": name, "batch": batch,
                    "autocast": name != "float32",
                    "images_per_s": batch / timing.median_s,
                    "images_per_s_mean": batch / timing.mean_s,
                    "ms_per_batch": timing.median_s * 1e3,
                    "ms_per_batch_mean": timing.mean_s * 1e3,
                    "ms_per_batch_std": timing.std_s * 1e3,
                    "relative_spread": timing.relative_spread,
                    "gflops": gflops,
                    "pct_of_matmul_peak": 100.0 * gflops / peaks[name]["gflops"],
                    "peak_allocated_mib": peak / MIB,
                    "peak_above_weights_mib": (peak - before) / MIB,
                    "timing": timing.to_dict(),
                })
                images = None  # not counted in the next case's peak
    return {"device": torch.cuda.get_device_name(device), "config": settings.gpu_config,
            "parameters": count_parameters(model), "weights_mib": weights_mib,
            "matmul_peaks": peaks, "results": results}
