"""A C2PA manifest signed into each picture: what made it (a `c2pa.created` action of
trained algorithmic media, or `c2pa.opened` and `c2pa.edited` for an edit of pictures that
carry credentials of their own, those pictures its ingredients), which model, when, and for
whom. Signing runs in the encoder threads, each with its own C2PA signer."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import c2pa

from limner import __version__
from limner.provenance.credentials import Credentials

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = ("http://cv.iptc.org/newscodes/digitalsourcetype/"
             "compositeWithTrainedAlgorithmicMedia")
ASSERTION = "org.limner.generation"
"""This server's own assertion: the model asked for, the engine's model, the time."""
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
        "svg": "image/svg+xml"}


@dataclass(frozen=True)
class Facts:
    """What a picture's manifest says of it."""

    model: str
    """The model name the client asked for (`gpt-image-1`, `sdxl`)."""
    engine_model: str
    """What drew it: the engine's model (a preset, a folder's name, the embedded model)."""
    endpoint: str
    """generations, edits or variations."""
    created: str
    """UTC, RFC 3339."""
    owner: str | None = None
    """Who asked: the key's owner id (a digest, never the key), where the server has keys."""
    prompt: str | None = None
    """Written only where the operator turns `provenance_prompt` on."""
    inputs: Sequence[tuple[bytes, str]] = ()
    """An edit's pictures (bytes, MIME type); those carrying credentials become ingredients."""


class Marker:
    """Signs pictures with one set of credentials; safe to call from many threads."""

    def __init__(self, credentials: Credentials, organization: str | None = None) -> None:
        self.credentials = credentials
        self.organization = organization
        self._local = threading.local()

    def _context(self) -> c2pa.Context:
        """No thumbnail in the manifest: making one decodes and re-encodes the picture, 40 ms
        of the 45 a signature took (benchmarks/provenance_speed.py), and the picture is its
        own preview."""
        context: c2pa.Context | None = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = c2pa.Context.from_dict(
                {"builder": {"thumbnail": {"enabled": False}}})
        return context

    def _signer(self) -> c2pa.Signer:
        signer: c2pa.Signer | None = getattr(self._local, "signer", None)
        if signer is None:
            info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.credentials.chain_pem,
                                       self.credentials.key_pem, None)
            signer = self._local.signer = c2pa.Signer.from_info(info)
        return signer

    def mark(self, blob: bytes, output_format: str, facts: Facts) -> bytes:
        """The picture's bytes with the manifest in them (the pixels untouched)."""
        mime = MIME[output_format]
        ingredients = [(data, kind) for data, kind in facts.inputs if has_manifest(data, kind)]
        builder = c2pa.Builder(manifest(facts, self.organization, len(ingredients), mime),
                               self._context())
        for index, (data, kind) in enumerate(ingredients):
            builder.add_ingredient({"title": f"input-{index + 1}", "relationship":
                                    "parentOf" if index == 0 else "componentOf",
                                    "instance_id": f"input-{index + 1}"}, kind,
                                   io.BytesIO(data))
        out = io.BytesIO()
        builder.sign(self._signer(), mime, io.BytesIO(blob), out)
        return out.getvalue()


def manifest(facts: Facts, organization: str | None, ingredients: int,
             mime: str) -> dict[str, Any]:
    agent = {"name": "limner", "version": __version__}
    parameters = {"model": facts.model, "engine": facts.engine_model}
    if ingredients:
        ids = [f"input-{i + 1}" for i in range(ingredients)]
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "softwareAgent": agent,
             "parameters": {"ingredientIds": ids[:1]}},
            {"action": "c2pa.edited", "softwareAgent": agent, "digitalSourceType": COMPOSITE,
             "parameters": {**parameters, "ingredientIds": ids}}]
    else:
        actions = [{"action": "c2pa.created", "softwareAgent": agent,
                    "digitalSourceType": TRAINED, "parameters": parameters}]
        if facts.endpoint != "generations":  # drawn from pictures that carried no credentials
            actions.append({"action": "c2pa.edited", "softwareAgent": agent,
                            "digitalSourceType": COMPOSITE, "parameters": parameters})
    generation: dict[str, Any] = {"model": facts.model, "engine_model": facts.engine_model,
                                  "endpoint": facts.endpoint, "generated_at": facts.created}
    if organization:
        generation["organization"] = organization
    if facts.owner:
        generation["owner"] = facts.owner
    if facts.prompt is not None:
        generation["prompt"] = facts.prompt
    return {"claim_generator_info": [agent], "title": f"limner image ({mime})",
            "format": mime,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}},
                           {"label": ASSERTION, "data": generation}]}


def has_manifest(data: bytes, mime: str) -> bool:
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            return bool(json.loads(reader.json()).get("active_manifest"))
    except Exception:  # no manifest, or one this library cannot read: not an ingredient
        return False
