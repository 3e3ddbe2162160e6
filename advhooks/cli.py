"""The ``advhooks`` command line."""

from __future__ import annotations

import typer

from ._version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="advhooks",
    help="Adversarial training hooks for PyTorch, and the clean-to-adversarial phase transition.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"advhooks {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Adversarial training hooks for PyTorch, and the clean-to-adversarial phase transition."""


@app.command("info")
def info() -> None:
    """Print the versions of advhooks, torch and the optional integrations that are installed."""
    import importlib.metadata as md

    import torch

    typer.echo(f"advhooks {__version__}")
    typer.echo(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    for extra, dist in (("hf", "transformers"), ("lightning", "lightning"), ("plot", "matplotlib"),
                        ("demo", "scikit-learn"), ("dev", "torchattacks")):
        try:
            typer.echo(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            typer.echo(f"{dist} not installed (pip install 'advhooks[{extra}]')")


def main() -> None:
    """Entry point of the ``advhooks`` console script."""
    app()
