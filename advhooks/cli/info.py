"""``advhooks info``: the versions of what is installed."""

from __future__ import annotations

import typer

from .._version import __version__
from .app import app


@app.command("info")
def info() -> None:
    """Print the versions of advhooks, torch and the optional integrations that are installed."""
    import importlib.metadata as md

    import torch

    typer.echo(f"advhooks {__version__}")
    typer.echo(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    for extra, dist in (("hf", "transformers"), ("lightning", "lightning"), ("plot", "matplotlib"),
                        ("dev", "torchattacks")):
        try:
            typer.echo(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            typer.echo(f"{dist} not installed (pip install 'advhooks[{extra}]')")


