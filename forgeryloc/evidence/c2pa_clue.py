"""Content Credentials (C2PA): what a file's manifest says about where it came from.

Read through the Content Authenticity Initiative's own binding `c2pa-python` (an optional
extra: `pip install 'forgeryloc[c2pa]'`; its wheels cover common Linux, macOS and Windows
machines only). The reader never goes to the network: remote manifests and certificate
status (OCSP) are not fetched, so a manifest stored elsewhere than in the file is reported
as such, not read.

The record: whether a manifest is present; for the active one, the claim generator, the
signer (certificate common name and issuer), the validation state ("Invalid", "Valid" or
"Trusted": Valid means the signature and hashes check out, not that the signer is known;
no trust list is configured here, so "Trusted" does not occur), the failed checks, and the
recorded actions (c2pa.created, c2pa.edited, ..., with their digital source type where given,
e.g. trainedAlgorithmicMedia for AI-generated content).
"""
from __future__ import annotations

import io
import json
import os
import threading
from functools import lru_cache

NOT_CHECKED = "not checked (install forgeryloc[c2pa])"
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff",
              "WEBP": "image/webp", "AVIF": "image/avif", "HEIF": "image/heif",
              "GIF": "image/gif"}
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _binding():
    try:
        import c2pa
    except Exception:  # noqa: BLE001 - absent, or its native library does not load here
        return None
    return c2pa


def available() -> bool:
    return _binding() is not None


_contexts: dict[int, object] = {}


def _context():
    """The offline reading context of this process (a forked worker cannot use its parent's:
    the binding invalidates native handles across a fork)."""
    pid = os.getpid()
    if pid not in _contexts:
        _contexts.clear()
        _contexts[pid] = _binding().Context.from_dict(_OFFLINE)
    return _contexts[pid]


def c2pa_record(data: bytes, image_format: str | None) -> dict | str:
    """The Content Credentials of a file's bytes (see the module's docstring); NOT_CHECKED
    without the binding, or a short note when the format is not one C2PA covers."""
    c2pa = _binding()
    if c2pa is None:
        return NOT_CHECKED
    mime = MIME_TYPES.get((image_format or "").upper())
    if mime is None:
        return {"manifest": False, "note": f"{image_format or 'this format'} is not read "
                                           f"for Content Credentials"}
    try:
        with _LOCK:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, _context())
            if reader is None:
                return {"manifest": False}
            with reader:
                store = json.loads(reader.json())
                embedded = reader.is_embedded()
    except Exception as error:  # noqa: BLE001 - a broken manifest is itself a clue
        return {"manifest": True, "validation_state": "unreadable",
                "error": " ".join(str(error).split())[:300]}
    return _summary(store, embedded)


def _summary(store: dict, embedded: bool) -> dict:
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest")) or {}
    signature = active.get("signature_info") or {}
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = results.get("failure") if results else store.get("validation_status")
    return {"manifest": True, "embedded": bool(embedded), "manifests": len(manifests),
            "claim_generator": _generator(active),
            "signer": {key: signature[key] for key in ("common_name", "issuer", "alg", "time")
                       if signature.get(key)},
            "validation_state": store.get("validation_state"),
            "failures": sorted({item.get("code", "") for item in failures or []} - {""}),
            "actions": _actions(active)}


def _generator(manifest: dict) -> str | None:
    infos = manifest.get("claim_generator_info") or []
    if infos and isinstance(infos[0], dict) and infos[0].get("name"):
        info = infos[0]
        return " ".join(str(part) for part in (info.get("name"), info.get("version")) if part)
    return manifest.get("claim_generator")


def _actions(manifest: dict) -> list[dict]:
    actions = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            entry = {"action": action.get("action")}
            source = action.get("digitalSourceType")
            if source:
                entry["digital_source_type"] = str(source).rsplit("/", 1)[-1]
            agent = action.get("softwareAgent")
            if isinstance(agent, dict):
                agent = agent.get("name")
            if agent:
                entry["software_agent"] = str(agent)
            actions.append(entry)
    return actions
