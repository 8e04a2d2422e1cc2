"""End-to-end tests of `forgeryloc scan` through the CLI, on tiny folders and a tiny model."""
import csv
import hashlib
import html
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app
from forgeryloc.render import read_probability_png


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     np.full_like(x, 128)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "evidence"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_photo(60, 80, 0)).save(root / "a.jpg", quality=90)
    Image.fromarray(_photo(60, 80, 1)).save(root / "a.png")
    Image.fromarray(_photo(100, 70, 2)).convert("CMYK").save(root / "sub" / "cmyk.jpg")
    Image.fromarray((_photo(40, 50, 3)[..., 0].astype(np.uint16) * 257)).save(root / "sub" / "deep.png")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.txt").write_text("not an image, ignored when walking folders")
    return root


def _scan(args, input=None):
    return CliRunner().invoke(app, ["scan", *map(str, args)], input=input)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_scan_writes_every_output_and_reports_the_bad_file(folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    result = _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0"])
    assert result.exit_code == 3, result.output
    assert "broken.jpg" in result.output and "Traceback" not in result.output
    report = _report(out)
    images = {r["relative_path"]: r for r in report["images"]}
    assert set(images) == {"a.jpg", "a.png", "broken.jpg", "sub/cmyk.jpg", "sub/deep.png"}
    assert images["broken.jpg"]["error"] and images["broken.jpg"]["score"] is None
    for name in ("a.jpg", "a.png", "sub/cmyk.jpg", "sub/deep.png"):
        record = images[name]
        assert record["error"] is None
        data = (folder / name).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        with Image.open(folder / name) as original:
            size = original.size
        assert (record["width"], record["height"]) == size
        for kind in ("overlay", "mask", "prob", "difficulty"):
            assert record["outputs"][kind] == f"{name}.{kind}.png"
            assert (out / record["outputs"][kind]).is_file()
        with Image.open(out / f"{name}.mask.png") as mask:
            assert mask.size == size and mask.mode == "L"
        prob = read_probability_png(out / f"{name}.prob.png")
        assert prob.shape == (size[1], size[0])
        assert record["area"] == pytest.approx((prob >= 0.5).mean(), abs=2e-3)
        assert 0.0 <= record["score"] <= 1.0 and record["difficulty"]["label"] in ("easy", "hard")
    run = report["run"]
    assert run["weights"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert run["device"] == "cpu" and run["settings"]["mixed_precision"] is False, \
        "bf16 autocast runs on CUDA only: a CPU scan must not claim it"
    counts = run["counts"]
    assert (counts["inputs"], counts["scanned"], counts["unreadable"]) == (5, 4, 1)
    assert counts["flagged"] == sum(bool(r["flagged"]) for r in report["images"])
    rows = list(csv.DictReader(open(out / "report.csv", encoding="utf-8")))
    assert len(rows) == 5
    assert not list(folder.rglob("*.overlay.png")), "nothing may be written beside the inputs"


def test_files_that_are_not_images_are_counted_and_listed(folder, tmp_path, tiny_checkpoint):
    """The report accounts for every file under the inputs: images as records, the rest in
    `skipped` with the reason, and the summary line counts them."""
    (folder / "sub" / "README").write_text("no extension")
    (folder / "linked").symlink_to(folder / "sub", target_is_directory=True)
    out = tmp_path / "out"
    result = _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0"])
    assert result.exit_code == 3, result.output
    report = _report(out)
    skipped = {os.path.relpath(item["path"], folder): item["reason"] for item in report["skipped"]}
    assert skipped == {"notes.txt": "not an image file name (.txt)",
                       "sub/README": "not an image file name (no extension)",
                       "linked": "link to a folder (not followed)"}
    assert report["run"]["counts"]["skipped"] == 3
    assert "3 other files skipped (not images)" in result.stderr
    found = {os.path.relpath(r["path"], folder) for r in report["images"]} | set(skipped)
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() or p.is_symlink()}
    assert found == on_disk, "every file under the input folder is accounted for"


def test_exit_codes_for_clean_and_flagged_batches(folder, tmp_path, tiny_checkpoint):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0"]).exit_code == 0
    flagged = _scan([folder, "-o", tmp_path / "o2", "--weights", tiny_checkpoint, "--workers",
                     "0", "--flag-threshold", "0", "--fail-on-flag"])
    assert flagged.exit_code == 1
    assert all(r["flagged"] for r in _report(tmp_path / "o2")["images"])


def test_drawn_pictures_are_scored_but_never_flagged(folder, tmp_path, tiny_checkpoint):
    """A mask-like drawing gets its maps and score, and a `scope` that says why no flag: even
    at a flag threshold that flags every photograph."""
    (folder / "broken.jpg").unlink()
    drawing = Image.new("L", (90, 70), 0)
    drawing.paste(255, (20, 10, 60, 50))
    drawing.save(folder / "drawing.png")
    out = tmp_path / "out"
    result = _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0",
                    "--flag-threshold", "0"])
    assert result.exit_code == 0, result.output
    assert "(1 drawn picture, never flagged)" in " ".join(result.output.split())
    report = _report(out)
    images = {r["relative_path"]: r for r in report["images"]}
    drawn = images.pop("drawing.png")
    assert drawn["flagged"] is False and drawn["score"] is not None
    assert drawn["scope"].startswith("not a photograph (2 colours")
    assert all((out / path).is_file() for path in drawn["outputs"].values())
    assert images and all(r["flagged"] and r["scope"] is None for r in images.values())
    counts = report["run"]["counts"]
    assert counts["not_photographs"] == 1 and counts["flagged"] == len(images)
    rows = {r["relative_path"]: r for r in csv.DictReader(open(out / "report.csv",
                                                                encoding="utf-8"))}
    assert rows["drawing.png"]["scope"] == drawn["scope"] and rows["a.jpg"]["scope"] == ""
    assert "not a photograph: not flagged" in (out / "report.html").read_text(encoding="utf-8")


