"""Batch report of a scan: report.json, report.csv and one self-contained report.html.

`run` is the scan's metadata. Any keys are kept (the JSON and the HTML's "complete run
metadata" show all of them); the HTML summary picks out these when present: version (or
tool_version), command_line (str, or command as an argv list), weights {path, sha256,
config, input_size}, image_score (how it is computed), device, started, finished, and the
settings {...} and model {...} tables.

Each record describes one input image (see `CSV_COLUMNS` for the flattened fields); when
`error` is set, the prediction fields are None. All three files are written atomically and
hold no time of their own making, so the same inputs give the same bytes."""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import os
import re
import shlex
import warnings
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePath
from urllib.parse import quote

from PIL import Image

from .atomic import write_bytes_atomic
from .clue_report import CLUE_COLUMNS, clue_lines, clue_value, layer_switch
from .render import open_thumbnail, thumbnail_jpeg

REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
REPORT_HTML = "report.html"
EXIF_KEYS = ("Make", "Model", "Software", "DateTime", "DateTimeOriginal")
OUTPUT_KEYS = ("overlay", "mask", "prob", "difficulty", "ela", "noise", "dq")
CSV_COLUMNS = (
    "path", "relative_path", "sha256", "bytes", "width", "height", "format", "mode",
    *(f"exif_{key}" for key in EXIF_KEYS),
    "score", "area", "flagged", "scope", "difficulty_label", "difficulty_score", "jpeg_evidence",
    *CLUE_COLUMNS,
    *(f"output_{key}" for key in OUTPUT_KEYS),
    "error",
)
CASE_KEYS = ("id", "examiner", "host", "user")
CASE_COLUMNS = ("case_id", "case_examiner", "case_host", "case_user")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
THUMBNAIL_SIDE = 160
THUMBNAIL_QUALITY = 75
SUMMARY_FIELDS = (
    ("Case", (("case", "id"),)),
    ("Examiner", (("case", "examiner"),)),
    ("Host", (("case", "host"),)),
    ("User", (("case", "user"),)),
    ("Tool version", (("tool_version",), ("version",), ("tool",))),
    ("Command line", (("command",), ("command_line",), ("argv",))),
    ("Weights", (("weights", "path"), ("weights_path",), ("weights",))),
    ("Weights SHA-256", (("weights", "sha256"), ("weights_sha256",))),
    ("Model", (("weights", "config"), ("model", "name"), ("model_config",))),
    ("Input size", (("weights", "input_size"), ("model", "input_size"))),
    ("Image score", (("image_score",),)),
    ("What a flag means", (("flag_meaning",),)),
    ("Device", (("device",),)),
    ("Started", (("started",), ("started_at",))),
    ("Finished", (("finished",), ("finished_at",))),
)


def write_reports(out_dir: str | os.PathLike, run: dict, records: list[dict],
                  thumbnails: bool = True,
                  previews: Mapping[str, tuple[str, str]] | None = None,
                  skipped: list[dict] = ()) -> list[Path]:
    """Writes report.json, report.csv and report.html into out_dir; returns their paths.
    `skipped`: files found under the inputs that are not images ({"path", "reason"})."""
    return [write_json(out_dir, run, records, skipped),
            write_csv(out_dir, records, run.get("case")),
            write_html(out_dir, run, records, thumbnails, previews)]


def _write(out_dir: str | os.PathLike, name: str, data: bytes) -> Path:
    target = Path(out_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, data)
    return target


def _encode(text: str) -> bytes:
    """UTF-8; a file name that is not valid UTF-8 (lone surrogates) keeps its escapes."""
    return text.encode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- JSON

def plain(value):
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python, paths -> str."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_json(out_dir: str | os.PathLike, run: dict, records: list[dict],
               skipped: list[dict] = ()) -> Path:
    """report.json = {"run": run, "images": records, "skipped": files that are not images},
    sorted keys, indent 2, UTF-8."""
    document = {"run": plain(run), "images": plain(list(records)),
                "skipped": plain(list(skipped))}
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    # backslashreplace turns a lone surrogate into a JSON escape: it reads back unchanged.
    return _write(out_dir, REPORT_JSON, _encode(text + "\n"))


# --------------------------------------------------------------------------- CSV

def _field(record: dict, column: str):
    """The value of a flattened CSV column in a record (None when absent)."""
    if column in CLUE_COLUMNS:
        return clue_value(record, column)
    nested = {"exif_": "exif", "output_": "outputs", "difficulty_": "difficulty"}
    for prefix, key in nested.items():
        if column.startswith(prefix):
            inner = record.get(key)
            return inner.get(column[len(prefix):]) if isinstance(inner, dict) else None
    return record.get(column)


