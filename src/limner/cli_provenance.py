"""`limner provenance check FILE`: what a picture's content credentials say, read here (no
server needed), as `POST /v1/content_provenance_checks` answers it."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("provenance")
def provenance() -> None:
    """Content credentials (C2PA) of pictures."""


@provenance.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust anchors (PEM): a signer that chains to one reads `trusted`.")
def check(file: Path, trust: Path | None) -> None:
    """Prints the C2PA result for FILE as JSON; exits 1 when the manifest is invalid."""
    from limner.provenance.checking import Checker

    result = Checker(trust.read_text() if trust else None).c2pa(file.read_bytes())
    click.echo(json.dumps(result, indent=2))
    if result["validation_state"] == "invalid":
        raise SystemExit(1)
