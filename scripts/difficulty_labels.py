"""What decides the difficulty label on real photos: for a sample of a dataset's images, the
summed curvature of the global prior (the label is its sign), the score (its sigmoid), and the
share of the sum that the prior's corner cells and outer ring of cells give.

    python scripts/difficulty_labels.py ../shared/data/benchmarks/casia1-dev --count 40
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from forgeryloc.imaging import IMAGE_EXTENSIONS, load_rgb
from forgeryloc.predict import Predictor
from forgeryloc.scan import PRIOR_CELL
from forgeryloc.weights import default_weights_path, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder searched for images")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--count", type=int, default=40, help="images drawn (seed 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted(p for p in args.dataset.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and "mask" not in p.parent.name.lower())
    random.Random(0).shuffle(files)
    model, card = load_model(args.weights or default_weights_path())
    predictor = Predictor(model, card, "cpu")
    rows = []
    for path in files[:args.count]:
        outputs = predictor.forward(predictor.preprocess(load_rgb(path))[None])
        curvature = outputs["curvature"][0, 0].numpy().astype(np.float64)  # S x S
        border = np.ones_like(curvature, bool)
        border[PRIOR_CELL:-PRIOR_CELL, PRIOR_CELL:-PRIOR_CELL] = False
        corners = np.zeros_like(border)
        for rows_ in (slice(0, PRIOR_CELL), slice(-PRIOR_CELL, None)):
            for columns in (slice(0, PRIOR_CELL), slice(-PRIOR_CELL, None)):
                corners[rows_, columns] = True
        rows.append((curvature.sum(), float(outputs["difficulty_score"][0]),
                     curvature[corners].sum(), curvature[border].sum(),
                     curvature[~border].sum()))
    table = np.array(rows)
    total = table[:, 0]
    print(f"{len(rows)} images, {card.config.name}: {int((total > 0).sum())} hard, "
          f"{int((total <= 0).sum())} easy")
    print(f"summed curvature: min {total.min():.0f}, median {np.median(total):.0f}, "
          f"max {total.max():.0f}; score min {table[:, 1].min():.4f}, max {table[:, 1].max():.4f}")
    print(f"share of the sum from the 4 corner cells: median {np.median(table[:, 2] / total):.2f};"
          f" from the outer ring of cells: median {np.median(table[:, 3] / total):.2f}")
    print(f"interior cells' sum > 0 (would read hard alone): {int((table[:, 4] > 0).sum())} "
          f"of {len(rows)}")


if __name__ == "__main__":
    main()