def test_reports_say_what_a_flag_means(folder, tmp_path, tiny_checkpoint):
    """The run records the flag thresholds used and how they were chosen: from the checkpoint's
    calibration when it holds one, or as set by hand."""
    from forgeryloc.weights import load_model, save_checkpoint

    (folder / "broken.jpg").unlink()
    model, card = load_model(tiny_checkpoint)
    card.score_threshold, card.pixel_score_threshold = 0.9, 0.95
    card.provenance["flag_threshold"] = {
        "rule": "best balanced accuracy, raised until at most 0.05 of every authentic set is "
                "flagged", "held_out_false_alarms": {"../x/photos (held-out half, 10 images)": 0.1}}
    card.provenance["validation"] = {"dataset": "forgeries", "tampered": 8, "tampered_flagged": 6,
                                     "score_threshold": 0.9}
    card.provenance["validation_conditions"] = [
        {"dataset": "forgeries", "rescale": 0.5, "resave_quality": 85, "tampered": 8,
         "tampered_flagged": 1, "score_threshold": 0.9},
        {"dataset": "forgeries", "resave_quality": 75, "tampered": 8, "tampered_flagged": 2,
         "score_threshold": 0.8}]  # counted at another threshold: not quoted
    calibrated = tmp_path / "calibrated.safetensors"
    save_checkpoint(model, card, calibrated)
    meanings = {}
    for name, weights, extra in (("calibrated", calibrated, []),
                                 ("by hand", calibrated, ["--flag-threshold", "0.7"]),
                                 ("unrecorded", tiny_checkpoint, [])):
        out = tmp_path / name.replace(" ", "-")
        assert _scan([folder, "-o", out, "--weights", weights, "--workers", "0",
                      *extra]).exit_code == 0
        meanings[name] = _report(out)["run"]["flag_meaning"]
        assert html.escape(meanings[name]) in (out / "report.html").read_text(encoding="utf-8")
    assert meanings["calibrated"] == (
        "an image is flagged at a score of 0.9 (0.95 for images without JPEG evidence), the "
        "checkpoint's threshold: best balanced accuracy, raised until at most 0.05 of every "
        "authentic set is flagged; authentic photos held out and flagged: 10.0% of photos "
        "(held-out half, 10 images); held-out forgeries flagged: 6 of 8 (75%) of forgeries "
        "files as they are; 1 of 8 (12%) of forgeries files resized by 0.5 and re-saved at "
        "JPEG quality 85, so an unflagged image is not cleared")
    assert meanings["by hand"] == ("an image is flagged at a score of 0.7, set by "
                                   "--flag-threshold (not calibrated)")
    assert "how it was chosen is not recorded" in meanings["unrecorded"]


