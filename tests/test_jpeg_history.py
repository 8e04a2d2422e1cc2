"""JPEG compression histories: tables, exact final bytes, replayable chains, DQ evidence, files."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.data.jpeg_history import (
    AUTHENTIC_KINDS, HISTORY_KINDS, TAMPERED_KINDS, HistoryOdds, JpegHistorySynthesizer,
    write_history_dataset,
)
from forgeryloc.data.jpeg_tables import (
    QuantTables, draw_tables, encode_with_tables, ijg_tables,
)
from forgeryloc.data.synth import RESAMPLERS, PhotoLibrary, decode_jpeg

HEIGHT, WIDTH = 120, 160
SMALL = {"max_side": 128, "min_side": 64}
SAMPLING_FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}  # luma (h, v)


def _photo(seed: int) -> np.ndarray:
    """Gradients, waves and noise: busy enough that most DCT coefficients are non-zero."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    channels = []
    for _ in range(3):
        gradient = rng.uniform(60, 180) + rng.uniform(-0.5, 0.5) * yy + rng.uniform(-0.4, 0.4) * xx
        waves = 30 * np.sin(xx / rng.uniform(2, 5) + yy / rng.uniform(3, 7))
        channels.append(gradient + waves + rng.normal(0, 12, yy.shape))
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    """Three lossless photos and one read from a JPEG file."""
    root = tmp_path_factory.mktemp("photos")
    for seed in range(3):
        Image.fromarray(_photo(seed)).save(root / f"raw{seed}.png")
    Image.fromarray(_photo(7)).save(root / "camera.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def library(photo_root) -> PhotoLibrary:
    return PhotoLibrary([photo_root])


def _tables(record: dict) -> QuantTables:
    return QuantTables(record["family"], tuple(record["luma"]), tuple(record["chroma"]))


def _samples(library, count: int, seed: int = 0, **options):
    synthesizer = JpegHistorySynthesizer(library, **{**SMALL, **options})
    return [synthesizer.sample(index, seed) for index in range(count)]


# ----------------------------------------------------------------------------- tables


def test_ijg_tables_are_libjpeg_s():
    image = _photo(0)[:16, :16]
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as saved:
            tables = ijg_tables(quality)
            assert list(saved.quantization[0]) == list(tables.luma), quality
            assert list(saved.quantization[1]) == list(tables.chroma), quality
    assert ijg_tables(100).luma == (1,) * 64 and ijg_tables(50).luma[:3] == (16, 11, 10)


def test_every_family_saves_exactly_its_tables():
    rng = np.random.default_rng(0)
    image = _photo(1)[:32, :32]
    for family in ("ijg", "ijg-perturbed", "flat", "smooth", "camera"):
        for _ in range(4):
            tables = draw_tables(rng, {family: 1.0}, (50, 100))
            assert tables.family == family
            assert all(1 <= step <= 255 for step in tables.luma + tables.chroma)
            if family == "ijg-perturbed":
                assert tables.luma != ijg_tables(tables.params["quality"]).luma
            if family == "flat":
                assert len(set(tables.luma)) == 1
            with Image.open(io.BytesIO(encode_with_tables(image, tables, "4:4:4"))) as saved:
                assert list(saved.quantization[0]) == list(tables.luma)
                assert list(saved.quantization[1]) == list(tables.chroma)
            json.dumps(tables.to_json())
    with pytest.raises(ValueError):
        draw_tables(rng, {"mystery": 1.0})


# ----------------------------------------------------------------------------- the final file


def test_final_bytes_decode_and_carry_the_last_chain_step(library):
    kinds = set()
    for forgery in _samples(library, 40):
        history = forgery.history
        kinds.add(forgery.kind)
        json.dumps(history)
        last = history["chain"][-1]
        assert last["role"] == "final" and last["grid"] == [0, 0]
        with Image.open(io.BytesIO(forgery.jpeg)) as saved:
            assert saved.format == "JPEG"
            assert list(saved.quantization[0]) == last["table"]["luma"]
            assert list(saved.quantization[1]) == last["table"]["chroma"]
            assert saved.layer[0][1:3] == SAMPLING_FACTORS[last["subsampling"]]
            assert bool(saved.info.get("progressive")) == last["progressive"]
            assert (saved.height, saved.width) == tuple(history["size"])
        height, width = history["size"]
        assert height % 8 == 0 and width % 8 == 0 and max(height, width) <= SMALL["max_side"]
        assert forgery.decode().shape == (height, width, 3)
        assert forgery.mask.shape == (height, width) and forgery.mask.dtype == np.uint8
        assert set(np.unique(forgery.mask)) <= {0, 1}
        assert forgery.mask.any() == forgery.tampered == (forgery.kind in TAMPERED_KINDS)
        assert history["mask_fraction"] == pytest.approx(forgery.mask.mean(), abs=1e-6)
        # a table saved again on its own grid is nearly a no-op: the final one always differs
        for stage in history["chain"][:-1]:
            if stage["grid"] == [0, 0]:
                assert stage["table"]["luma"] != last["table"]["luma"]
    assert kinds == set(HISTORY_KINDS)


def _replay_authentic(library: PhotoLibrary, history: dict) -> bytes:
    """The final file rebuilt from the history alone: photo, downscale, window, first save,
    crop, last save."""
    host = history["host"]
    rgb = library.load(library.names.index(host["photo"]))[0]
    if host["scale"] < 1:
        size = (host["size"][1], host["size"][0])
        rgb = np.asarray(Image.fromarray(rgb).resize(size, RESAMPLERS[host["resample"]]))
    top, left, height, width = host["window"]
    window = np.ascontiguousarray(rgb[top:top + height, left:left + width])
    chain = history["chain"]
    if host["compressed"]:
        first = chain[0]
        window = decode_jpeg(encode_with_tables(window, _tables(first["table"]),
                                                first["subsampling"], first["progressive"]))
    rows, cols = host["crop"]
    final_height, final_width = history["size"]
    crop = np.ascontiguousarray(window[rows:rows + final_height, cols:cols + final_width])
    last = chain[-1]
    return encode_with_tables(crop, _tables(last["table"]), last["subsampling"],
                              last["progressive"])


def test_authentic_chains_replay_to_the_same_bytes(library):
    """Known answer: the history is the chain actually applied, byte for byte."""
    counts = dict.fromkeys(AUTHENTIC_KINDS, 0)
    for forgery in _samples(library, 18, seed=3, kinds=dict.fromkeys(AUTHENTIC_KINDS, 1.0)):
        history = forgery.history
        counts[forgery.kind] += 1
        assert not forgery.mask.any() and history["region"] is None
        assert _replay_authentic(library, history) == forgery.jpeg
        host, chain = history["host"], history["chain"]
        if forgery.kind == "single":
            assert len(chain) == 1 and not host["compressed"]
            if host["photo"].endswith(".jpg"):  # its own blocking erased by a downscale
                assert host["scale"] < 1
        else:
            assert len(chain) == 2 and chain[0]["role"] == "host"
            aligned = forgery.kind == "double-aligned"
            assert (host["crop"][0] % 8 == 0 and host["crop"][1] % 8 == 0) == aligned
            assert (chain[0]["grid"] == [0, 0]) == aligned
            assert chain[0]["grid"] == [-host["crop"][0] % 8, -host["crop"][1] % 8]
    assert min(counts.values()) >= 2, counts


def test_splice_and_copy_move_regions(library):
    seen = set()
    for forgery in _samples(library, 30, seed=5, kinds={"splice": 1.0, "copy-move": 1.0}):
        history, region = forgery.history, forgery.history["region"]
        height, width = history["size"]
        top, left, box_h, box_w = region["box"]
        assert 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
        ys, xs = np.nonzero(forgery.mask)
        assert ys.size > 0
        if region["feather"] == 0:  # a hard edge: the mask is the region, inside its box
            assert ys.min() >= top and ys.max() < top + box_h
            assert xs.min() >= left and xs.max() < left + box_w
        assert 0.005 <= forgery.mask.mean() <= 0.4
        host_grid = history["host"]["grid"]
        if forgery.kind == "splice":
            donor = next(stage for stage in history["chain"] if stage["role"] == "donor")
            assert region["grid"] == donor["grid"]
            assert region["donor"]["photo"] != history["host"]["photo"]
            if host_grid == donor["grid"]:  # same grid: the tables must tell them apart
                host = history["chain"][0]
                assert host["table"]["luma"] != donor["table"]["luma"]
            seen.add(("splice", region["grid"] == [0, 0], host_grid is None))
        else:
            shift = region["shift"]
            assert (shift[0] % 8, shift[1] % 8) != (0, 0)  # never on the grid
            assert region["grid"] == [(host_grid[0] + shift[0]) % 8,
                                      (host_grid[1] + shift[1]) % 8]
            assert region["grid"] != host_grid
            seen.add(("copy-move", False, False))
    assert ("splice", False, False) in seen and ("copy-move", False, False) in seen


def _first_grid_fit(coefficients: np.ndarray, final: np.ndarray, first: np.ndarray,
                    blocks: np.ndarray) -> tuple[float, int]:
    """Share of the chosen blocks' non-zero low AC coefficients whose dequantised value lies
    within half a final step (plus 1 for the pixels' rounding) of a multiple of the first
    compression's step (about 1 after an aligned double compression, much lower otherwise),
    and how many were counted."""
    fits = total = 0
    for v in range(4):
        for u in range(4):
            if (v, u) == (0, 0) or first[v, u] < 3 * final[v, u]:
                continue
            values = coefficients[blocks][:, v, u].astype(np.float64) * final[v, u]
            values = values[values != 0]
            distance = np.abs(values - np.rint(values / first[v, u]) * first[v, u])
            fits += int((distance <= final[v, u] / 2 + 1).sum())
            total += values.size
    return fits / max(total, 1), total


def test_tampered_regions_lack_the_host_s_double_quantisation(library, tmp_path):
    """Known answer in the file's own coefficients: with a coarse first save (q 50-60) kept on
    the grid and a fine last one (q 95-100), the host's blocks carry the first quantisation's
    comb and the spliced, moved or transformed blocks do not."""
    jpeglib = pytest.importorskip("jpeglib")
    odds = HistoryOdds(quality=(50, 60), final_quality=(95, 100), tables={"ijg": 1.0},
                       host_raw=0.0, host_aligned=1.0, paste_aligned=0.0, feather=0.0)
    path = tmp_path / "sample.jpg"
    scores = {kind: {"host": [], "region": []} for kind in TAMPERED_KINDS}
    for forgery in _samples(library, 36, seed=8, kinds=dict.fromkeys(TAMPERED_KINDS, 1.0),
                            odds=odds):
        path.write_bytes(forgery.jpeg)
        luma = jpeglib.read_dct(str(path)).Y  # blocks_y x blocks_x x 8 x 8
        chain = forgery.history["chain"]
        final = np.array(chain[-1]["table"]["luma"]).reshape(8, 8)
        first = np.array(chain[0]["table"]["luma"]).reshape(8, 8)
        rows, cols = luma.shape[:2]
        cover = forgery.mask[:rows * 8, :cols * 8].reshape(rows, 8, cols, 8).mean(axis=(1, 3))
        for part, blocks in (("host", cover == 0), ("region", cover == 1)):
            scores[forgery.kind][part].append(_first_grid_fit(luma, final, first, blocks))
    for kind, parts in scores.items():
        host, region = ([share for share, count in parts[p] if count >= 50] for p in parts)
        assert host and region, kind
        assert min(host) > 0.9, (kind, host)
        assert max(region) < 0.6, (kind, region)


def test_sample_is_deterministic(photo_root):
    first = JpegHistorySynthesizer(PhotoLibrary([photo_root]), **SMALL)
    second = JpegHistorySynthesizer(PhotoLibrary([photo_root]), **SMALL)
    for index in range(5):  # fill the first one's photo cache differently
        first.sample(50 + index, 1)
    for index in range(10):
        a, b = first.sample(index, 2), second.sample(index, 2)
        assert a.jpeg == b.jpeg and a.mask.tobytes() == b.mask.tobytes()
        assert a.history == b.history
    assert first.sample(0, 2).jpeg != first.sample(1, 2).jpeg
    assert first.sample(0, 2).jpeg != first.sample(0, 3).jpeg


def test_kind_weights_and_authentic_share(library):
    synthesizer = JpegHistorySynthesizer(library, authentic_fraction=0.5)
    authentic = sum(synthesizer.kinds.get(kind, 0) for kind in AUTHENTIC_KINDS)
    assert authentic == pytest.approx(0.5) and sum(synthesizer.kinds.values()) == pytest.approx(1)
    only = JpegHistorySynthesizer(library, kinds={"splice": 1.0}, authentic_fraction=0.25)
    assert only.kinds["splice"] == pytest.approx(0.75)
    assert only.kinds["single"] == pytest.approx(0.25 / 3)
    with pytest.raises(ValueError):
        JpegHistorySynthesizer(library, kinds={"warp": 1.0})
    single = PhotoLibrary([library.paths[0]])
    assert "splice" not in JpegHistorySynthesizer(single).kinds
    with pytest.raises(ValueError):
        JpegHistorySynthesizer(single, kinds={"splice": 1.0})


# ----------------------------------------------------------------------------- files


def test_written_dataset_holds_the_final_bytes(photo_root, tmp_path):
    out = tmp_path / "history"
    summary = write_history_dataset([photo_root], out, count=8, seed=4, max_side=128)
    assert summary["tampered"] + summary["authentic"] == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "forgeryloc.data.jpeg_history" and manifest["seed"] == 4
    reference = JpegHistorySynthesizer(PhotoLibrary([photo_root]), max_side=128)
    for index, sample in enumerate(manifest["samples"]):
        forgery = reference.sample(index, 4)
        image_path = out / sample["image"]
        data = image_path.read_bytes()
        assert image_path.suffix == ".jpg" and data[:3] == b"\xff\xd8\xff"
        assert data == forgery.jpeg
        assert sample["history"] == forgery.history and sample["kind"] == forgery.kind
        with Image.open(image_path) as saved:
            assert list(saved.quantization[0]) == sample["history"]["chain"][-1]["table"]["luma"]
        assert image_path.parent.name == ("tampered" if forgery.tampered else "authentic")
        if not forgery.tampered:
            assert sample["mask"] is None
            continue
        with Image.open(out / sample["mask"]) as mask_image:
            assert mask_image.mode == "L"
            assert np.array_equal(np.asarray(mask_image) == 255, forgery.mask == 1)
    assert not list(out.rglob(".*")), "temporary files left behind"

    write_history_dataset([photo_root], out, count=3, seed=4, max_side=128)
    images = [p for folder in ("tampered", "authentic") for p in (out / folder).iterdir()]
    assert len(images) == 3  # the earlier run's extra files are gone


def test_synth_command_writes_jpeg_histories(photo_root, tmp_path):
    from forgeryloc.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", str(photo_root), "-o", str(out), "-n", "4",
                                      "--kind", "jpeg-history", "--max-side", "96",
                                      "--authentic-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["samples"]) == 4
    for sample in manifest["samples"]:
        with Image.open(out / sample["image"]) as saved:
            assert saved.format == "JPEG" and max(saved.size) <= 96
    bad = CliRunner().invoke(app, ["synth", str(photo_root), "-o", str(out), "--kind", "gif"])
    assert bad.exit_code == 2


# ----------------------------------------------------------------------------- real photos


@pytest.mark.skipif(not Path("/work/shared/data/photos/bsds500").is_dir(),
                    reason="no shared BSDS500 photos")
def test_real_photos_smoke():
    library = PhotoLibrary(["/work/shared/data/photos/bsds500"])
    synthesizer = JpegHistorySynthesizer(library)
    start = time.perf_counter()
    for index in range(20):
        forgery = synthesizer.sample(index, 0)
        assert forgery.mask.any() == forgery.tampered
        with Image.open(io.BytesIO(forgery.jpeg)) as saved:
            assert list(saved.quantization[0]) == forgery.history["chain"][-1]["table"]["luma"]
    print(f"{20 / (time.perf_counter() - start):.0f} BSDS500 samples/s")


def test_laundering_re_saves_the_finished_file_and_records_it(library):
    """With laundering, the file is the final image saved once or twice more on its own grid:
    the chain ends with those saves, whose tables are the file's, and the mask is unchanged."""
    odds = HistoryOdds(launder=1.0, launder_twice=0.5)
    plain = _samples(library, 12)
    laundered = _samples(library, 12, odds=odds)
    times = set()
    for before, after in zip(plain, laundered):
        chain = after.history["chain"]
        saves = [stage for stage in chain if stage["role"] == "launder"]
        times.add(len(saves))
        assert saves and chain[-len(saves):] == saves
        assert chain[-len(saves) - 1]["role"] == "final"
        assert all(stage["grid"] == [0, 0] for stage in saves)
        assert all(70 <= stage["table"]["quality"] <= 95 for stage in saves
                   if stage["table"]["family"] == "ijg")
        with Image.open(io.BytesIO(after.jpeg)) as saved:
            assert list(saved.quantization[0]) == saves[-1]["table"]["luma"]
        # the same draw up to the last save: the same image, mask and kind
        assert after.kind == before.kind and np.array_equal(after.mask, before.mask)
    assert times == {1, 2}


def test_real_windows_can_come_from_a_re_saved_file(photo_root, tmp_path):
    """RealJpegWindows(launder=1): every window comes from the file saved once more (another
    table), with the same block target."""
    from forgeryloc.data.datasets import Sample
    from forgeryloc.data.jpeg_blocks import RealJpegWindows, grid_from_sample

    image = tmp_path / "forged.jpg"
    Image.fromarray(_photo(3)[:, :128]).save(image, quality=55)
    mask = np.zeros((HEIGHT, 128), np.uint8)
    mask[40:80, 32:96] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    sample = Sample(image, tmp_path / "mask.png", "forged", True)
    original = grid_from_sample(sample)
    plain = RealJpegWindows([sample], 64, 0, 4, flips=False)
    laundered = RealJpegWindows([sample], 64, 0, 4, flips=False, launder=1.0)
    for index in range(4):
        _, table, target, weight = plain[index]
        _, new_table, new_target, new_weight = laundered[index]
        assert np.array_equal(table.numpy(), original.table)
        assert not np.array_equal(new_table.numpy(), original.table)
        assert np.array_equal(new_target.numpy(), target.numpy())
        assert np.array_equal(new_weight.numpy(), weight.numpy())


def test_defocus_keeps_one_subject_sharp_and_blurs_the_rest():
    """Known answer: the chosen segment (the only one of a fitting size) keeps its pixels away
    from its edge; elsewhere the high frequencies drop."""
    from forgeryloc.data.defocus import defocus

    rgb = _photo(1)
    labels = np.zeros((HEIGHT, WIDTH), np.int32)
    labels[30:90, 40:120] = 1  # 25% of the picture: the subject
    out, record = defocus(np.random.default_rng(0), rgb, labels, (3.0, 3.0))
    assert record["subject"] == "segment" and record["subject_fraction"] == 0.25
    inner = (slice(36, 84), slice(46, 114))
    assert np.abs(out[inner].astype(int) - rgb[inner]).max() <= 1

    def detail(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())
    background = (slice(0, 24), slice(None))
    assert detail(out[background]) < 0.5 * detail(rgb[background])
    _, without_segments = defocus(np.random.default_rng(0), rgb, None, (2.0, 4.0))
    assert without_segments["subject"] == "ellipse"


def test_defocused_photos_stay_authentic_and_other_odds_keep_their_bytes(library):
    """--defocus blurs before any compression, so an authentic example keeps an empty mask;
    without it, every example is the byte-identical one it always was."""
    authentic = dict.fromkeys(AUTHENTIC_KINDS, 1.0)
    plain = _samples(library, 6, kinds=authentic)
    assert [s.jpeg for s in plain] == [s.jpeg for s in _samples(library, 6, kinds=authentic,
                                                                odds=HistoryOdds())]
    blurred = _samples(library, 6, kinds=authentic, odds=HistoryOdds(defocus=1.0))
    for before, after in zip(plain, blurred):
        assert "defocus" not in before.history["host"]
        assert after.history["host"]["defocus"]["sigma"] >= 1.5
        assert not after.mask.any() and after.jpeg != before.jpeg
