"""The playground: a page at `/` for trying the API in a browser, and its files under
`/playground/`.

The files ship in the package (`limner/server/playground/`) and are plain HTML, CSS and
JavaScript modules: nothing is built at install and nothing is fetched from elsewhere.
Starlette's `StaticFiles` answers them, so the ETag and Last-Modified validators and the 304s
are the library's. Every answer carries a strict Content-Security-Policy: the page runs only
its own scripts and talks only to this server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from limner.rules import LOCAL, OPENAI_MODELS, ModelRules

ROOT = Path(__file__).resolve().parent.parent / "playground"
PREFIX = "/playground"
HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (a 304 when unchanged), so an upgraded server never runs
    # against a stale script the browser kept by heuristic.
    "cache-control": "no-cache",
}


class PlaygroundFiles(StaticFiles):
    """`StaticFiles` whose every answer, 304s included, carries the page's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


files = PlaygroundFiles(directory=ROOT)
router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page(request: Request) -> Response:
    return await files.get_response("index.html", request.scope)


@router.get(PREFIX + "/rules.json", include_in_schema=False)
async def rules() -> JSONResponse:
    """Each OpenAI name's rules, so the page offers each model's own sizes and options;
    any other name is served with the local rules. Public knowledge, hence no key."""
    families: dict[str, dict[str, object]] = {}
    models: dict[str, str] = {}
    for name, model_rules in [*OPENAI_MODELS.items(), ("", LOCAL)]:
        key = _family_key(model_rules)
        families.setdefault(key, {**dataclasses.asdict(model_rules), "gpt": model_rules.is_gpt})
        if name:
            models[name] = key
    return JSONResponse({"models": models, "families": families, "local": _family_key(LOCAL)},
                        headers=HEADERS)


def _family_key(rules: ModelRules) -> str:
    return "local" if rules is LOCAL else rules.family


router.mount(PREFIX, files, name="playground")