def test_usage_errors_exit_2(folder, tmp_path, tiny_checkpoint):
    inside = _scan([folder, "-o", folder / "out", "--weights", tiny_checkpoint])
    assert inside.exit_code == 2 and "inside the input folder" in inside.output
    bad_weights = tmp_path / "w.safetensors"
    bad_weights.write_bytes(b"nope")
    assert _scan([folder, "-o", tmp_path / "o", "--weights", bad_weights]).exit_code == 2
    assert _scan([folder, "-o", tmp_path / "o", "--weights", tiny_checkpoint, "--mode", "x"]).exit_code == 2


def test_a_missing_path_is_reported_like_an_unreadable_image(folder, tmp_path,
                                                             tiny_checkpoint):
    """One line each, an error record each, the rest of the batch scanned, exit 3; the
    outputs of the existing images keep their places (nothing missing moves the common root)."""
    out = tmp_path / "out"
    missing = tmp_path / "nope" / "x.jpg"
    result = _scan([missing, folder / "a.png", str(tmp_path / "none-*.png"), folder / "a.jpg",
                    "-o", out, "--weights", tiny_checkpoint, "--workers", "0"])
    assert result.exit_code == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(lines) == 2 and "no such file or folder" in lines[0], lines
    assert "the pattern matches no file" in lines[1]
    records = _report(out)["images"]
    assert [r["relative_path"] for r in records] == [str(missing), "a.png",
                                                     str(tmp_path / "none-*.png"), "a.jpg"]
    assert records[0]["error"] == "no such file or folder" and records[0]["outputs"] is None
    assert records[1]["error"] is None and (out / "a.png.mask.png").is_file()
    assert _report(out)["run"]["counts"]["unreadable"] == 2
    alone = _scan([missing, "-o", tmp_path / "o2", "--weights", tiny_checkpoint])
    assert alone.exit_code == 3, alone.output


def test_stdin_globs_and_jsonl(folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    listing = f"{folder / 'a.jpg'}\n{folder / 'sub' / 'cmyk.jpg'}\n"
    result = _scan(["-", str(folder / "*.png"), "-o", out, "--weights", tiny_checkpoint,
                    "--workers", "0", "--jsonl", "--quiet"], input=listing)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["path"]).name for r in lines] == ["a.jpg", "cmyk.jpg", "a.png"]
    assert {r["relative_path"] for r in lines} == {"a.jpg", "sub/cmyk.jpg", "a.png"}


def test_resume_skips_finished_images(folder, tmp_path, tiny_checkpoint):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    args = [folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0"]
    assert _scan(args).exit_code == 0
    first = _report(out)
    journal_lines = (out / "journal.jsonl").read_text().splitlines()
    Image.fromarray(_photo(50, 50, 9)).save(folder / "new.png")
    resumed = _scan([*args, "--resume", "--jsonl"])
    assert resumed.exit_code == 0, resumed.output
    new_lines = (out / "journal.jsonl").read_text().splitlines()[len(journal_lines):]
    assert [json.loads(line)["relative_path"] for line in new_lines] == ["new.png"]
    # It says what it reused, and so does each --jsonl line.
    assert "(4 from the journal of the earlier run, 1 now)" in resumed.stderr, resumed.stderr
    printed = {r["relative_path"]: r["resumed"] for r in map(json.loads, resumed.stdout.splitlines())}
    assert printed == {"a.jpg": True, "a.png": True, "sub/cmyk.jpg": True,
                       "sub/deep.png": True, "new.png": False}
    assert _report(out)["run"]["counts"]["resumed"] == 4
    second = _report(out)
    assert len(second["images"]) == len(first["images"]) + 1
    old = {r["relative_path"]: r for r in first["images"]}
    for record in second["images"]:
        if record["relative_path"] in old:
            assert record == old[record["relative_path"]]
    other = _scan([*args, "--resume", "--threshold", "0.3"])
    assert other.exit_code == 2 and "other weights or settings" in other.output


def test_inputs_are_untouched_and_results_reproducible(folder, tmp_path, tiny_checkpoint):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    for name in ("o1", "o2"):
        _scan([folder, "-o", tmp_path / name, "--weights", tiny_checkpoint, "--workers", "0"])
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    assert before == after
    one, two = _report(tmp_path / "o1"), _report(tmp_path / "o2")
    assert one["images"] == two["images"]
    for record in one["images"]:
        if record["outputs"]:
            for kind, rel in record["outputs"].items():
                assert (tmp_path / "o1" / rel).read_bytes() == (tmp_path / "o2" / rel).read_bytes()


def test_tile_mode_covers_the_native_resolution(tmp_path, tiny_checkpoint):
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(_photo(150, 200, 4)).save(folder / "wide.png")
    out = tmp_path / "out"
    result = _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--mode", "tile",
                    "--workers", "0"])
    assert result.exit_code == 0, result.output
    prob = read_probability_png(out / "wide.png.prob.png")
    assert prob.shape == (150, 200)
    assert _report(out)["run"]["settings"]["mode"] == "tile"


