"""Which model names this server answers to, and which engine draws each.

Every OpenAI name maps to an engine through configuration (out of the box, all to the
default engine), optionally with LoRA adapters that every request under that name draws
with; each engine is also served under its own name with `rules.LOCAL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limner.errors import model_not_found
from limner.rules import LOCAL, OPENAI_MODELS, ModelRules


@dataclass(frozen=True)
class ModelEntry:
    name: str
    rules: ModelRules
    engine: str
    owned_by: str
    adapters: tuple[tuple[str, float], ...] = ()
    """Adapters (name, scale) a request under this name draws with before its own `lora`."""


class Catalogue:
    def __init__(self, engines: list[str], default_engine: str,
                 aliases: Mapping[str, str | Mapping[str, Any]] | None = None,
                 gpt_default: str = "gpt-image-1") -> None:
        if default_engine not in engines:
            raise ValueError(f"default engine {default_engine!r} is not among {engines}")
        targets = {name: _alias(name, value) for name, value in (aliases or {}).items()}
        unknown = {engine for engine, _ in targets.values() if engine not in engines}
        if unknown:
            raise ValueError(f"model aliases point at unknown engines: {sorted(unknown)}")
        self.default_engine = default_engine
        self.gpt_default = gpt_default
        self._entries: dict[str, ModelEntry] = {}
        for name, rules in OPENAI_MODELS.items():
            engine, adapters = targets.get(name, (default_engine, ()))
            self._entries[name] = ModelEntry(name, rules, engine, "limner", adapters)
        for engine in engines:
            self._entries.setdefault(engine, ModelEntry(engine, LOCAL, engine, "limner"))
        for name, (engine, adapters) in targets.items():
            self._entries.setdefault(name, ModelEntry(name, LOCAL, engine, "limner", adapters))

    def resolve(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise model_not_found(name)
        return entry

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())


def _alias(name: str, value: str | Mapping[str, Any]) -> tuple[str, tuple[tuple[str, float],
                                                                          ...]]:
    """`"sdxl"` or `{engine = "sdxl", lora = [{name = "ink", scale = 0.8}]}`."""
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, Mapping) or not isinstance(value.get("engine"), str):
        raise ValueError(f"[models] {name}: expected an engine name or a table with `engine`")
    if set(value) - {"engine", "lora"}:
        raise ValueError(f"[models] {name}: unknown keys {sorted(set(value) - {'engine', 'lora'})}")
    adapters = []
    for item in value.get("lora", []):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f"[models] {name}: each lora is a name or {{name, scale}}")
        scale = item.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ValueError(f"[models] {name}: a lora's scale is a number")
        adapters.append((item["name"], float(scale)))
    return value["engine"], tuple(adapters)
