"""How far photographs stay from the limits that call a picture drawn (forgeryloc/scope.py):
per folder, the largest share of flat 8 x 8 blocks, the fewest distinct colours, and the
files that would be called drawn (folders named like masks or segments are left out).

    python scripts/picture_scope.py ../shared/data/benchmarks/casia1-dev \
        ../shared/data/photos/imagenet-sample ../shared/data/photos/bsds500/images \
        ../shared/data/photos/kodak24
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgeryloc.imaging import IMAGE_EXTENSIONS, ImageReadError, decode_picture, read_bytes
from forgeryloc.scope import MAX_DRAWN_COLOURS, MIN_FLAT_SHARE, picture_kind

LEFT_OUT = ("mask", "segment")


def measure(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(word in part.lower() for part in p.relative_to(folder).parts[:-1]
                               for word in LEFT_OUT))
    kinds, colours, unreadable = {}, {}, 0
    for path in files:
        try:
            picture, _ = decode_picture(read_bytes(path))
        except ImageReadError:
            unreadable += 1
            continue
        name = path.relative_to(folder).as_posix()
        kinds[name] = picture_kind(picture)
        colours[name] = len(picture.getcolors(picture.width * picture.height))
    flattest = max(kinds, key=lambda name: kinds[name].flat_share)
    fewest = min(colours, key=colours.get)
    return {"folder": str(folder), "images": len(kinds), "unreadable": unreadable,
            "largest_flat_share": round(kinds[flattest].flat_share, 4), "flattest": flattest,
            "fewest_colours": colours[fewest], "most_uniform": fewest,
            "drawn": sorted(name for name, kind in kinds.items() if kind.drawn)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    print(json.dumps({"limits": {"max_drawn_colours": MAX_DRAWN_COLOURS,
                                 "min_flat_share": MIN_FLAT_SHARE},
                      "folders": [measure(folder) for folder in args.folders]}, indent=2))


if __name__ == "__main__":
    main()
