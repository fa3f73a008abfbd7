"""Loading the pipelines whose processors want torchvision, without it.

PyPI's torchvision does not load beside the CPU build of torch that `scripts/setup.sh`
installs, and transformers cannot make FLUX.2's `PixtralProcessor` (its module imports
torchvision) or Qwen-Image-Edit's `Qwen2VLProcessor` (it always builds a torchvision video
processor) without it. Both pipelines use only the text side and the image processor, which
have PIL-based paths: those stand in for the two, loaded from the folder's own files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


@functools.cache
def _torchvision_free_qwen2vl_processor_class() -> Any:
    from transformers import Qwen2VLProcessor

    class TorchvisionFreeQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor with no video processor: transformers refuses to construct one
        where torchvision is missing (its class check looks the video class up in a mapping
        that is then a dummy), so that check is skipped for `video_processor=None`."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(  # type: ignore[no-untyped-call]
                argument_name, argument)

    return TorchvisionFreeQwen2VLProcessor


def _read_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    legacy = folder / "chat_template.json"
    if legacy.is_file():
        template = json.loads(legacy.read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def slow_qwen2vl_processor(folder: Path) -> Any:
    """A Qwen2VLProcessor loaded from `folder` (Qwen-Image-Edit's `processor/`) with the
    PIL-based image processor and no video processor, so it needs no torchvision. Works on the
    Hub's folders as well as ours, whatever their `image_processor_type` (with or without
    `Fast`) and with the legacy `min_pixels`/`max_pixels` keys."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    cls = _torchvision_free_qwen2vl_processor_class()
    return cls(image_processor=Qwen2VLImageProcessorPil.from_pretrained(folder),
               tokenizer=AutoTokenizer.from_pretrained(folder), video_processor=None,
               chat_template=_read_chat_template(folder))


def slow_pixtral_tokenizer(folder: Path) -> Any:
    """FLUX.2's text tokenizer loaded from `folder` (its `tokenizer/`, a PixtralProcessor on
    disk) as PixtralProcessor itself loads it, with the chat template: enough for
    `Flux2Pipeline` except caption upsampling (`caption_upsample_temperature`), the one place
    it uses the processor's image side (`tokenizer.tokenizer`, images in the chat)."""
    from transformers import TokenizersBackend

    tokenizer = TokenizersBackend.from_pretrained(folder)
    template = _read_chat_template(folder)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


_SLOW_LOADERS: dict[str, Callable[[Path], Any]] = {
    "Qwen2VLProcessor": slow_qwen2vl_processor,
    "Qwen2_5_VLProcessor": slow_qwen2vl_processor,
    "PixtralProcessor": slow_pixtral_tokenizer,
}


def slow_components(folder: Path) -> dict[str, Any]:
    """Torchvision-free stand-ins for the components of the pipeline saved in `folder` that
    transformers cannot load without torchvision, keyed by component name, to pass as
    `DiffusionPipeline.from_pretrained(folder, **slow_components(folder))`; empty where none
    is needed. Reads model_index.json only, so it serves Hub folders as well as ours."""
    index = json.loads((folder / "model_index.json").read_text())
    out: dict[str, Any] = {}
    for name, spec in index.items():
        if isinstance(spec, list) and len(spec) == 2 and spec[0] == "transformers":
            loader = _SLOW_LOADERS.get(str(spec[1]))
            if loader is not None:
                out[name] = loader(folder / name)
    return out


def load_pipeline(model: str, **kwargs: Any) -> Any:
    """`DiffusionPipeline.from_pretrained(model, **kwargs)`, which also works without
    torchvision: there the components of `slow_components` are skipped at load (passed as
    None, the one way diffusers takes a stand-in for a class it cannot import: passing one
    directly fails its class check) and registered after; `pipe.config` keeps the folder's
    class names."""
    from diffusers import DiffusionPipeline
    from transformers.utils import is_torchvision_available  # type: ignore[attr-defined]

    if is_torchvision_available():
        return DiffusionPipeline.from_pretrained(model, **kwargs)  # type: ignore[no-untyped-call]
    folder = _local(model)
    slow = {name: value for name, value in slow_components(folder).items()
            if name not in kwargs}
    pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        model, **{name: None for name in slow}, **kwargs)
    if slow:
        index = json.loads((folder / "model_index.json").read_text())
        pipe.register_modules(**slow)
        pipe.register_to_config(**{name: tuple(index[name]) for name in slow})
    return pipe


def _local(model: str) -> Path:
    """The folder of `model`: itself, or the hub cache's copy of its configs and tokenizers
    (fetched where the hub is reachable)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=["*.json", "*.jinja", "*.txt",
                                                         "*.model", "*/tokenizer*"]))
