"""JPEG quantisation tables for synthetic compression histories, and saving with them.

Families of tables, each drawn for a quality in a range:
  * ijg: the standard tables of the JPEG specification (Annex K), scaled by quality the way
    libjpeg does (what `quality=` gives in Pillow, PIL-based tools and many programs);
  * ijg-perturbed: an IJG table with every step nudged by a random factor (custom encoders);
  * flat: one step for every frequency (some scanners, "uniform" settings);
  * smooth: steps growing smoothly with frequency, a shape other editors use (Photoshop-like);
  * camera: the standard shape scaled by a continuous factor with random rounding, as camera
    firmware often does.
Tables are 64 integers in natural (row-major) order: what Pillow's `qtables=` takes and what its
`Image.quantization` returns. Every step lies in [1, 255] (baseline JPEG).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64).reshape(8, 8)
IJG_CHROMA = np.full((8, 8), 99, dtype=np.int64)
IJG_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

TABLE_FAMILIES = {"ijg": 0.6, "ijg-perturbed": 0.12, "flat": 0.06, "smooth": 0.11,
                  "camera": 0.11}
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # name -> Pillow's `subsampling=`
_FREQUENCY_V, _FREQUENCY_U = np.mgrid[0:8, 0:8]  # row (vertical) and column frequency


@dataclass(frozen=True)
class QuantTables:
    """A luma and a chroma table (64 steps each, natural order) and how they were made."""
    family: str
    luma: tuple[int, ...]
    chroma: tuple[int, ...]
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"family": self.family, **self.params, "luma": list(self.luma),
                "chroma": list(self.chroma)}


def _tables(family: str, luma: np.ndarray, chroma: np.ndarray, **params) -> QuantTables:
    def steps(table: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in np.clip(table, 1, 255).ravel())
    return QuantTables(family, steps(luma), steps(chroma), params)


def ijg_scale(quality: int) -> int:
    """libjpeg's percentage scaling of the standard tables for a quality in 1..100."""
    quality = int(np.clip(quality, 1, 100))
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def ijg_tables(quality: int) -> QuantTables:
    """The tables libjpeg (and Pillow's `quality=`) uses for this quality."""
    scale = ijg_scale(quality)
    return _tables("ijg", (IJG_LUMA * scale + 50) // 100, (IJG_CHROMA * scale + 50) // 100,
                   quality=int(quality))


def _ijg_perturbed(rng: np.random.Generator, quality: int) -> QuantTables:
    base = ijg_tables(quality)
    spread = float(rng.uniform(0.05, 0.2))
    luma, chroma = (np.asarray(t).reshape(8, 8) * np.exp(rng.normal(0, spread, (8, 8)))
                    for t in (base.luma, base.chroma))
    luma = np.clip(np.rint(luma), 1, 255)
    if tuple(luma.ravel().astype(int)) == base.luma:  # always a table IJG would not write
        luma[7, 7] = luma[7, 7] + 1 if luma[7, 7] < 255 else 254
    return _tables("ijg-perturbed", luma, np.rint(chroma), quality=int(quality),
                   spread=round(spread, 4))


def _flat(rng: np.random.Generator, quality: int) -> QuantTables:
    step = int(round(1 + (100 - quality) / 50 * rng.uniform(2, 10)))
    chroma_step = step + int(rng.integers(0, 5))
    return _tables("flat", np.full((8, 8), step), np.full((8, 8), chroma_step),
                   quality=int(quality))


def _smooth(rng: np.random.Generator, quality: int) -> QuantTables:
    """step = s (1 + a (u + v) + b u v): a plane rising with frequency, bent upwards."""
    scale = 1 + (100 - quality) / 50 * 5
    slope, bend = float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.0, 0.06))
    total, product = _FREQUENCY_U + _FREQUENCY_V, _FREQUENCY_U * _FREQUENCY_V
    ramp = 1 + slope * total + bend * product
    chroma_scale = float(rng.uniform(1.2, 2.0))
    chroma_ramp = 1 + 1.4 * slope * total + bend * product
    return _tables("smooth", np.rint(scale * ramp), np.rint(scale * chroma_scale * chroma_ramp),
                   quality=int(quality), slope=round(slope, 4), bend=round(bend, 4),
                   chroma_scale=round(chroma_scale, 4))


def _camera(rng: np.random.Generator, quality: int) -> QuantTables:
    """The standard shape at a continuous quality, each step rounded up or down at random."""
    fine_quality = float(np.clip(quality + rng.uniform(-0.5, 0.5), 50, 100))
    factor = (200 - 2 * fine_quality) / 100
    luma = np.floor(IJG_LUMA * factor + rng.uniform(0, 1, (8, 8)))
    chroma = np.floor(IJG_CHROMA * factor + rng.uniform(0, 1, (8, 8)))
    return _tables("camera", luma, chroma, quality=round(fine_quality, 3))


_MAKERS = {"ijg": lambda rng, quality: ijg_tables(quality), "ijg-perturbed": _ijg_perturbed,
           "flat": _flat, "smooth": _smooth, "camera": _camera}


def draw_tables(rng: np.random.Generator, families: dict[str, float] | None = None,
                quality: tuple[int, int] = (50, 100)) -> QuantTables:
    """Tables of a family drawn by weight, for a quality drawn uniformly in `quality`
    (both ends included)."""
    weights = TABLE_FAMILIES if families is None else families
    names = [name for name, weight in weights.items() if weight > 0]
    unknown = set(names) - set(_MAKERS)
    if unknown or not names:
        raise ValueError(f"table families must be some of {list(_MAKERS)} with positive weight")
    probabilities = np.array([weights[name] for name in names], dtype=np.float64)
    name = names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]
    drawn_quality = int(rng.integers(quality[0], quality[1] + 1))
    return _MAKERS[name](rng, drawn_quality)


def encode_with_tables(image: np.ndarray, tables: QuantTables, subsampling: str = "4:2:0",
                       progressive: bool = False) -> bytes:
    """The JPEG file of an H x W x 3 uint8 image saved with exactly these tables."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", qtables=[list(tables.luma), list(tables.chroma)],
                                subsampling=SUBSAMPLINGS[subsampling], progressive=progressive)
    return buffer.getvalue()


def resaved_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """An H x W x 3 uint8 image saved as libjpeg would at `quality` (its tables, 4:2:0): the
    re-save that share sites and careless copies apply to evidence."""
    return encode_with_tables(rgb, ijg_tables(quality))
