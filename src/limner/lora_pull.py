"""A LoRA fetched once into `DATA_DIR/loras/NAME.safetensors`: from the hub by repository id
(`huggingface_hub`, honouring `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`), or copied from a
local file or folder. The running server offers it from the next request on."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from limner.loras import WEIGHT_FILES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def pull_lora(repo: str, folder: Path, *, source: Path | None = None,
              filename: str | None = None, name: str | None = None) -> Path:
    """Where the adapter now is. `filename` picks one `.safetensors` of a repository (or
    folder) holding several; `name` is what requests call it (default: the last part of
    `repo`, without its extension)."""
    name = name or Path(repo.rstrip("/").split("/")[-1]).stem
    if not _NAME.match(name) or name.endswith(".safetensors"):
        raise ValueError(f"{name!r} cannot name an adapter: use letters, digits, '.', '_' "
                         "and '-' (--as NAME)")
    target = folder / f"{name}.safetensors"
    if source is not None:
        weights = source if source.is_file() else source / _choose(
            [p.name for p in source.glob("*.safetensors")], filename, str(source))
    else:
        weights = _download(repo, filename)
    if weights.suffix != ".safetensors":
        raise ValueError(f"{weights} is not a .safetensors file")
    folder.mkdir(parents=True, exist_ok=True)
    with (tempfile.NamedTemporaryFile(dir=folder, prefix=".pull-", delete=False) as partial,
          weights.open("rb") as read):
        shutil.copyfileobj(read, partial)
    Path(partial.name).replace(target)  # the server never sees half a file
    return target


def _download(repo: str, filename: str | None) -> Path:
    from huggingface_hub import hf_hub_download, list_repo_files

    if filename is None:
        files = [f for f in list_repo_files(repo) if f.endswith(".safetensors")]
        filename = _choose(files, None, repo)
    return Path(hf_hub_download(repo, filename))


def _choose(files: list[str], wanted: str | None, where: str) -> str:
    """The adapter among a repository's files: the one asked for, diffusers' or PEFT's own
    name, or the only one."""
    if wanted is not None:
        if wanted not in files:
            raise ValueError(f"{where} has no {wanted}; it has: {', '.join(sorted(files))}")
        return wanted
    for known in WEIGHT_FILES:
        if known in files:
            return known
    if len(files) == 1:
        return files[0]
    if not files:
        raise ValueError(f"{where} holds no .safetensors file")
    raise ValueError(f"{where} holds several .safetensors files; choose one with --file: "
                     f"{', '.join(sorted(files))}")
