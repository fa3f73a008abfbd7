"""`GET /v1/files/images/{name}?expires=&signature=`: signed, expiring image downloads."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from limner.errors import Forbidden, Gone
from limner.server.state import app_state
from limner.store.local import MEDIA_TYPES

router = APIRouter()

_EXPIRES = re.compile(r"[0-9]{1,12}")
"""ASCII digits only (`str.isdigit` takes `²`, which `int` refuses), and short enough that
`int` never meets Python's digit limit."""
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
"""What `Signer.sign` writes: a SHA-256 HMAC as lowercase hex."""


@router.get("/v1/files/images/{name}")
async def get_image(request: Request, name: str) -> FileResponse:
    delivery = app_state(request.app).delivery
    expires_text = request.query_params.get("expires", "")
    signature = request.query_params.get("signature", "")
    if not _EXPIRES.fullmatch(expires_text) or not _SIGNATURE.fullmatch(signature):
        raise Forbidden("This image URL is not signed.", code="invalid_signature")
    expires = int(expires_text)
    if not delivery.signer.verify(f"{delivery.route}/{name}", expires, signature):
        raise Forbidden("This image URL's signature is not valid.", code="invalid_signature")
    if expires <= delivery.store.clock():
        raise Gone("This image URL has expired.", code="expired")
    path = delivery.store.path_for(name)
    media_type = MEDIA_TYPES[path.suffix.lstrip(".")]
    headers = {"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"}
    if media_type == "image/svg+xml":
        # An SVG opened in a browser is a document: nothing in it may run or load.
        headers["content-security-policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return FileResponse(path, media_type=media_type, headers=headers)
