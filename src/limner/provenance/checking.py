"""What a picture's content credentials say: `POST /v1/content_provenance_checks`'s results.

Any issuer's manifest is read. Its validation state is `trusted` when the signer chains to a
certificate of the configured trust list, `valid` when the signature and the picture's
hashes hold but no trusted root vouches for the signer, `invalid` (with the failures, in a
`reason` beside OpenAI's fields) when the picture or the manifest changed after signing, and
`not_present` without one. A picture that is none of the readable kinds, or no picture at
all, is `not_present` too: the check never fails on what it is given.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import c2pa
from PIL import Image

from limner.provenance.records import Records
from limner.provenance.signing import ASSERTION, COMPOSITE, TRAINED

WATERMARK_TYPE = "limner_watermark"
"""This server's own result type, beside OpenAI's `c2pa` and `synthid`."""

SNIFF = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
         (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
GENERATIVE = (TRAINED, COMPOSITE)


def mime_of(data: bytes) -> str | None:
    for magic, mime in SNIFF:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


class Checker:
    def __init__(self, trust_pem: str | None = None, records: Records | None = None) -> None:
        self.records = records
        """Where this server's watermark ids are recorded; None: watermarks are not read."""
        self.trust_pem = trust_pem
        self._local = threading.local()

    def _context(self) -> c2pa.Context | None:
        """The trust list as the C2PA library holds it, one per thread (checks run in
        worker threads, as signing does); None without one."""
        if not self.trust_pem:
            return None
        context: c2pa.Context | None = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = c2pa.Context.from_dict({
                "trust": {"trust_anchors": self.trust_pem}, "verify": {"verify_trust": True}})
        return context

    def c2pa(self, data: bytes) -> dict[str, Any]:
        """The `c2pa` result for the file's bytes."""
        mime = mime_of(data)
        absent = {"type": "c2pa", "outcome": "not_detected", "validation_state": "not_present",
                  "issuer": None, "model": None, "generated_at": None}
        if mime is None:
            return absent
        try:
            context = self._context()
            if context is not None:
                reader = c2pa.Reader(mime, io.BytesIO(data), None, context)
            else:
                reader = c2pa.Reader(mime, io.BytesIO(data))
            with reader:
                store = json.loads(reader.json())
                state = (reader.get_validation_state() or "").lower()
                results = reader.get_validation_results() or {}
        except Exception as exc:  # no manifest, or one that cannot be read at all
            if "ManifestNotFound" in type(exc).__name__ or "not found" in str(exc).lower():
                return absent
            return {**absent, "validation_state": "invalid",
                    "reason": f"the manifest cannot be read: {exc}"}
        active = store.get("manifests", {}).get(store.get("active_manifest") or "")
        if not active:
            return absent
        generation = _assertion(active, ASSERTION) or {}
        generative = generation or _generative(active)
        answer: dict[str, Any] = {
            **absent,
            "validation_state": state if state in ("trusted", "valid") else "invalid",
            "issuer": (active.get("signature_info") or {}).get("issuer"),
            "model": generation.get("model"),
            "generated_at": generation.get("generated_at"),
        }
        answer["outcome"] = "detected" if generative and answer["validation_state"] != \
            "invalid" else "not_detected"
        if answer["validation_state"] == "invalid":
            failures = (results.get("activeManifest") or {}).get("failure") or []
            answer["reason"] = "; ".join(
                f["explanation"] for f in failures if f.get("explanation")
                and f.get("code") != "signingCredential.untrusted") or state or "invalid"
        return answer


    def results(self, data: bytes) -> list[dict[str, Any]]:
        """Every signal this server reads: C2PA, then its own watermark where it writes one."""
        found = [self.c2pa(data)]
        if self.records is not None:
            found.append(self.watermark(data))
        return found

    def watermark(self, data: bytes) -> dict[str, Any]:
        """The `limner_watermark` result: this server's id in the pixels, and its record."""
        absent = {"type": WATERMARK_TYPE, "outcome": "not_detected", "id": None,
                  "model": None, "generated_at": None}
        try:
            from limner.provenance import watermark

            with Image.open(io.BytesIO(data)) as picture:
                picture.load()
                reading = watermark.read(picture)
        except Exception:  # not a raster picture PIL reads (an SVG, a text file): none
            return absent
        if reading is None:
            return absent
        record = (self.records.get(reading.id) if self.records else None) or {}
        return {**absent, "outcome": "detected", "id": f"{reading.id:010x}",
                "model": record.get("model"), "generated_at": record.get("generated_at")}


def _assertion(manifest: dict[str, Any], label: str) -> dict[str, Any] | None:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == label and isinstance(assertion.get("data"), dict):
            data: dict[str, Any] = assertion["data"]
            return data
    return None


def _generative(manifest: dict[str, Any]) -> bool:
    """Whether any action says the picture was made, or edited, by a trained model."""
    for label in ("c2pa.actions.v2", "c2pa.actions"):
        for action in (_assertion(manifest, label) or {}).get("actions", []):
            if action.get("digitalSourceType") in GENERATIVE:
                return True
    return False
