"""Batch report: report.json, report.csv and the self-contained report.html."""
import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgeryloc import render, report

HOSTILE = "<script>alert('x')</script>&\"q\".png"
RUN = {
    "tool_version": "0.1.0",
    "command": ["forgeryloc", "scan", "photos", "-o", "out"],
    "weights": {"path": "weights/m2sformer.safetensors", "sha256": "c0ffee" * 10 + "abcd"},
    "model": {"name": "m2sformer", "input_size": 512},
    "device": "cpu",
    "settings": {"threshold": 0.5, "batch_size": 1},
    "started": "2025-01-02T03:04:05+00:00",
    "finished": "2025-01-02T03:05:06+00:00",
    "counts": {"scanned": 5, "flagged": 2, "unreadable": 1},
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=2000", "--dump-dom"]


def make_record(root: Path, out_dir: Path, name: str, score, error=None) -> dict:
    """A record with a real photo and overlay file (none for a failed image)."""
    photo = root / "photos" / name
    photo.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "path": str(photo), "relative_path": name, "sha256": "ab" * 32, "bytes": 2048,
        "width": 24, "height": 16, "format": "PNG", "mode": "RGB",
        "exif": {"Make": "<b>Evil</b>", "Model": "X1", "Software": "=HYPERLINK(1)",
                 "DateTime": "2024:01:01 00:00:00", "DateTimeOriginal": "2024:01:01 00:00:00"},
        "score": None, "area": None, "flagged": None, "difficulty": None, "outputs": {},
        "error": error,
    }
    if error is not None:
        photo.write_bytes(b"not an image")
        return record
    rgb = np.full((16, 24, 3), 90, np.uint8)
    Image.fromarray(rgb).save(photo, format="PNG")
    prob = np.full((16, 24), score, np.float32)
    outputs = {key: f"{name}.{key}.png" for key in report.OUTPUT_KEYS}
    (out_dir / outputs["overlay"]).parent.mkdir(parents=True, exist_ok=True)
    render.save_png(render.overlay_image(rgb, prob, 0.5), out_dir / outputs["overlay"])
    record.update(score=score, area=score / 2, flagged=score >= 0.5, outputs=outputs,
                  difficulty={"label": "hard" if score > 0.5 else "easy", "score": 0.25})
    return record


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    out_dir = root / "out"
    out_dir.mkdir()
    records = [make_record(root, out_dir, "b.jpg", 0.40),
               make_record(root, out_dir, "broken.jpg", None, error="corrupt <b>image</b>"),
               make_record(root, out_dir, HOSTILE, 0.95),
               make_record(root, out_dir, "-minus.png", 0.10),
               make_record(root, out_dir, "a.jpg", 0.70)]
    # Larger area, lower score: sorting by area must differ from sorting by score.
    records[3]["area"] = 0.9
    report.write_reports(out_dir, RUN, records)
    return out_dir, records


class RowParser(HTMLParser):
    """Collects the report rows (data-* attributes) and every img src in document order."""

    def __init__(self):
        super().__init__()
        self.rows, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "tr" and "data-index" in attributes:
            self.rows.append(attributes)
        elif tag == "img":
            self.images.append(attributes.get("src", ""))


def parse(text: str) -> RowParser:
    parser = RowParser()
    parser.feed(text)
    return parser


def expected_order(records, key="score"):
    analysed = [r for r in records if r["error"] is None]
    ranked = sorted(analysed, key=lambda r: (-r[key], r["relative_path"]))
    return [r["relative_path"] for r in ranked] + ["broken.jpg"]


# --------------------------------------------------------------------------- JSON

def test_json_round_trip(scan):
    out_dir, records = scan
    document = json.loads((out_dir / "report.json").read_text("utf-8"))
    assert document == {"run": RUN, "images": records, "skipped": []}
    assert not list(out_dir.glob(".*.tmp"))


