"""What a flag means, in words for the reports: the thresholds a scan used, how the checkpoint's
provenance says they were chosen, and how many held-out authentic photos and forgeries they
flag (`flag_threshold`, `validation`, `validation_conditions`, written by
scripts/ship_weights.py)."""
from __future__ import annotations


def flag_meaning(card, flag_threshold: float, pixel_flag_threshold: float | None,
                 user_threshold: bool) -> str:
    """For the reports: the flag thresholds used and what they were calibrated for (the
    checkpoint's provenance), or that --flag-threshold set them."""
    pixel = pixel_flag_threshold
    at = f"{flag_threshold:g}" + (
        f" ({pixel:g} for images without JPEG evidence)"
        if pixel is not None and pixel != flag_threshold else "")
    if user_threshold:
        return f"an image is flagged at a score of {at}, set by --flag-threshold (not calibrated)"
    calibration = card.provenance.get("flag_threshold")
    if not isinstance(calibration, dict) or "rule" not in calibration:
        return (f"an image is flagged at a score of {at}, the checkpoint's threshold (how it was "
                f"chosen is not recorded in the checkpoint)")
    held_out = calibration.get("held_out_false_alarms") or {}
    # keys name a folder and the half: "<path>/imagenet-sample (held-out half, 150 images)"
    rates = "; ".join(f"{100 * rate:.1f}% of {name.rsplit('/', 1)[-1]}"
                      for name, rate in held_out.items())
    caught = forgeries_flagged(card.provenance, flag_threshold, pixel_flag_threshold)
    return (f"an image is flagged at a score of {at}, the checkpoint's threshold: "
            f"{calibration['rule']}" + (f"; authentic photos held out and flagged: {rates}"
                                        if rates else "")
            + (f"; held-out forgeries flagged: {caught}, so an unflagged image is not cleared"
               if caught else ""))


def condition_name(summary: dict) -> str:
    """How the images of an `evaluate --json` summary were altered before scoring."""
    steps = []
    if summary.get("rescale") is not None:
        steps.append(f"resized by {summary['rescale']:g}")
    if summary.get("resave_quality") is not None:
        steps.append(f"re-saved at JPEG quality {summary['resave_quality']}")
    if summary.get("lossless"):
        steps.append("handed over as PNG")
    if summary.get("without_jpeg"):
        steps.append("read without JPEG evidence")
    return " and ".join(steps) if steps else "as they are"


def forgeries_flagged(provenance: dict, flag_threshold: float,
                      pixel_flag_threshold: float | None = None) -> str:
    """The share of held-out forgeries these thresholds flag, as measured for the checkpoint's
    provenance (`validation`, then `validation_conditions`), e.g. "65 of 86 (76%) of
    casia1-dev files as they are; 43 of 86 (50%) of casia1-dev files re-saved at JPEG quality
    90". Only measurements made at the thresholds in use count (the pixel path's for one made
    without JPEG evidence): a count at another threshold would describe other flags. Empty
    when none was measured."""
    summaries = [provenance.get("validation")] + list(provenance.get("validation_conditions")
                                                      or [])
    parts = []
    for summary in summaries:
        if not isinstance(summary, dict) or not summary.get("tampered") \
                or "tampered_flagged" not in summary:
            continue
        expected = pixel_flag_threshold if summary.get("without_jpeg") \
            and pixel_flag_threshold is not None else flag_threshold
        if summary.get("score_threshold") != expected:
            continue
        flagged, total = summary["tampered_flagged"], summary["tampered"]
        files = f"{summary['dataset']} files" if summary.get("dataset") else "files"
        parts.append(f"{flagged} of {total} ({100 * flagged / total:.0f}%) of {files} "
                     f"{condition_name(summary)}")
    return "; ".join(parts)
