"""Per-image cost of the file clues and each evidence layer, in ms, with the process's peak
memory, on a photo-like JPEG of a given size (made here: a Kodak picture tiled and saved
twice, so that the dq layer has a map to draw). Each measurement runs in a fresh process.

    python scripts/evidence_cost.py 1024x768 6000x4000
"""
from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PARTS = ("decode", "coefficients", "file clues", "ela", "noise", "dq")


def make_jpeg(width: int, height: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = 120 + 50 * np.sin(x / 37.0) * np.cos(y / 53.0) + 25 * ((x // 97 + y // 71) % 2)
    picture = picture[..., None] + rng.normal(0, 6, (height, width, 1)) + [0, 8, -8]
    rgb = np.clip(picture, 0, 255).astype(np.uint8)
    first = io.BytesIO()
    Image.fromarray(rgb).save(first, "JPEG", quality=70)
    Image.open(io.BytesIO(first.getvalue())).save(path, "JPEG", quality=90)


def _peak_mb() -> float:
    """The process's peak resident memory (VmHWM: since exec, unlike getrusage's maxrss,
    which a child inherits from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(path: str, part: str) -> dict:
    from forgeryloc.evidence import file_clues
    from forgeryloc.evidence.layers import make_layer, write_layer
    from forgeryloc.imaging import decode_picture, read_bytes
    from forgeryloc.jpeg_input import read_coefficients

    data = read_bytes(path)
    before = _peak_mb()
    started = time.perf_counter()
    picture, meta = decode_picture(data, None)
    decoded = time.perf_counter()
    jpeg, note = read_coefficients(data, None, meta.orientation) \
        if part != "decode" else (None, "")
    read = time.perf_counter()
    if part == "file clues":
        file_clues(data, meta, picture, jpeg, note)
    elif part in ("ela", "noise", "dq"):
        with tempfile.TemporaryDirectory() as folder:
            layer = make_layer(part, picture, jpeg)
            if not isinstance(layer, str):
                write_layer(Path(folder) / "layer.png", layer)
    done = time.perf_counter()
    seconds = {"decode": decoded - started, "coefficients": read - decoded}.get(part,
                                                                               done - read)
    return {"part": part, "ms": round(1000 * seconds, 1),
            "peak_mb": _peak_mb(), "peak_before_mb": before}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        print(json.dumps(measure(argv[1], argv[2])))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        for size in argv or ["1024x768"]:
            width, height = map(int, size.split("x"))
            path = Path(folder) / f"{size}.jpg"
            make_jpeg(width, height, path)
            for part in PARTS:
                runs = [json.loads(subprocess.run([sys.executable, __file__, "--child",
                                                   str(path), part], check=True,
                                                  capture_output=True, text=True).stdout)
                        for _ in range(3)]
                best = min(runs, key=lambda run: run["ms"])
                print(json.dumps({"size": size, **best}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
