"""`POST /v1/content_provenance_checks`'s answer, as the `openai` SDK's
`ContentProvenanceCheck` reads it (`reason` is limner's: why a manifest is invalid)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ResultC2PA(BaseModel):
    type: Literal["c2pa"] = "c2pa"
    outcome: Literal["detected", "not_detected"]
    validation_state: Literal["trusted", "valid", "invalid", "not_present"]
    issuer: str | None = None
    model: str | None = None
    generated_at: str | None = None
    reason: str | None = None


class ResultWatermark(BaseModel):
    """This server's invisible watermark (`watermark = true`): its id, and what the server
    recorded for it."""

    type: Literal["limner_watermark"] = "limner_watermark"
    outcome: Literal["detected", "not_detected"]
    id: str | None = None
    model: str | None = None
    generated_at: str | None = None


class ContentProvenanceCheck(BaseModel):
    object: Literal["content_provenance_check"] = "content_provenance_check"
    created_at: int
    results: list[ResultC2PA | ResultWatermark]
