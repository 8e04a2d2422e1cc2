"""End-to-end `forgeryloc scan` throughput against the bare forward on the same images."""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from forgeryloc.imaging import load_rgb
from forgeryloc.jpeg_input import read_jpeg_input
from forgeryloc.preprocess import resize_rgb, to_tensor
from forgeryloc.cpu import keep_large_allocations
from forgeryloc.weights import load_model

from .procs import run_child
from .settings import Settings
from .synthetic import write_jpeg_folder, write_random_checkpoint
from .timing import synchronizer


def checkpoint(workdir: Path, config: str, input_size: int) -> Path:
    """One random checkpoint per (config, input size) and run."""
    path = workdir / "weights" / f"{config}-{input_size}.safetensors"
    if not path.is_file():
        write_random_checkpoint(path, config, input_size)
    return path


def autocast_like_predictor(device: torch.device):
    """The Predictor runs CUDA in bf16 autocast by default; the comparison must do the same."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bare_forward(weights: Path, paths: list[Path], device: torch.device, batch_size: int,
                 compile_model: bool = False) -> dict:
    """Load the model (timed: part of any scan's start-up), decode and resize every image
    beforehand, then time one pass of forwards in batches of the scan's batch size."""
    sync = synchronizer(device)
    started = time.perf_counter()
    if device.type == "cpu":
        keep_large_allocations()  # as the scan's Predictor does
    model, info = load_model(weights, device)
    if compile_model:
        model = torch.compile(model, dynamic=False)
    sync()
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    inputs = [to_tensor(resize_rgb(load_rgb(p), info.input_size, info.input_size),
                        info.mean, info.std) for p in paths]
    prepare_s = time.perf_counter() - started
    stream = getattr(model, "jpeg_stream", None)
    jpeg_read_s, jpegs = 0.0, []
    if stream is not None:  # the network of a JPEG-stream model includes the stream
        started = time.perf_counter()
        jpegs = [read_jpeg_input(p)[0] for p in paths]
        jpeg_read_s = time.perf_counter() - started

    def run_stream(index: int) -> None:
        jpeg = jpegs[index]
        stream(jpeg.coefficients[None].to(device), jpeg.table[None].to(device))

    def timed_pass(batch: int) -> tuple[float, float]:
        batches = [torch.stack(inputs[i:i + batch]) for i in range(0, len(inputs), batch)]
        with torch.inference_mode(), autocast_like_predictor(device):
            model(batches[0].to(device))  # warm-up (and compilation), untimed
            if len(batches[-1]) != len(batches[0]):
                model(batches[-1].to(device))
            if jpegs:
                run_stream(0)
            sync()
            stream_s = 0.0
            started = time.perf_counter()
            for start, stacked in zip(range(0, len(inputs), batch), batches):
                model(stacked.to(device))
                if jpegs:
                    stream_started = time.perf_counter()
                    for index in range(start, start + len(stacked)):
                        run_stream(index)
                    sync()
                    stream_s += time.perf_counter() - stream_started
            sync()
            return time.perf_counter() - started, stream_s

    forward_s, stream_s = timed_pass(batch_size)
    result = {"model_load_s": load_s, "decode_resize_s": prepare_s, "forward_s": forward_s,
              "images_per_s": len(paths) / forward_s, "ms_per_image": 1e3 * forward_s / len(paths),
              "autocast": "bfloat16" if device.type == "cuda" else None,
              "compiled": compile_model}
    if stream is not None:
        result["jpeg_stream"] = {"read_ms_per_image": 1e3 * jpeg_read_s / len(paths),
                                 "stream_ms_per_image": 1e3 * stream_s / len(paths)}
    return result


def run_scan(settings: Settings, device: torch.device, workdir: Path, env: dict, log) -> dict:
    count, height, width = settings.images, settings.image_height, settings.image_width
    folder = workdir / "scan-images"
    log(f"scan: writing {count} JPEGs of {width}x{height}")
    started = time.perf_counter()
    paths = write_jpeg_folder(folder, count, height, width)
    generate_s = time.perf_counter() - started
    weights = checkpoint(workdir, settings.config, settings.input_size)
    logs = workdir / "logs"

    # The bare forward runs before and after the scan and the two are averaged: this machine's
    # speed drifts by 10-20 % over minutes, and a single forward pass on one side of the scan
    # would carry that drift into the ratio.
    log("scan: bare forward on the same images (before the scan)")
    before = bare_forward(weights, paths, device, settings.batch_size, settings.compile)

    log("scan: python start-up and imports of a scan")
    imports = run_child([sys.executable, "-c", "import forgeryloc.cli, forgeryloc.scan_command"],
                        logs, env=env, timeout_s=settings.timeout_s, sample_tree=False)

    out = workdir / "scan-out"
    argv = [sys.executable, "-m", "forgeryloc", "scan", str(folder), "-o", str(out),
            "--weights", str(weights), "--quiet", "--workers", str(settings.workers),
            "--batch-size", str(settings.batch_size), "--device", device.type]
    if settings.compile:
        argv.append("--compile")
    log(f"scan: {' '.join(argv[1:])}")
    child = run_child(argv, logs, env=env, timeout_s=settings.timeout_s, sample_tree=False)
    counts = json.loads((out / "report.json").read_text())["run"]["counts"]
    if counts.get("scanned") != count:  # a scan that skipped images would look fast
        raise RuntimeError(f"the scan reported {counts} for {count} images")

    log("scan: bare forward on the same images (after the scan)")
    after = bare_forward(weights, paths, device, settings.batch_size, settings.compile)
    forward = {"before": before, "after": after,
               "model_load_s": (before["model_load_s"] + after["model_load_s"]) / 2,
               "forward_s": (before["forward_s"] + after["forward_s"]) / 2,
               "after_to_before_speed": before["forward_s"] / after["forward_s"],
               "autocast": after["autocast"], "compiled": after["compiled"]}
    forward["images_per_s"] = count / forward["forward_s"]

    startup_s = imports.wall_s + forward["model_load_s"]
    steady_s = child.wall_s - startup_s
    scan_ips = count / child.wall_s
    # Start-up is measured in another process; on a noisy machine it can exceed what it is
    # subtracted from, and then the difference means nothing.
    steady_ips = count / steady_s if steady_s > 0 else None
    forward_ips = forward["images_per_s"]
    return {
        "config": settings.config, "input_size": settings.input_size, "images": count,
        "image_width": width, "image_height": height, "jpeg_quality": 90,
        "input_mib": sum(p.stat().st_size for p in paths) / 2 ** 20,
        "generate_s": generate_s,
        "workers": settings.workers, "batch_size": settings.batch_size, "device": device.type,
        "command": argv[1:],
        "scan_wall_s": child.wall_s,
        "scan_cpu_s": child.user_s + child.system_s,
        "scan_cpu_utilisation": (child.user_s + child.system_s) / child.wall_s,
        "scan_images_per_s": scan_ips,
        "startup": {"python_imports_s": imports.wall_s, "model_load_s": forward["model_load_s"],
                    "total_s": startup_s},
        "scan_images_per_s_excluding_startup": steady_ips,
        "forward": forward,
        "forward_images_per_s": forward_ips,
        "ratio_scan_to_forward": scan_ips / forward_ips,
        "ratio_scan_to_forward_excluding_startup": (steady_ips / forward_ips
                                                    if steady_ips is not None else None),
        "overhead_ms_per_image": (1e3 * (steady_s - forward["forward_s"]) / count
                                  if steady_ips is not None else None),
        "report_counts": counts,
    }