def csv_cell(value) -> str:
    """Text of one CSV cell; text that a spreadsheet would run as a formula gets a leading
    single quote (numbers are written by us and never start that way)."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(record: dict) -> list[str]:
    return [csv_cell(_field(record, column)) for column in CSV_COLUMNS]


def write_csv(out_dir: str | os.PathLike, records: list[dict], case: dict | None = None
              ) -> Path:
    """report.csv: a header of CSV_COLUMNS and one row per record, in the given order; with
    `case` (the run's {"id", "examiner", "host", "user"}), CASE_COLUMNS close every row, so
    each row says whose scan it comes from."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    case_cells = [csv_cell(case.get(key)) for key in CASE_KEYS] if case else []
    writer.writerow(CSV_COLUMNS + (CASE_COLUMNS if case else ()))
    writer.writerows(csv_row(record) + case_cells for record in records)
    return _write(out_dir, REPORT_CSV, _encode(buffer.getvalue()))


# --------------------------------------------------------------------------- HTML helpers

def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _failed(record: dict) -> bool:
    return record.get("error") is not None or _finite(record.get("score")) is None


def report_order(records: list[dict]) -> list[dict]:
    """Score descending, ties by relative path, failed images last."""
    def key(record: dict):
        score = _finite(record.get("score"))
        name = str(record.get("relative_path") or record.get("path") or "")
        return _failed(record), -(score or 0.0), name
    return sorted(records, key=key)


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(relative: str) -> str:
    """Link to a file given relative to the report's folder (never to another host)."""
    path = str(relative).replace("\\", "/")
    if os.path.isabs(path):
        return Path(path).as_uri()
    return "./" + quote(path.lstrip("/"), safe="/", errors="surrogateescape")


def _human_bytes(size) -> str:
    size = _finite(size)
    if size is None:
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("forgeryloc").joinpath("templates/report.html").read_text("utf-8")


def _inline_hash(template: str, tag: str) -> str:
    """CSP source allowing exactly the template's inline <tag> element."""
    match = re.search(rf"<{tag}>(.*?)</{tag}>", template, re.DOTALL)
    digest = hashlib.sha256(match.group(1).encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _content_security_policy(template: str, page_style: str) -> str:
    """Nothing may load from anywhere: images only from data: URIs, only our own script and
    styles run (even if some text escaped escaping, it could not execute)."""
    page_digest = base64.b64encode(hashlib.sha256(page_style.encode("utf-8")).digest())
    return ("default-src 'none'; img-src data:; "
            f"style-src {_inline_hash(template, 'style')} "
            f"'sha256-{page_digest.decode('ascii')}'; "
            f"script-src {_inline_hash(template, 'script')}; "
            "base-uri 'none'; form-action 'none'")


def _css_string(text: str) -> str:
    """A CSS string literal that shows `text` as it is: every character other than letters,
    digits and plain punctuation as a hex escape (no quote, backslash or `</style>` survives)."""
    return '"' + "".join(c if c.isalnum() or c in " -_.,:;/()#+=@" else f"\\{ord(c):x} "
                         for c in text) + '"'


def _page_style(run: dict) -> str:
    """@page rules of the printed report: the case and the tool in the header of every page,
    when the scan started and the page number of the page count in the footer."""
    case = run.get("case") if isinstance(run.get("case"), dict) else {}
    case_text = f"Case {case['id']}" if case.get("id") else "no case ID given"
    if case.get("examiner"):
        case_text += f" · examiner {case['examiner']}"
    started = _run_fact(run, (("started",), ("started_at",)))
    box = "font: 9pt system-ui, sans-serif; color: #444;"
    return ("@page { size: A4; margin: 16mm 12mm 16mm 12mm; "
            f"@top-left {{ content: {_css_string(case_text)}; {box} }} "
            f"@top-right {{ content: {_css_string('forgeryloc scan report')}; {box} }} "
            f"@bottom-left {{ content: {_css_string(f'scan started {started}' if started else '')}; "
            f"{box} }} "
            f'@bottom-right {{ content: "page " counter(page) " of " counter(pages); {box} }} }}')


def _fill(template: str, parts: dict[str, str]) -> str:
    """Replaces {{name}} markers in one pass (inserted text is never scanned again)."""
    return re.sub(r"\{\{(\w+)\}\}", lambda match: parts[match.group(1)], template)


# --------------------------------------------------------------------------- summary

def _lookup(run: dict, path: tuple[str, ...]):
    value = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _run_fact(run: dict, candidates) -> str | None:
    for path in candidates:
        value = _lookup(run, path)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return shlex.join(value)
        if value is not None and not isinstance(value, (dict, list, tuple)):
            return str(value)
    return None


def _text_of(value) -> str:
    value = plain(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def _meta_table(pairs) -> str:
    rows = "".join(f"<tr><th>{_esc(key)}</th><td class=\"mono\">{_esc(value)}</td></tr>"
                   for key, value in pairs)
    return f"<table class=\"meta\">{rows}</table>" if rows else ""


def _counts_html(records: list[dict]) -> str:
    failed = sum(record.get("error") is not None for record in records)
    flagged = sum(record.get("flagged") is True for record in records)
    boxes = (("scanned", "images scanned", len(records)),
             ("analysed", "analysed", len(records) - failed),
             ("flagged", "flagged", flagged),
             ("errors", "unreadable or failed", failed))
    return "<div class=\"counts\">" + "".join(
        f"<div class=\"count {name}\" id=\"count-{name}\"><b>{number}</b>{_esc(label)}</div>"
        for name, label, number in boxes) + "</div>"


def _summary_html(run: dict) -> str:
    facts = [(label, _run_fact(run, candidates)) for label, candidates in SUMMARY_FIELDS]
    parts = [_meta_table((label, value) for label, value in facts if value is not None)]
    for title, key in (("Settings", "settings"), ("Model", "model")):
        section = run.get(key)
        if isinstance(section, dict) and section:
            pairs = ((name, _text_of(section[name])) for name in sorted(section, key=str))
            parts.append(f"<h2>{title}</h2>" + _meta_table(pairs))
    return "".join(parts)


# --------------------------------------------------------------------------- rows

def preview_pair(photo: Image.Image, overlay_photo: Image.Image) -> tuple[str, str]:
    """The report's two previews (the photo, the photo part of its overlay) as base64 JPEG,
    made by a scan while both pictures are still in memory."""
    return tuple(base64.b64encode(thumbnail_jpeg(picture, THUMBNAIL_SIDE, THUMBNAIL_QUALITY))
                 .decode("ascii") for picture in (photo, overlay_photo))


def _img_tag(data: bytes, encoded: str | None = None) -> str:
    """<img> of a JPEG; `encoded`: its base64 text when the caller already has it."""
    with Image.open(io.BytesIO(data)) as preview:
        width, height = preview.size
    uri = "data:image/jpeg;base64," + (encoded or base64.b64encode(data).decode("ascii"))
    return f"<img src=\"{uri}\" width=\"{width}\" height=\"{height}\" alt=\"\" decoding=\"async\">"


def _thumbnail(path: Path | str, crop_size=None, made: str | None = None) -> str | None:
    """An <img> with a small embedded JPEG (`made` by the scan, else read from `path`), or
    None when the file cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if made is not None:
                return _img_tag(base64.b64decode(made, validate=True), made)
            return _img_tag(open_thumbnail(path, THUMBNAIL_SIDE, THUMBNAIL_QUALITY, crop_size))
    except Exception:  # noqa: BLE001 - a preview is optional; any failure just omits it
        return None


def _photo_size(record: dict) -> tuple[int, int] | None:
    """(width, height) of the analysed photo, to crop the legend off its overlay preview."""
    size = (plain(record.get("width")), plain(record.get("height")))
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        return size
    return None


def _thumbnail_cells(record: dict, out_dir: Path, enabled: bool,
                     made: tuple[str, str] | None = None) -> str:
    """Photo and overlay preview cells (the overlay preview links to the overlay PNG);
    `made`: the pair of previews the scan made (see preview_pair), else they are read from
    the files."""
    if not enabled:
        return "<td class=\"thumb missing\">—</td><td class=\"thumb missing\">—</td>"
    made_photo, made_overlay = made or (None, None)
    photo = _thumbnail(str(record.get("path") or ""), made=made_photo)
    overlay_name = (record.get("outputs") or {}).get("overlay")
    overlay = None
    if overlay_name:
        img = _thumbnail(out_dir / str(overlay_name), _photo_size(record), made_overlay)
        overlay = img and f"<a href=\"{_esc(_href(overlay_name))}\">{img}</a>"
    overlay = layer_switch(record, overlay, lambda name: _thumbnail(
        out_dir / str(name), _photo_size(record)))
    missing = "<span class=\"missing\">no preview</span>"
    return "".join(f"<td class=\"thumb\">{cell or missing}</td>" for cell in (photo, overlay))


def _file_cell(record: dict) -> str:
    name = record.get("relative_path") or record.get("path")
    lines = [f"<div class=\"path\">{_esc(name)}</div>"]
    if record.get("path") and record.get("path") != name:
        lines.append(f"<div class=\"small\">given as {_esc(record['path'])}</div>")
    facts = []
    if record.get("width") and record.get("height"):
        facts.append(f"{record['width']}×{record['height']}")
    facts += [str(record[key]) for key in ("format", "mode") if record.get(key)]
    if record.get("bytes") is not None:
        facts.append(_human_bytes(record["bytes"]))
    if facts:
        lines.append(f"<div class=\"small\">{_esc(' · '.join(facts))}</div>")
    if record.get("sha256"):
        lines.append(f"<div class=\"small mono\">SHA-256 {_esc(record['sha256'])}</div>")
    exif = record.get("exif") or {}
    exif_text = " · ".join(f"{key}: {exif[key]}" for key in EXIF_KEYS if exif.get(key))
    if exif_text:
        lines.append(f"<div class=\"small\">EXIF {_esc(exif_text)}</div>")
    lines.append(clue_lines(record))
    return "<td>" + "".join(lines) + "</td>"


def _links_cell(outputs: dict) -> str:
    links = "".join(f"<a href=\"{_esc(_href(outputs[key]))}\">{key}</a>"
                    for key in OUTPUT_KEYS if outputs.get(key))
    return f"<td class=\"links\">{links}</td>"


def _result_cells(record: dict) -> str:
    """Score, area, verdict, difficulty and outputs; one message cell for failures."""
    if _failed(record):
        message = record.get("error") or "no score"
        return ("<td colspan=\"5\" class=\"message\"><span class=\"badge error\">not analysed"
                f"</span> {_esc(message)}</td>")
    score, area = _finite(record.get("score")), _finite(record.get("area"))
    verdict = ("<span class=\"badge flagged\">FLAGGED</span>" if record.get("flagged")
               else f"<span class=\"badge clear\" title=\"{_esc(record['scope'])}\">not a "
                    f"photograph: not flagged</span>" if record.get("scope")
               else "<span class=\"badge clear\">not flagged</span>")
    difficulty = record.get("difficulty") or {}
    level = _finite(difficulty.get("score"))
    shown = "" if level is None else ("(saturated)" if min(level, 1.0 - level) < 1e-4
                                      else f"({level:.2f})")  # as render.difficulty_headline
    difficulty_text = " ".join(filter(None, [str(difficulty.get("label") or ""), shown]))
    return (f"<td class=\"num score\">{score:.3f}</td>"
            f"<td class=\"num area\">{'' if area is None else f'{area * 100:.1f} %'}</td>"
            f"<td>{verdict}</td><td>{_esc(difficulty_text)}</td>"
            + _links_cell(record.get("outputs") or {}))


def _row_html(index: int, record: dict, out_dir: Path, thumbnails: bool,
              previews: Mapping[str, tuple[str, str]]) -> str:
    failed = _failed(record)
    classes = "row error" if failed else ("row flagged" if record.get("flagged") else "row")
    score = "" if failed else repr(_finite(record.get("score")))
    area = _finite(record.get("area"))
    area = "" if failed or area is None else repr(area)
    name = record.get("relative_path") or record.get("path") or ""
    return (f"<tr class=\"{classes}\" data-index=\"{index}\" data-score=\"{score}\" "
            f"data-area=\"{area}\" data-path=\"{_esc(name)}\">"
            + _thumbnail_cells(record, out_dir, thumbnails,
                               previews.get(str(record.get("relative_path"))))
            + _file_cell(record)
            + _result_cells(record) + "</tr>")


# --------------------------------------------------------------------------- page

def render_html(out_dir: str | os.PathLike, run: dict, records: list[dict],
                thumbnails: bool = True,
                previews: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The report page as text; outputs are found relative to out_dir. `previews` maps a
    record's relative path to the previews its scan made (the others are read from files)."""
    out_dir = Path(out_dir)
    template = _template()
    rows = "\n".join(_row_html(index, record, out_dir, thumbnails, previews or {})
                     for index, record in enumerate(report_order(records)))
    run_json = json.dumps(plain(run), indent=2, sort_keys=True, ensure_ascii=False)
    page_style = _page_style(run)
    return _fill(template, {
        "csp": _esc(_content_security_policy(template, page_style)),
        "page_style": page_style,
        "summary": _counts_html(records) + _summary_html(run),
        "rows": rows,
        "run_json": _esc(run_json),
    })


def write_html(out_dir: str | os.PathLike, run: dict, records: list[dict],
               thumbnails: bool = True,
               previews: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """report.html: one self-contained page (inline CSS/JS, previews as data: URIs)."""
    return _write(out_dir, REPORT_HTML,
                  _encode(render_html(out_dir, run, records, thumbnails, previews)))