def test_worker_processes_give_the_same_report(folder, tmp_path, tiny_checkpoint):
    _scan([folder, "-o", tmp_path / "w0", "--weights", tiny_checkpoint, "--workers", "0"])
    _scan([folder, "-o", tmp_path / "w2", "--weights", tiny_checkpoint, "--workers", "2"])
    assert _report(tmp_path / "w0")["images"] == _report(tmp_path / "w2")["images"]
    assert os.path.isfile(tmp_path / "w2" / "report.html")


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_every_scan_layout_gives_the_same_results(folder, tmp_path, tiny_checkpoint, mode):
    """Pipelines in worker processes, the batched loop with a writer thread (the GPU layout,
    here on the CPU) and the inline loop: the same records and the same output bytes."""
    import torch

    from forgeryloc.discover import discover_inputs
    from forgeryloc.predict import Predictor
    from forgeryloc.scan import ScanSettings, run_scan
    from forgeryloc.weights import load_model

    model, card = load_model(tiny_checkpoint)
    entries = discover_inputs([str(folder)])
    records = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pipelines' own thread count: bit-identical networks
    try:
        for layout, workers in (("pipelines", 2), ("writer", 1), ("inline", 0)):
            settings = ScanSettings(mode=mode, workers=workers, batch_size=2)
            result = run_scan(entries, tmp_path / layout, Predictor(model, card), settings,
                              {"test": layout}, layout=layout)
            records[layout] = [{k: v for k, v in r.items() if k != "path"}
                               for r in result.records]
            assert sum(1 for r in result.records if r["outputs"]) == 4
    finally:
        torch.set_num_threads(threads)
    assert records["pipelines"] == records["writer"] == records["inline"]
    for record in records["inline"]:
        for relative in (record["outputs"] or {}).values():
            contents = {(tmp_path / layout / relative).read_bytes() for layout in records}
            assert len(contents) == 1, relative


def test_report_previews_made_during_the_scan_look_like_those_read_back(folder, tmp_path,
                                                                        tiny_checkpoint):
    """A scan makes the report's previews from the pictures it holds (reading the overlays
    back cost ~30 ms an image after the scan); they show what previews read from the files
    show."""
    import io
    import re

    from forgeryloc import report
    from forgeryloc.discover import discover_inputs
    from forgeryloc.predict import Predictor
    from forgeryloc.scan import ScanSettings, run_scan
    from forgeryloc.weights import load_model

    Image.fromarray(_photo(300, 420, 5)).save(folder / "large.jpg", quality=90)  # scaled down
    model, card = load_model(tiny_checkpoint)
    out = tmp_path / "out"
    result = run_scan(discover_inputs([str(folder)]), out, Predictor(model, card),
                      ScanSettings(workers=0), {"test": "previews"})
    analysed = [r for r in result.records if r["error"] is None]
    assert sorted(result.previews) == sorted(r["relative_path"] for r in analysed)

    def pictures(page: str) -> list[np.ndarray]:
        sources = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
        return [np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(s))),
                           dtype=np.float32) for s in sources]

    read = pictures(report.render_html(out, {}, result.records))
    for record in analysed:  # from here on, only the previews the scan made can show anything
        (out / record["outputs"]["overlay"]).unlink()
        Path(record["path"]).unlink()
    assert len(pictures(report.render_html(out, {}, result.records))) == 0
    made = pictures(report.render_html(out, {}, result.records, previews=result.previews))
    assert len(made) == len(read) == 2 * len(analysed)
    for a, b in zip(made, read):
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 4, np.abs(a - b).mean()


