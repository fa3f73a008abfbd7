"""The LoRA adapters this server offers, by name, and the check of a request's `lora`.

An adapter is a file or folder in `DATA_DIR/loras/` (`ink.safetensors`; a diffusers
`save_lora_weights` folder or a PEFT folder, named by the folder), or a name the config's
`[loras]` table gives a path or hub id. The folder is read again on every lookup, so a file
copied in (or fetched by `limner models pull --lora`) is offered at once, without a restart.
Whether an adapter fits a model is read from the files' headers (`limner.adapter_shapes`), so
nothing is loaded to list or refuse one; the engine has the last word when it loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from limner import adapter_shapes
from limner.adapter_shapes import AdapterShape
from limner.engines.base import EngineInfo
from limner.errors import InvalidRequest
from limner.jobs import Adapter

log = logging.getLogger("limner.loras")
WEIGHT_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
"""What a folder holds when it is one adapter: diffusers' layout, and PEFT's."""


class LoraLibrary:
    def __init__(self, folder: Path, configured: Mapping[str, str] | None = None,
                 model_folders: Mapping[str, str] | None = None,
                 max_per_request: int = 4) -> None:
        self.folder = folder
        self.configured = dict(configured or {})
        self.model_folders = dict(model_folders or {})
        """Engine name -> its saved pipeline folder, where it has one (the fit check)."""
        self.max_per_request = max_per_request
        self._shapes: dict[str, AdapterShape] = {}

    def all(self) -> dict[str, str]:
        """Every adapter's name -> its path (or hub id); the folder's win over the config's
        only where the config does not name them."""
        found: dict[str, str] = {}
        if self.folder.is_dir():
            for entry in sorted(self.folder.iterdir()):
                if entry.name.startswith("."):
                    continue
                if entry.is_file() and entry.suffix == ".safetensors":
                    found[entry.stem] = str(entry)
                elif entry.is_dir() and any(entry.glob("*.safetensors")):
                    found[entry.name] = str(entry)
        found.update(self.configured)
        return found

    def find(self, name: str) -> str | None:
        return self.all().get(name)

    def misfit(self, name: str, path: str, engine: str) -> str | None:
        """Why the adapter cannot fit the engine's model, read from headers; None where it
        plausibly fits or nothing can be read (a hub id, a model without a folder)."""
        folder = self.model_folders.get(engine)
        if folder is None or not Path(path).exists():
            return None
        try:
            model = self._shapes.get(folder)
            if model is None:
                model = self._shapes[folder] = adapter_shapes.model_shape(Path(folder))
            return adapter_shapes.fits(adapter_shapes.describe(Path(path)), model)
        except Exception as exc:  # an unreadable file is the engine's to refuse, with why
            log.debug("could not read the shapes of %s for %s: %s", name, engine, exc)
            return None

    def for_engine(self, engine: str, info: EngineInfo) -> list[str]:
        """The adapters a model can take: none where its engine takes none per request."""
        if not info.adapters:
            return []
        return [name for name, path in self.all().items()
                if self.misfit(name, path, engine) is None]

    def resolve(self, asked: Sequence[tuple[str, float]], model: str, engine: str,
                info: EngineInfo) -> tuple[Adapter, ...]:
        """A plan's (name, scale) pairs -> the engine's adapters, refusing (400, `lora`) too
        many, an unknown name, an engine that takes none, and a misfit. A scale of 0 is
        dropped: it draws as without the adapter, and batches with requests that have none."""
        if not asked:
            return ()
        if len(asked) > self.max_per_request:
            raise InvalidRequest(
                f"Invalid 'lora': at most {self.max_per_request} adapters per request, but "
                f"got {len(asked)}.", param="lora", code="invalid_value")
        known = self.all()
        adapters = []
        for name, scale in asked:
            path = known.get(name)
            if path is None:
                offered = ", ".join(sorted(known)) or "none (add files to DATA_DIR/loras)"
                raise InvalidRequest(
                    f"Invalid 'lora': the server has no adapter named '{name}'. Offered: "
                    f"{offered}.", param="lora", code="lora_not_found")
            if scale != 0:
                adapters.append(Adapter(name, path, scale))
        if adapters and not info.adapters:
            raise InvalidRequest(
                f"Unsupported parameter: 'lora' is not supported by the engine that draws "
                f"'{model}' (it takes adapters per request only on the plain torch path; "
                "see request_loras in the README).", param="lora",
                code="unsupported_parameter")
        for adapter in adapters:
            why = self.misfit(adapter.name, adapter.path, engine)
            if why is not None:
                raise InvalidRequest(
                    f"Invalid 'lora': the adapter '{adapter.name}' does not fit the model "
                    f"'{model}': {why}.", param="lora", code="lora_mismatch")
        return tuple(adapters)
