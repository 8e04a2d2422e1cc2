"""How a record's file clues and evidence layers read in report.csv and report.html.

CSV: one flat column per clue (CLUE_COLUMNS). HTML: the clues as short lines under the file's
name, those worth a second look (editing software, tables not from libjpeg, double
compression, decode warnings, a C2PA manifest and its state, metadata that disagree) as
highlighted badges; none of them is called proof. The overlay cell switches between the
overlay and the evidence layers the scan wrote."""
from __future__ import annotations

import html

EVIDENCE_KEYS = ("ela", "noise", "dq")
CLUE_COLUMNS = ("clue_jpeg_quality", "clue_jpeg_ijg_standard", "clue_jpeg_fingerprint",
                "clue_jpeg_subsampling", "clue_jpeg_coding", "clue_double_compression",
                "clue_double_compression_score", "clue_decode_warnings",
                "clue_editing_software", "clue_dates_differ", "clue_thumbnail_differs",
                "clue_camera_fields_missing", "clue_c2pa", "clue_jpeg_in_pixels", "evidence")


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def clue_value(record: dict, column: str):
    """The value of one CLUE_COLUMNS column (None when the record has no such clue)."""
    if column == "evidence":
        return record.get("evidence")
    clues = record.get("clues") or {}
    jpeg = clues.get("jpeg") or {}
    double = jpeg.get("double_compression") or {}
    metadata = clues.get("metadata") or {}
    if column == "clue_jpeg_in_pixels":
        return _in_pixels_text(clues.get("jpeg_in_pixels"))
    if column.startswith("clue_jpeg_"):
        return jpeg.get(column[len("clue_jpeg_"):])
    if column == "clue_double_compression":
        return double.get("detected")
    if column == "clue_double_compression_score":
        return double.get("score")
    if column == "clue_decode_warnings":
        return "; ".join(clues.get("decode_warnings") or []) or None
    if column == "clue_c2pa":
        return _c2pa_text(clues.get("c2pa"))
    name = column[len("clue_"):]
    value = metadata.get(name)
    return "; ".join(value) if isinstance(value, list) else value


def _c2pa_text(record) -> str | None:
    if record is None or isinstance(record, str):
        return record
    if not record.get("manifest"):
        return "no manifest"
    state = record.get("validation_state") or "unknown"
    return f"manifest, {state}" + (f" ({', '.join(record['failures'])})"
                                   if record.get("failures") else "")


def _in_pixels_text(record) -> str | None:
    """A non-JPEG file's pixels: "JPEG, quality ~76, grid (0, 0)" or "none" (None: not
    searched, e.g. a JPEG file)."""
    if not isinstance(record, dict):
        return None
    if not record.get("found"):
        return "none"
    top, left = record.get("grid_origin") or (0, 0)
    return f"JPEG, quality ~{record.get('ijg_quality_fit')}, grid ({top}, {left})"


def clue_lines(record: dict) -> str:
    """HTML lines for the file cell: facts in grey, clues as highlighted badges."""
    clues = record.get("clues")
    if not isinstance(clues, dict):
        return ""
    badges, facts = [], []
    jpeg = clues.get("jpeg") or {}
    if jpeg.get("error"):
        badges.append(("JPEG header unreadable", jpeg["error"]))
    elif jpeg:
        facts.append(f"JPEG {jpeg.get('coding')} {jpeg.get('subsampling')}, quality "
                     f"≈{jpeg.get('quality'):.0f}, tables {jpeg.get('fingerprint')}")
        if jpeg.get("ijg_standard") is False:
            badges.append(("tables not from libjpeg", "non-standard quantisation tables: "
                           "written by an editor or a camera's own encoder"))
        double = jpeg.get("double_compression") or {}
        if double.get("detected"):
            steps = ", ".join(f"{k}:{v}" for k, v in (double.get("first_steps") or {}).items())
            badges.append((f"double JPEG compression (score {double.get('score')})",
                           f"earlier steps by zigzag frequency {steps}"))
    in_pixels = clues.get("jpeg_in_pixels")
    if isinstance(in_pixels, dict) and in_pixels.get("found"):
        badges.append(("was a JPEG before this file", "its pixels hold a JPEG's block grid "
                       f"and quantisation: {_in_pixels_text(in_pixels)} (IJG's table that "
                       "fits best; the history before that save is hidden by the format)"))
    for warning in clues.get("decode_warnings") or []:
        badges.append(("decode warning", warning))
    metadata = clues.get("metadata") or {}
    if metadata.get("editing_software"):
        badges.append((f"editing software: {'; '.join(metadata['editing_software'])}", ""))
    if metadata.get("dates_differ"):
        dates = metadata["dates_differ"]
        badges.append(("dates differ", f"original {dates.get('original')}, modified "
                                       f"{dates.get('modified')}"))
    if metadata.get("thumbnail_differs"):
        badges.append(("EXIF thumbnail differs", f"similarity "
                       f"{metadata['thumbnail_differs'].get('similarity')}"))
    if metadata.get("camera_fields_missing"):
        badges.append(("camera fields missing",
                       ", ".join(metadata["camera_fields_missing"])))
    c2pa = clues.get("c2pa")
    if isinstance(c2pa, dict) and c2pa.get("manifest"):
        actions = ", ".join(a.get("action", "") + (f" ({a['digital_source_type']})"
                                                   if a.get("digital_source_type") else "")
                            for a in c2pa.get("actions") or [])
        detail = "; ".join(filter(None, [f"by {c2pa.get('claim_generator')}"
                                         if c2pa.get("claim_generator") else "",
                                         f"signer {c2pa.get('signer', {}).get('common_name')}"
                                         if c2pa.get("signer") else "",
                                         f"actions {actions}" if actions else "",
                                         ", ".join(c2pa.get("failures") or [])]))
        badges.append((f"C2PA manifest: {c2pa.get('validation_state')}", detail))
    elif isinstance(c2pa, str):
        facts.append(f"C2PA {c2pa}")
    lines = "".join(f"<div class=\"small\">{_esc(fact)}</div>" for fact in facts)
    if badges:
        lines += "<div class=\"clues\">" + "".join(
            f"<span class=\"badge clue\" title=\"{_esc(detail)}\">{_esc(text)}</span>"
            for text, detail in badges) + "</div>"
    return lines


def layer_switch(record: dict, overlay_html: str | None, thumbnail) -> str | None:
    """The overlay cell's content with one view per evidence layer the scan wrote, and
    buttons to switch between them; thumbnail(name) gives the <img> of an output file."""
    outputs = record.get("outputs") or {}
    layers = [key for key in EVIDENCE_KEYS if outputs.get(key)]
    if not layers:
        return overlay_html
    views = [("overlay", overlay_html)] + [(key, thumbnail(outputs[key])) for key in layers]
    missing = "<span class=\"missing\">no preview</span>"
    pictures = "".join(
        f"<div class=\"layer\" data-layer=\"{key}\"{'' if i == 0 else ' hidden'}>"
        f"{view or missing}</div>" for i, (key, view) in enumerate(views))
    pressed = " aria-pressed=\"true\""
    buttons = "".join(f"<button type=\"button\" data-layer=\"{key}\""
                      f"{pressed if i == 0 else ''}>{key}</button>"
                      for i, (key, _) in enumerate(views))
    absent = {k: v for k, v in (record.get("evidence") or {}).items() if v != "written"}
    notes = "".join(f"<div class=\"small\">{_esc(key)}: {_esc(reason)}</div>"
                    for key, reason in absent.items())
    return f"{pictures}<div class=\"layers\">{buttons}</div>{notes}"
