"""What each watermark id stands for, kept by the server that wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Records:
    """What each watermark id stands for: a small JSON file per picture under
    `DATA_DIR/watermarks/`, kept as long as the data directory is."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, mark: int) -> Path:
        name = f"{mark:010x}"
        return self.folder / name[:2] / f"{name}.json"

    def put(self, mark: int, record: dict[str, Any]) -> None:
        path = self._path(mark)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(path)

    def get(self, mark: int) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self._path(mark).read_text())
        except (OSError, ValueError):
            return None
        return found
