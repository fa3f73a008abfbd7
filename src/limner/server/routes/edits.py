"""`POST /v1/images/edits` and `POST /v1/images/variations` (also without `/v1`).

An edit comes as multipart (files in `image`/`image[]` and `mask`; every client, the SDK
included) or, for GPT models, as JSON with image references. Both become the same
`CreateImageEditRequest` plus uploads; planning (decoding the pictures) runs in a worker
thread; the answer is the generations route's own (`respond`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from limner.edit_planning import edit_model, plan_edit, plan_variation
from limner.errors import UnsupportedMediaType
from limner.input_images import Upload
from limner.protocol.images import CreateImageEditRequest, CreateImageVariationRequest
from limner.server import image_refs
from limner.server.forms import read_form
from limner.server.parsing import parse_as, parse_json, read_limited
from limner.server.routes.images import counted, respond
from limner.server.state import app_state, request_owner

router = APIRouter()
MAX_FILES = 17
"""Sixteen images and a mask (or a markup)."""


@router.post("/v1/images/edits")
@router.post("/images/edits", include_in_schema=False)
async def create_edit(request: Request) -> Response:
    return await counted(request, _create_edit(request))


@router.post("/v1/images/variations")
@router.post("/images/variations", include_in_schema=False)
async def create_variation(request: Request) -> Response:
    return await counted(request, _create_variation(request))


async def _create_edit(request: Request) -> Response:
    state = app_state(request.app)
    settings = state.settings
    kind = _content_kind(request, json_allowed=True)
    markups: list[Upload] = []
    if kind == "json":
        body = await read_limited(request, settings.max_upload_bytes)
        document = await asyncio.to_thread(parse_json, body)
        edit = parse_as(CreateImageEditRequest, document)
        edit_model(edit, state.catalogue, json_body=True)  # before fetching anything
        if edit.images is None:
            edit_images: list[Upload] = []
        else:
            edit_images = await image_refs.resolve(edit.images, "images", state.files,
                                                   settings.image_url_hosts,
                                                   settings.max_upload_bytes,
                                                   request_owner(request))
        masks = [] if edit.mask is None else await image_refs.resolve(
            [edit.mask], "mask", state.files, settings.image_url_hosts,
            settings.max_upload_bytes, request_owner(request))
    else:
        form = await read_form(request, settings.max_upload_bytes,
                               file_fields=("image", "mask", "markup"), max_files=MAX_FILES)
        edit = parse_as(CreateImageEditRequest, form.document)
        edit_images, masks = form.files.get("image", []), form.files.get("mask", [])
        markups = form.files.get("markup", [])
    plan = await asyncio.to_thread(
        plan_edit, edit, edit_images, masks[0] if masks else None, state.catalogue,
        json_body=kind == "json", markup=markups[0] if markups else None)
    return await respond(request, plan)


async def _create_variation(request: Request) -> Response:
    state = app_state(request.app)
    _content_kind(request, json_allowed=False)
    form = await read_form(request, state.settings.max_upload_bytes, file_fields=("image",),
                           max_files=2)
    variation = parse_as(CreateImageVariationRequest, form.document)
    plan = await asyncio.to_thread(plan_variation, variation, form.files.get("image", []),
                                   state.catalogue)
    return await respond(request, plan)


def _content_kind(request: Request, *, json_allowed: bool) -> str:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return "form"  # urlencoded can carry no file, but its strings get the same errors
    if json_allowed and "json" in content_type:
        return "json"
    takes = ("'multipart/form-data' or 'application/json'" if json_allowed
             else "'multipart/form-data'")
    raise UnsupportedMediaType(
        f"Unsupported content type: '{content_type or 'none'}'. This endpoint takes {takes}.",
        code="unsupported_content_type")
