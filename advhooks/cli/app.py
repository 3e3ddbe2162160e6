"""The typer app, its root options (``--version``) and the help texts the commands share."""

from __future__ import annotations

import typer

from .._version import __version__
from ..errors import one_line_errors

# The presets' names for the help texts (the CLI does not import torch to print --help);
# tests/test_cli.py keeps this list equal to advhooks.kit.presets.PRESETS.
PRESET_NAMES = ("digits-mlp", "digits-cnn", "mnist1d-mlp", "mnist1d-cnn", "mnist-cnn", "mnist-mlp",
                "cifar10-preactresnet18", "cifar10-wrn34", "cifar100-preactresnet18", "svhn-preactresnet18")
PRESET_HELP = "A named setting: " + ", ".join(PRESET_NAMES) + "."
DEVICE_HELP = "Device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."
NORMALIZE_HELP = ("Your --data yields inputs already normalised as (pixel - mean) / std: give MEAN,STD per channel "
                   "(e.g. 0.4914,0.4822,0.4465,0.2471,0.2435,0.2616), so that eps stays in pixel units.")

app = typer.Typer(
    name="advhooks",
    help="Adversarial training hooks for PyTorch, and the clean-to-adversarial phase transition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no "<bool>" type column beside flags, nothing cut at the panel edge
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


user_errors = one_line_errors  # bad input: one line on stderr and exit code 2, never a traceback