def test_an_image_gets_the_same_numbers_whatever_shares_its_forward(folder, tmp_path,
                                                                    tiny_checkpoint):
    """CPU forwards run fixed groups (padded): an image scanned alone and the same image among
    others (in another group position) give the same bytes."""
    from forgeryloc.scan import CPU_GROUP

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "a.jpg").write_bytes((folder / "a.jpg").read_bytes())
    for i in range(CPU_GROUP + 1):  # a.jpg lands in the second group, beside other images
        Image.fromarray(_photo(50 + i, 70, 10 + i)).save(folder / f"0{i}.png")
    outputs = {}
    for name, source in (("alone", alone), ("crowd", folder)):
        result = _scan([source, "-o", tmp_path / "out" / name, "--weights", tiny_checkpoint,
                        "--workers", "0"])
        assert result.exit_code in (0, 3), result.output
        outputs[name] = [(tmp_path / "out" / name / f"a.jpg.{kind}.png").read_bytes()
                         for kind in ("prob", "mask", "overlay")]
    assert outputs["alone"] == outputs["crowd"]


def test_a_folder_holding_a_scan_is_refused_without_resume_or_overwrite(folder, tmp_path,
                                                                        tiny_checkpoint):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    args = [folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0"]
    assert _scan(args).exit_code == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    again = _scan(args)
    assert again.exit_code == 2, again.output
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--resume" in lines[0] and "--overwrite" in lines[0], lines
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before, "nothing of the earlier scan is touched"
    assert _scan([*args, "--resume", "--overwrite"]).exit_code == 2
    # An interrupted scan (a journal, no report yet) is a scan too.
    (out / "report.json").unlink()
    assert _scan(args).exit_code == 2
    replaced = _scan([*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert len(_report(out)["images"]) == 4


def _sha256sum_check(folder: Path) -> subprocess.CompletedProcess:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum on PATH")
    return subprocess.run(["sha256sum", "--check", "--strict", "manifest.sha256"], cwd=folder,
                          capture_output=True)


def test_case_records_and_a_manifest_that_sha256sum_checks(folder, tmp_path, tiny_checkpoint):
    (folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    args = [folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0", "--case",
            "C-2026/0042"]
    result = CliRunner().invoke(app, ["scan", *map(str, args)],
                                env={"FORGERYLOC_EXAMINER": "Ann Example"})
    assert result.exit_code == 0, result.output
    case = _report(out)["run"]["case"]
    assert (case["id"], case["examiner"]) == ("C-2026/0042", "Ann Example")
    assert case["host"] == socket.gethostname() and case["user"]
    rows = list(csv.DictReader(open(out / "report.csv", encoding="utf-8")))
    assert {(r["case_id"], r["case_examiner"], r["case_host"]) for r in rows} == \
        {("C-2026/0042", "Ann Example", socket.gethostname())}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "C-2026/0042" in html and "Ann Example" in html
    # Every picture and report, each once; the printed hash is report.json's.
    listed = [line.split("  ", 1)[1] for line in
              (out / "manifest.sha256").read_text().splitlines()]
    expected = {str(p.relative_to(out)) for p in out.rglob("*")
                if p.is_file() and p.name != "manifest.sha256"}
    assert sorted(listed) == sorted(expected) and len(expected) == 4 * 4 + 4
    digest = hashlib.sha256((out / "report.json").read_bytes()).hexdigest()
    assert f"report.json SHA-256 {digest}" in result.stderr
    checked = _sha256sum_check(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A resumed scan lists the pictures of the images it took from the journal too.
    Image.fromarray(_photo(30, 40, 7)).save(folder / "late.png")
    assert _scan([*args, "--resume"]).exit_code == 0
    listed = (out / "manifest.sha256").read_text()
    assert "a.jpg.prob.png" in listed and "late.png.prob.png" in listed
    assert _sha256sum_check(out).returncode == 0
    # ...and shows a change made afterwards.
    with open(out / "a.png.mask.png", "ab") as handle:
        handle.write(b"\0")
    assert _sha256sum_check(out).returncode != 0


def _corrupt_jpeg(path: Path) -> None:
    """A JPEG whose entropy-coded data has flipped bytes: Pillow still decodes it (smeared),
    libjpeg warns ("bad Huffman code"). A single flipped byte often passes without a word."""
    buffer = io.BytesIO()
    Image.fromarray(_photo(96, 128, 11)).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xda")
    start += 2 + int.from_bytes(data[start + 2:start + 4], "big")
    for offset in range(start + (len(data) - start) // 4, len(data) - 10, 101):
        if data[offset] != 0xFF and data[offset - 1] != 0xFF:
            data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_corrupt_jpeg_data_that_decodes_is_counted_and_recorded(folder, tmp_path,
                                                                tiny_checkpoint):
    (folder / "broken.jpg").unlink()
    _corrupt_jpeg(folder / "smeared.jpg")
    out = tmp_path / "out"
    result = _scan([folder, "-o", out, "--weights", tiny_checkpoint, "--workers", "0",
                    "--jsonl"])
    assert result.exit_code == 0, result.output
    assert "1 with corrupt JPEG data (decode warnings)" in result.stderr, result.stderr
    records = {r["relative_path"]: r for r in _report(out)["images"]}
    assert records["smeared.jpg"]["error"] is None
    assert any("Corrupt JPEG data" in w for w in records["smeared.jpg"]["clues"]["decode_warnings"])
    assert all(not r["clues"]["decode_warnings"] for name, r in records.items()
               if name != "smeared.jpg")
    assert _report(out)["run"]["counts"]["decode_warnings"] == 1
    printed = {r["relative_path"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert printed["smeared.jpg"]["clues"]["decode_warnings"]
    rows = {r["relative_path"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert "Corrupt JPEG data" in rows["smeared.jpg"]["clue_decode_warnings"]
    assert "Corrupt JPEG data" in (out / "report.html").read_text(encoding="utf-8")


def test_a_lone_tiled_image_spreads_its_tiles_over_threads_and_reports_them(tmp_path,
                                                                           tiny_checkpoint):
    """Tile mode on a CPU with workers: the tiles of one image are forwarded in this process
    by as many threads as torch has, each forward on one torch thread, with the numbers of a
    one-thread scan; each forward is reported so that the progress bar moves by tiles."""
    import threading

    import torch

    from forgeryloc.discover import discover_inputs
    from forgeryloc.maps import tile_grid
    from forgeryloc.predict import Predictor
    from forgeryloc.scan import ScanSettings, run_scan
    from forgeryloc.weights import load_model

    folder = tmp_path / "two"
    folder.mkdir()
    Image.fromarray(_photo(150, 200, 4)).save(folder / "wide.png")
    Image.fromarray(_photo(150, 200, 5)).save(folder / "wider.png")
    model, card = load_model(tiny_checkpoint)
    entries = discover_inputs([str(folder)])
    seen, heard, records = [], [], {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            predictor = Predictor(model, card)
            forward = predictor.forward

            def watched(batch, forward=forward):
                seen.append((count, threading.get_ident(), torch.get_num_threads()))
                return forward(batch)

            predictor.forward = watched
            result = run_scan(entries, tmp_path / f"t{count}", predictor,
                              ScanSettings(mode="tile", workers=2), {"test": "tiles"},
                              on_tiles=lambda done, total: heard.append((done, total)))
            records[count] = [{k: v for k, v in r.items() if k != "path"}
                              for r in result.records]
    finally:
        torch.set_num_threads(threads)
    tiles = len(list(tile_grid(150, 200, card.input_size, ScanSettings().tile_overlap)))
    assert tiles > 4 and heard == [(1, tiles)] * (4 * tiles)  # one tile per CPU forward
    spread = [ident for count, ident, _ in seen if count == 3]
    assert len(set(spread)) > 1 and threading.get_ident() not in spread  # both images
    assert {torch_threads for *_, torch_threads in seen} == {1}
    assert records[1] == records[3] and all(r["outputs"] for r in records[1])
    for record in records[1]:
        for relative in record["outputs"].values():
            assert (tmp_path / "t1" / relative).read_bytes() == \
                (tmp_path / "t3" / relative).read_bytes(), relative


BLAS_THREADS = """
import json, os, sys
import numpy
from threadpoolctl import threadpool_info

def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

before = blas_threads()
if sys.argv[1] == "predictor":
    from forgeryloc.predict import Predictor
    from forgeryloc.weights import load_model
    Predictor(*load_model(sys.argv[2]), "cpu")
else:  # what a scan's DataLoader worker runs first
    from forgeryloc.scan import _worker_init
    _worker_init(os.getppid(), 0)
print(json.dumps([before, blas_threads()]))
"""


@pytest.mark.parametrize("where", ["predictor", "worker"])
def test_scan_processes_keep_numpy_blas_on_one_thread(tiny_checkpoint, where):
    # BLAS threads spinning beside the network and the other workers cost a 2-core scan
    # about a tenth of its time (cpu.one_blas_thread)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "2"
    result = subprocess.run([sys.executable, "-c", BLAS_THREADS, where, str(tiny_checkpoint)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert before and max(before) == 2  # the limit is not the default
    assert after and max(after) == 1
