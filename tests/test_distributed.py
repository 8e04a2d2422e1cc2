"""DistributedDataParallel training on CPU: 2 processes with the gloo backend stay in sync."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("tampered", "masks", "authentic"):
        (root / folder).mkdir(parents=True)
    for i in range(6):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 20 + i:40 + i] = 255
        Image.fromarray(image).save(root / "tampered" / f"t{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"t{i}.png")
        Image.fromarray(image[::-1]).save(root / "authentic" / f"a{i}.png")
    return root


def test_two_gloo_ranks_keep_identical_weights(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(Path(__file__).with_name("ddp_worker.py")), str(data), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fingerprints = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert fingerprints[0]["world"] == "2"
    assert fingerprints[0]["sha256"] == fingerprints[1]["sha256"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 16 samples per epoch, 2 ranks x batch 2: 4 optimiser steps.
    assert len(records) == 1 and records[0]["step"] == 4
    assert (out / "last.safetensors").is_file()
