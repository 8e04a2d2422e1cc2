"""Peak memory of `forgeryloc scan` on one large image, a fresh process per case."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from forgeryloc.imaging import DEFAULT_MAX_PIXELS
from forgeryloc.maps import tile_grid

from .procs import run_child
from .scan import checkpoint
from .settings import Settings
from .synthetic import write_jpeg

CHILD = Path(__file__).resolve().parent / "scan_child.py"
MIB = 2 ** 20
TILE_OVERLAP = 0.5  # the scan's default --tile-overlap


def _child_stats(path: Path) -> dict:
    """peak_rss_mib (the scan process's VmHWM) and the CUDA allocator peaks, in MiB."""
    stats = json.loads(path.read_text())
    return {f"{key}_mib": (value / MIB if value is not None else None)
            for key, value in stats.items()}


def run_memory(settings: Settings, device: torch.device, workdir: Path, env: dict, log) -> dict:
    weights = checkpoint(workdir, settings.memory_config, settings.input_size)
    logs = workdir / "logs"

    log("memory: baseline (imports of a scan + model load, no image)")
    stats_file = workdir / "child-stats.json"
    stats_file.unlink(missing_ok=True)
    baseline = run_child([sys.executable, str(CHILD), "--load-only", str(weights), device.type],
                         logs, env={**env, "BENCH_CHILD_STATS": str(stats_file)},
                         timeout_s=settings.timeout_s)
    baseline_row = {**_child_stats(stats_file), "tree_peak_pss_mib": baseline.tree_peak_pss_mib,
                    "wall_s": baseline.wall_s}
    cases = []
    for height, width in settings.memory_shapes:
        image = write_jpeg(workdir / "memory-images" / f"{width}x{height}.jpg", height, width,
                           seed=height * 7919 + width)
        for mode in settings.memory_modes:
            log(f"memory: {width}x{height} --mode {mode}")
            out = workdir / "memory-out" / f"{width}x{height}-{mode}"
            argv = [sys.executable, str(CHILD), "scan", str(image), "-o", str(out),
                    "--weights", str(weights), "--quiet", "--mode", mode,
                    "--workers", str(settings.memory_workers),
                    "--batch-size", str(settings.batch_size), "--device", device.type,
                    "--max-pixels", str(max(DEFAULT_MAX_PIXELS, 2 * height * width))]
            stats_file.unlink(missing_ok=True)
            child = run_child(argv, logs, env={**env, "BENCH_CHILD_STATS": str(stats_file)},
                              timeout_s=settings.timeout_s)
            stats = _child_stats(stats_file)
            decoded_mib = height * width * 3 / MIB
            tiles = (len(list(tile_grid(height, width, settings.input_size, TILE_OVERLAP)))
                     if mode == "tile" else None)
            cases.append({
                "width": width, "height": height, "megapixels": height * width / 1e6,
                "mode": mode, "tiles": tiles, "jpeg_mib": image.stat().st_size / MIB,
                "decoded_mib": decoded_mib,
                "decoded_bytes": height * width * 3,
                **stats,
                "tree_peak_pss_mib": child.tree_peak_pss_mib,
                "peak_over_baseline_mib": stats["peak_rss_mib"] - baseline_row["peak_rss_mib"],
                "peak_over_decoded": stats["peak_rss_mib"] / decoded_mib,
                "wall_s": child.wall_s, "samples": child.samples,
            })
    return {"config": settings.memory_config, "input_size": settings.input_size,
            "workers": settings.memory_workers, "batch_size": settings.batch_size,
            "device": device.type, "tile_overlap": TILE_OVERLAP,
            "method": "a fresh process per case; peak_rss_mib: VmHWM of the scan process read "
                      "by itself at exit (DataLoader workers not included); tree_peak_pss_mib: "
                      "the largest sum of PSS over the process group, sampled every 50 ms "
                      "(workers included, shared pages counted once)",
            "baseline": baseline_row,
            "cases": cases}
