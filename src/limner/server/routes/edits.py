"""`POST /v1/images/edits` and `POST /v1/images/variations` (also without `/v1`).

An edit comes as multipart (files in `image`/`image[]` and `mask`; every client, the SDK
included) or, for GPT models, as JSON with image references. Both become the same
`CreateImageEditRequest` plus uploads; planning (decoding the pictures) runs in a worker
thread; the answer is the generations route's own (`respond`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from limner.edit_planning import edit_model, plan_edit, plan_variation
from limner.errors import UnsupportedMediaType
from limner.planning import GenerationPlan
from limner.protocol.images import CreateImageEditRequest, CreateImageVariationRequest
from limner.server import image_refs
from limner.server.forms import read_form
from limner.server.parsing import parse_as, parse_json, read_limited
from limner.server.routes.images import counted, respond
from limner.server.state import AppState, app_state, request_owner

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
    if kind == "json":
        body = await read_limited(request, settings.max_upload_bytes)
        document = await asyncio.to_thread(parse_json, body)
        plan = await plan_json_edit(document, state, request_owner(request))
    else:
        form = await read_form(request, settings.max_upload_bytes,
                               file_fields=("image", "mask", "markup"), max_files=MAX_FILES)
        edit = parse_as(CreateImageEditRequest, form.document)
        masks, markups = form.files.get("mask", []), form.files.get("markup", [])
        plan = await asyncio.to_thread(
            plan_edit, edit, form.files.get("image", []), masks[0] if masks else None,
            state.catalogue, json_body=False, markup=markups[0] if markups else None)
    return await respond(request, plan)


async def plan_json_edit(document: dict[str, Any], state: AppState,
                         owner: str) -> GenerationPlan:
    """A parsed JSON edit body's plan, its pictures fetched from `owner`'s files or data URLs;
    the batch runner plans its edit lines here too."""
    settings = state.settings
    edit = parse_as(CreateImageEditRequest, document)
    edit_model(edit, state.catalogue, json_body=True)  # before fetching anything
    edit_images = [] if edit.images is None else await image_refs.resolve(
        edit.images, "images", state.files, settings.image_url_hosts,
        settings.max_upload_bytes, owner)
    masks = [] if edit.mask is None else await image_refs.resolve(
        [edit.mask], "mask", state.files, settings.image_url_hosts,
        settings.max_upload_bytes, owner)
    return await asyncio.to_thread(plan_edit, edit, edit_images, masks[0] if masks else None,
                                   state.catalogue, json_body=True)


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
