"""Which pictures carry credentials and what theirs say, as the configuration decides:
`provenance` for the server and per engine, the signing credentials, the trust list, the
organisation and whether the prompt is written."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from limner.provenance import credentials
from limner.provenance.checking import Checker
from limner.provenance.records import Records
from limner.provenance.signing import Facts, Marker

if TYPE_CHECKING:
    from limner.config import Settings
    from limner.planning import GenerationPlan

MODES = ("c2pa", "none")
WATERMARKED = ("png", "jpeg", "webp")
"""The formats a watermark goes into: a GIF's palette and an SVG's paths would not keep it."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Provenance:
    marker: Marker | None
    """None where no engine's pictures are marked."""
    checker: Checker
    marked: frozenset[str]
    """The engines whose pictures carry a manifest."""
    include_prompt: bool = False
    records: Records | None = None
    """Where watermark ids are recorded; None: no watermark."""

    def watermarker(self, plan: GenerationPlan,
                    engine_model: str) -> Callable[[Image.Image], Image.Image] | None:
        """What writes the watermark into this plan's final pixels, if anything does."""
        records = self.records
        if records is None or plan.entry.engine not in self.marked or \
                plan.output_format not in WATERMARKED:
            return None

        def write(picture: Image.Image) -> Image.Image:
            from limner.provenance import watermark

            mark = watermark.new_id()
            records.put(mark, {"model": plan.model, "engine_model": engine_model,
                               "generated_at": _now(), "owner": plan.owner})
            return watermark.embed(picture, mark)
        return write

    def mark(self, blob: bytes, plan: GenerationPlan, engine_model: str) -> bytes:
        """The encoded picture with its manifest, or as it is where its engine has none."""
        if self.marker is None or plan.entry.engine not in self.marked:
            return blob
        facts = Facts(model=plan.model, engine_model=engine_model, endpoint=plan.endpoint,
                      created=_now(),
                      owner=plan.owner, prompt=plan.params.prompt if self.include_prompt else None,
                      inputs=plan.inputs)
        return self.marker.mark(blob, plan.output_format, facts)


def from_settings(settings: Settings, engines: list[str]) -> Provenance:
    """Raises ValueError for a mode that is neither `c2pa` nor `none`, or half a key pair."""
    if settings.provenance not in MODES:
        raise ValueError(f"provenance must be 'c2pa' or 'none', not {settings.provenance!r}")
    tables = {config.name: config for config in settings.engines}
    marked = set()
    for name in engines:
        table = tables.get(name)
        mode = table.provenance if table and table.provenance is not None \
            else settings.provenance
        if mode not in MODES:
            raise ValueError(f"engine {name!r}: provenance must be 'c2pa' or 'none', not "
                             f"{mode!r}")
        if mode == "c2pa":
            marked.add(name)
    trust = Path(settings.provenance_trust).read_text() if settings.provenance_trust else None
    marker = None
    if marked:
        found = credentials.load(
            Path(settings.provenance_cert) if settings.provenance_cert else None,
            Path(settings.provenance_key) if settings.provenance_key else None,
            settings.data_dir / "c2pa", settings.provenance_organization)
        marker = Marker(found, settings.provenance_organization)
    records = None
    if settings.watermark:
        import importlib.util

        if importlib.util.find_spec("pywt") is None:
            raise ValueError("watermark = true needs PyWavelets: pip install 'limner[watermark]'")
        records = Records(settings.data_dir / "watermarks")
    return Provenance(marker, Checker(trust, records), frozenset(marked),
                      settings.provenance_prompt, records)
