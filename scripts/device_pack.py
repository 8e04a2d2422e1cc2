"""Builds .pack/, what a training run on a borrowed GPU machine needs beside the checkout.

That machine receives the working tree (at most 64 MiB, tracked files included) and nothing
else: not ../shared, not this virtual environment. Its Python has PyTorch, numpy, Pillow,
scikit-image, typer, rich and safetensors, not jpeglib. The pack holds:
  casia1-dev/   the whole dataset (train --val-fraction 0.25 splits it as here)
  bsds500/      every STRIDE-th photo of BSDS500 with its segments, for synthetic forgeries
  site/jpeglib/ jpeglib's Python files with the two libjpeg builds it loads (its default and
                jpeg_coefficients.LIBJPEG_BUILD), not its other twenty-odd (22 MB); the build
                is abi3, so this machine's copy serves that machine's Python 3.12
and prints its size beside the checkout's. The folder is listed in .git/info/exclude, so it
never reaches a commit; carry it with `run(..., carry=[".pack"])`. See checkpoints/README.md,
"A session with a GPU".

    python scripts/device_pack.py [--shared ../shared] [--stride 4]
"""
import argparse
import shutil
import subprocess
from pathlib import Path

import jpeglib

from forgeryloc.jpeg_coefficients import LIBJPEG_BUILD

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".pack"
JPEGLIB_DEFAULT_BUILD = "6b"  # the one jpeglib binds before any version switch
CARRY_MIB = 64  # what a device run may take along: working tree and carried paths


def exclude_from_git() -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.pack/" not in lines:
        exclude.write_text("\n".join(lines + ["/.pack/"]) + "\n")


def copy_bsds(source: Path, target: Path, stride: int) -> int:
    images = sorted((source / "images").glob("*.jpg"))[::stride]
    (target / "images").mkdir(parents=True)
    (target / "segments").mkdir()
    for image in images:
        shutil.copy2(image, target / "images" / image.name)
        segments = source / "segments" / f"{image.stem}.png"
        if segments.exists():
            shutil.copy2(segments, target / "segments" / segments.name)
    return len(images)


def copy_jpeglib(target: Path) -> None:
    package = Path(jpeglib.__file__).parent
    (target / "cjpeglib").mkdir(parents=True)
    for source in package.glob("*.py"):
        shutil.copy2(source, target / source.name)
    for build in (JPEGLIB_DEFAULT_BUILD, LIBJPEG_BUILD):
        for library in (package / "cjpeglib").glob(f"cjpeglib_{build}.*"):
            shutil.copy2(library, target / "cjpeglib" / library.name)


def size_mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--stride", type=int, default=4, help="every STRIDE-th BSDS500 photo")
    args = parser.parse_args()
    if PACK.exists():
        shutil.rmtree(PACK)
    exclude_from_git()
    data = args.shared / "data"
    shutil.copytree(data / "benchmarks" / "casia1-dev", PACK / "casia1-dev")
    photos = copy_bsds(data / "photos" / "bsds500", PACK / "bsds500", args.stride)
    copy_jpeglib(PACK / "site" / "jpeglib")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    checkout = size_mib([ROOT / name for name in tracked if name])
    pack = size_mib(list(PACK.rglob("*")))
    print(f".pack: {pack:.1f} MiB (BSDS500: {photos} photos); tracked files: {checkout:.1f} MiB; "
          f"together {pack + checkout:.1f} of the {CARRY_MIB} MiB a device run may carry")
    if pack + checkout > CARRY_MIB:
        raise SystemExit("too large to travel: raise --stride, or carry less")


if __name__ == "__main__":
    main()