def test_json_is_stable_and_valid_for_non_finite_values(tmp_path):
    records = [{"path": "x.png", "score": float("nan"), "area": np.float32(0.5),
                "width": np.int64(3), "path_obj": Path("a/b")}]
    first = report.write_json(tmp_path, {"b": 1, "a": 2}, records).read_bytes()
    assert report.write_json(tmp_path, {"a": 2, "b": 1}, records).read_bytes() == first
    image = json.loads(first)["images"][0]
    assert image == {"path": "x.png", "score": None, "area": 0.5, "width": 3,
                     "path_obj": "a/b"}
    assert b"NaN" not in first


def test_json_keeps_undecodable_file_names(tmp_path):
    name = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")
    report.write_json(tmp_path, {}, [{"path": name}])
    assert json.loads((tmp_path / "report.json").read_bytes())["images"][0]["path"] == name


# --------------------------------------------------------------------------- CSV

def read_csv(out_dir: Path) -> list[list[str]]:
    with open(out_dir / "report.csv", newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_csv_columns_and_rows(scan):
    out_dir, records = scan
    rows = read_csv(out_dir)
    assert tuple(rows[0]) == report.CSV_COLUMNS
    assert len(rows) == 1 + len(records)
    first = dict(zip(rows[0], rows[1]))
    assert first["relative_path"] == "b.jpg"
    assert float(first["score"]) == 0.40 and first["flagged"] == "false"
    assert first["exif_Model"] == "X1" and first["difficulty_label"] == "easy"
    assert first["output_overlay"] == "b.jpg.overlay.png"
    failed = dict(zip(rows[0], rows[2]))
    assert failed["error"] == "corrupt <b>image</b>" and failed["score"] == ""


def test_csv_neutralises_formulas(scan):
    out_dir, _ = scan
    rows = read_csv(out_dir)
    header = rows[0]
    minus = dict(zip(header, rows[4]))
    assert minus["relative_path"] == "'-minus.png"
    assert minus["output_mask"] == "'-minus.png.mask.png"
    assert all(dict(zip(header, row))["exif_Software"] == "'=HYPERLINK(1)" for row in rows[1:])
    for value in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx"):
        assert report.csv_cell(value) == "'" + value
    assert report.csv_cell(0.5) == "0.5" and report.csv_cell(None) == ""


# --------------------------------------------------------------------------- HTML (text)

def test_html_has_one_row_per_record_in_score_order(scan):
    out_dir, records = scan
    page = parse((out_dir / "report.html").read_text("utf-8"))
    assert len(page.rows) == len(records)
    assert [row["data-path"] for row in page.rows] == expected_order(records)


def test_html_escapes_hostile_names_and_exif(scan):
    out_dir, _ = scan
    text = (out_dir / "report.html").read_text("utf-8")
    assert "<script>alert" not in text and "<b>Evil" not in text and "<b>image" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;q&quot;.png" in text
    assert text.count("<script>") == 1  # only the report's own script
    assert "%3Cscript%3E" in text  # hrefs are URL-encoded


def test_html_is_self_contained(scan):
    out_dir, _ = scan
    text = (out_dir / "report.html").read_text("utf-8")
    assert "http://" not in text and "https://" not in text
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text, re.IGNORECASE)
    assert references
    assert all(ref.startswith(("data:image/jpeg;base64,", "./")) for ref in references)
    assert "@import" not in text and "url(" not in text
    assert "default-src &#x27;none&#x27;" in text  # CSP: nothing may be fetched


def test_html_thumbnails_are_small_data_uris(scan):
    out_dir, records = scan
    page = parse((out_dir / "report.html").read_text("utf-8"))
    analysed = sum(record["error"] is None for record in records)
    assert len(page.images) == 2 * analysed  # photo + overlay; the broken photo has none
    assert all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    assert all(len(src) < 20000 for src in page.images)


def test_html_without_thumbnails_and_reproducible(tmp_path, scan):
    out_dir, records = scan
    first = report.write_html(out_dir, RUN, records, thumbnails=False).read_bytes()
    assert b"<img" not in first
    assert report.write_html(out_dir, RUN, records, thumbnails=False).read_bytes() == first
    report.write_html(out_dir, RUN, records)  # restore the fixture's page


