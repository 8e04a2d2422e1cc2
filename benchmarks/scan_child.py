"""Child process for the memory benchmark (run as a script, not imported by the harness).

    python scan_child.py scan ARGS...           the real `forgeryloc scan ARGS...`, in-process
    python scan_child.py --load-only W DEVICE   imports what a scan imports, loads W, exits

Afterwards, when $BENCH_CHILD_STATS names a file, it receives as JSON this process's peak
resident set (VmHWM, read at exit: exact, and unlike the parent's view of ru_maxrss it does not
include the harness's own high-water mark, which a spawned child inherits at exec) and its
CUDA allocator peaks (null without CUDA), which cannot be read from outside the process."""
from __future__ import annotations

import json
import os
import sys


def _exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def peak_resident_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--load-only"]:
        import importlib

        from forgeryloc.weights import load_model

        for module in ("forgeryloc.cli", "forgeryloc.scan_command"):  # what a scan imports
            importlib.import_module(module)

        load_model(args[1], args[2] if len(args) > 2 else "cpu")
        code = 0
    else:
        from forgeryloc.cli import main as forgeryloc_main

        sys.argv = ["forgeryloc", *args]
        try:
            forgeryloc_main()
            code = 0
        except SystemExit as error:
            code = _exit_code(error)
    stats_path = os.environ.get("BENCH_CHILD_STATS")
    if stats_path:
        stats = {"peak_rss": peak_resident_bytes(), "cuda_max_allocated": None,
                 "cuda_max_reserved": None}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            stats.update(cuda_max_allocated=torch.cuda.max_memory_allocated(),
                         cuda_max_reserved=torch.cuda.max_memory_reserved())
        with open(stats_path, "w", encoding="utf-8") as handle:
            json.dump(stats, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
