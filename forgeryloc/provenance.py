"""Where a training run ran, as its checkpoints record it: the torch device actually used (with its
index), the accelerator's name, torch's version and thread count, the processes of a distributed
run, the mixed precision, and a free-text hardware note from FORGERYLOC_TRAIN_HARDWARE if set."""
from __future__ import annotations

import os

import torch

from . import __version__

HARDWARE_ENV = "FORGERYLOC_TRAIN_HARDWARE"


def device_name(device: torch.device) -> str:
    """cpu, mps, or cuda:N (a bare "cuda" resolved to the current GPU)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return str(device)


def runtime(device: torch.device, processes: int = 1, mixed_precision: str | None = None
            ) -> dict:
    record = {"tool": f"forgeryloc {__version__}", "device": device_name(device),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "mixed_precision": mixed_precision or "none"}
    if device.type == "cuda":
        record["accelerator"] = torch.cuda.get_device_name(device)
    if processes > 1:
        record["processes"] = processes
    if os.environ.get(HARDWARE_ENV):
        record["hardware"] = os.environ[HARDWARE_ENV]
    return record
