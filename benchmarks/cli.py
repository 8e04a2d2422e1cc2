"""`python -m benchmarks [SECTION ...] [options]`: run, print tables, write JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .settings import QUICK, SECTIONS, Settings

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
SCHEMA_VERSION = 1
BUSY_WARNING = 0.25  # share of the CPUs busy elsewhere above which the run is flagged noisy


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _config_name(name: str) -> str:
    return name if name.startswith("m2sformer-") else f"m2sformer-{name}"


def _configs(text: str) -> list[str]:
    return [_config_name(v) for v in _names(text)]


def _shape(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return height, width


def _shapes(text: str) -> list[tuple[int, int]]:
    return [_shape(v) for v in _names(text)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Speed and memory benchmarks of forgeryloc (see benchmarks/README.md).")
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"what to run: {', '.join(SECTIONS)} or all (default: all)")
    add = parser.add_argument
    add("--quick", action="store_true",
        help="smoke-test sizes: seconds, for CI; explicit options still win")
    add("--output", "-o", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    add("--threads", type=int, help="torch intra-op threads here and in every child process "
        "(default: torch's own default)")
    add("--device", choices=("auto", "cpu", "cuda", "mps"),
        help="auto (default), cpu, cuda or mps: for forward, scan and memory")
    add("--workdir", type=Path, help="keep generated images, weights and scan outputs here "
        "(default: a temporary folder, removed afterwards)")
    add("--timeout", dest="timeout_s", type=float, help="seconds allowed to each child process")
    add("--compile", action="store_true", default=None,
        help="forward: time torch.compile'd models too (compile time reported apart); "
             "scan: scan --compile, against a compiled bare forward")
    group = parser.add_argument_group("forward")
    group.add_argument("--configs", type=_configs, help="e.g. b0,b1,b2")
    group.add_argument("--sizes", type=_ints, help="square input sides, e.g. 256,512")
    group.add_argument("--batch-sizes", type=_ints, help="e.g. 1,8")
    group.add_argument("--warmup", type=int, help="untimed iterations first")
    group.add_argument("--repeats", type=int, help="timed samples (median reported)")
    group.add_argument("--min-time", dest="min_time_s", type=float,
                       help="seconds each timed sample lasts at least (iterations are added)")
    group.add_argument("--matmul-size", type=int, help="side of the peak-reference torch.mm")
    group = parser.add_argument_group("scan and memory")
    group.add_argument("--config", type=_config_name, help="model of the scan (default b2)")
    group.add_argument("--input-size", type=int, help="the checkpoint's input size (256)")
    group.add_argument("--images", type=int, help="JPEGs in the scanned folder (200)")
    group.add_argument("--image-size", type=_shape, help="WIDTHxHEIGHT of them (1024x768)")
    group.add_argument("--workers", type=int, help="scan --workers (2)")
    group.add_argument("--batch-size", type=int, help="scan --batch-size (8)")
    group.add_argument("--memory-config", type=_config_name, help="default: --config")
    group.add_argument("--memory-sizes", dest="memory_shapes", type=_shapes,
                       help="WIDTHxHEIGHT list (1024x1024,4096x4096,8000x6000)")
    group.add_argument("--memory-modes", type=_names, help="resize,tile")
    group.add_argument("--memory-workers", type=int, help="default: --workers")
    group = parser.add_argument_group("gpu")
    group.add_argument("--gpu-config", type=_config_name, help="default b2")
    group.add_argument("--gpu-sizes", type=_ints, help="default 256,512")
    group.add_argument("--gpu-batch-sizes", type=_ints, help="default 1,8")
    group.add_argument("--gpu-dtypes", type=_names, help="float32,float16,bfloat16")
    return parser


def make_settings(args: argparse.Namespace) -> Settings:
    values = dict(QUICK) if args.quick else {}
    fields = {f.name for f in dataclasses.fields(Settings)}
    for name in fields:
        explicit = getattr(args, name, None)
        if explicit is not None and name != "quick":
            values[name] = explicit
    if args.image_size is not None:
        values["image_height"], values["image_width"] = args.image_size
    settings = Settings(**values).resolved()
    for name in ("memory_modes",):
        bad = [m for m in getattr(settings, name) if m not in ("resize", "tile")]
        if bad:
            raise SystemExit(f"--memory-modes: unknown {bad} (resize, tile)")
    if settings.input_size % 32:
        raise SystemExit("--input-size must be a multiple of 32")
    if any(size % 32 for size in settings.sizes + settings.gpu_sizes):
        raise SystemExit("--sizes and --gpu-sizes must be multiples of 32")
    return settings


def resolve_sections(names: list[str]) -> list[str]:
    if not names or "all" in names:
        return list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}: choose from "
                         f"{', '.join(SECTIONS)} or all")
    return [s for s in SECTIONS if s in names]


def _finite(value):
    """JSON without NaN/inf (strict parsers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_section(name: str, settings: Settings, device, workdir: Path, env: dict, log) -> dict:
    if name == "forward":
        from .forward import run_forward
        return run_forward(settings, device, log)
    if name == "scan":
        from .scan import run_scan
        return run_scan(settings, device, workdir, env, log)
    if name == "memory":
        from .memory import run_memory
        return run_memory(settings, device, workdir, env, log)
    if name == "gpu":
        from .gpu import run_gpu
        return run_gpu(settings, log)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks; returns the exit code (0, or 1 when a section failed)."""
    args = build_parser().parse_args(argv)  # before the heavy imports: --help stays instant
    sections = resolve_sections(args.sections)
    settings = make_settings(args)

    import torch

    from forgeryloc import __version__
    from forgeryloc.predict import pick_device

    from .machine import cpu_busy_fraction, load_average, machine_info, now_iso
    from .procs import child_env
    from .report import machine_table, print_section

    console = Console()
    messages = Console(stderr=True)

    def log(message: str) -> None:
        messages.print(f"[dim]· {escape(message)}[/]", highlight=False, soft_wrap=True)

    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        device = pick_device(settings.device)
        if settings.matmul_size is None:
            settings.matmul_size = 2048 if device.type == "cpu" else 8192
        document = {
            "schema": SCHEMA_VERSION, "tool": "forgeryloc benchmarks",
            "forgeryloc_version": __version__, "date": now_iso(),
            "argv": list(sys.argv[1:] if argv is None else argv), "quick": settings.quick,
            "sections": sections, "settings": settings.to_dict(),
            "machine": machine_info(device, threads_before,
                                    busy_interval_s=0.2 if settings.quick else 1.0),
        }
        console.print(machine_table(document))
        busy = document["machine"]["cpu_busy_at_start"]
        if busy is not None and busy > BUSY_WARNING:
            messages.print(f"[yellow]warning:[/] {100 * busy:.0f}% of the CPUs were busy with "
                           f"other work before the start: timings are not comparable to an "
                           f"idle machine's (the % of matmul peak is the least affected)",
                           highlight=False)
        env = child_env(settings.threads or torch.get_num_threads())
        document["machine"]["child_omp_num_threads"] = int(env["OMP_NUM_THREADS"])
        failed = []
        keep = args.workdir is not None
        workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="forgeryloc-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            for name in sections:
                started = time.perf_counter()
                try:
                    section = run_section(name, settings, device, workdir, env, log)
                except KeyboardInterrupt:
                    raise
                except Exception as error:  # noqa: BLE001 - report it, run the other sections
                    failed.append(name)
                    section = {"error": f"{type(error).__name__}: {error}",
                               "traceback": traceback.format_exc()}
                section["duration_s"] = time.perf_counter() - started
                document[name] = section
                print_section(console, name, section)
        finally:
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
        document["machine"]["load_average_end"] = load_average()
        document["machine"]["cpu_busy_at_end"] = cpu_busy_fraction(0.2)
        document["finished"] = now_iso()
        document["failed_sections"] = failed
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n",
                          encoding="utf-8")
        messages.print(f"results: {output}", highlight=False)
        return 1 if failed else 0
    finally:
        torch.set_num_threads(threads_before)