def test_html_summary_counts_and_run_facts(scan):
    out_dir, _ = scan
    text = (out_dir / "report.html").read_text("utf-8")
    for name, number in (("scanned", 5), ("analysed", 4), ("flagged", 2), ("errors", 1)):
        assert re.search(rf'id="count-{name}"><b>{number}</b>', text)
    assert RUN["weights"]["sha256"] in text and "forgeryloc scan photos -o out" in text


def test_csp_hashes_match_the_inline_script_and_style(scan):
    out_dir, _ = scan
    text = (out_dir / "report.html").read_text("utf-8")
    for tag in ("script", "style"):
        assert report._inline_hash(text, tag).replace("'", "&#x27;") in text


# --------------------------------------------------------------------------- HTML (browser)

def chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser")
                 if (found := shutil.which(name))), None)


def rendered_dom(page: Path, profile: Path, fragment: str = "") -> str:
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               page.resolve().as_uri() + fragment]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_browser_renders_rows_in_score_order_with_images(scan, tmp_path):
    out_dir, records = scan
    dom = rendered_dom(out_dir / "report.html", tmp_path / "profile")
    page = parse(dom)
    assert [row["data-path"] for row in page.rows] == expected_order(records)
    assert len(page.images) == 8 and all(src.startswith("data:") for src in page.images)
    assert 'id="shown" class="small">5 images</span>' in dom  # the script ran under the CSP
    assert "<script>alert" not in dom


def test_browser_sorts_by_area_on_request(scan, tmp_path):
    out_dir, records = scan
    dom = rendered_dom(out_dir / "report.html", tmp_path / "profile", "#sort=area-desc")
    page = parse(dom)
    assert [row["data-path"] for row in page.rows] == expected_order(records, "area")
    assert re.search(r'data-key="area" aria-sort="descending"', dom)


def test_report_prints_to_a_clean_pdf(scan, tmp_path):
    """Printed with headless Chromium: the summary on page 1, then the images, none split
    across pages; no controls; the case and "page k of N" on every page."""
    pypdf = pytest.importorskip("pypdf")
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    out_dir, records = scan
    rows = [dict(records[0], relative_path=f"img{i:02d}.jpg", score=round(0.9 - i / 50, 3))
            for i in range(12)]
    case = 'C-7 "</style><b>x'  # shown as it is, never taken for markup or CSS
    run = dict(RUN, case={"id": case, "examiner": "Ann Example", "host": "h", "user": "u"})
    page = tmp_path / "report.html"
    page.write_text(report.render_html(out_dir, run, rows), encoding="utf-8")
    pdf = tmp_path / "report.pdf"
    result = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", "--disable-background-networking",
                             f"--user-data-dir={tmp_path / 'profile'}", "--no-pdf-header-footer",
                             f"--print-to-pdf={pdf}", page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and pdf.is_file(), result.stderr[-2000:]
    texts = [p.extract_text() for p in pypdf.PdfReader(pdf).pages]
    count = len(texts)
    assert count >= 3, f"{count} pages: the summary, then 12 rows of thumbnails"
    for number, text in enumerate(texts, 1):
        flat = " ".join(text.split())
        assert f"Case {case} · examiner Ann Example" in flat, (number, flat[:300])
        assert f"page {number} of {count}" in flat, (number, flat[-300:])
        assert "show flagged images only" not in flat and "Complete run metadata" not in flat
    assert "Weights SHA-256" in texts[0] and "img00.jpg" not in texts[0]
    for row in rows:
        pages = [n for n, text in enumerate(texts) if row["relative_path"] in text]
        assert len(pages) == 1, (row["relative_path"], pages)
        assert f"{row['score']:.3f}" in texts[pages[0]], "a row is never split across pages"


def test_a_saturated_difficulty_score_is_not_shown_as_a_number():
    from forgeryloc.report import _result_cells
    record = {"score": 0.2, "area": 0.1, "flagged": False, "outputs": {},
              "difficulty": {"label": "hard", "score": 1.0}}
    assert "hard (saturated)" in _result_cells(record)
    record["difficulty"]["score"] = 0.62
    assert "hard (0.62)" in _result_cells(record)
