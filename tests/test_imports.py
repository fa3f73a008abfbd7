"""The protocol, rules and scheduler layers import no torch, diffusers or fastapi."""

from __future__ import annotations

import subprocess
import sys


def test_light_layers_do_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "import limner.protocol.images, limner.protocol.events, limner.protocol.models\n"
        "import limner.rules, limner.planning, limner.catalogue, limner.usage\n"
        "import limner.engines.diffusers, limner.engines.diffusers.options\n"
        "import limner.engines.diffusers.presets\n"
        "import limner.scheduler, limner.engines.base, limner.engines.fake\n"
        "import limner.batches.store, limner.batches.lines\n"
        "heavy = [m for m in ('torch', 'diffusers', 'fastapi', 'starlette', 'transformers')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
