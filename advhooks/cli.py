"""The ``advhooks`` command line (typer). Library errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ._version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="advhooks",
    help="Adversarial training hooks for PyTorch, and the clean-to-adversarial phase transition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad input into a one-line message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, FileNotFoundError, ImportError, KeyError, IsADirectoryError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in msg:
                msg = f"{msg}: {err.filename}"
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _load_factory(spec: str, option: str) -> Callable[..., Any]:
    if ":" not in spec:
        raise ValueError(f"{option} must look like 'package.module:function', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`, find the user's modules in the working directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"{option}: cannot import module {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{option}: {module_name!r} has no callable {attr!r}")
    return factory


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
        if any(k.startswith("weights.") for k in state):  # an advhooks benchmark file
            state = {k[len("weights."):]: v for k, v in state.items() if k.startswith("weights.")}
        return state
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a torch state dict readable with weights_only=True ({err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


@app.command("benchmark-clean")
@_user_errors
def benchmark_clean(
    preset: str | None = typer.Option(None, help="A named setting: digits-mlp, digits-cnn, mnist-cnn, "
                                         "mnist-mlp, cifar10-preactresnet18, cifar10-wrn34, ..."),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory 'package.module:function' returning "
                                       "(train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    download: bool = typer.Option(False, help="Download missing dataset files (only when asked)."),
    checkpoint: Path | None = typer.Option(None, help="Measure this clean model instead of training "
                                              "(safetensors, or a torch state dict read with weights_only)."),
    epochs: int | None = typer.Option(None, help="Clean training epochs (default: the preset's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the preset's, else 128)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the preset's, else 0.1)."),
    width: int | None = typer.Option(None, help="The preset model's width (hidden units / widen factor)."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and the digits split."),
    device: str = typer.Option("cpu", help="Device to train on, e.g. cpu or cuda."),
    out: Path = typer.Option(Path("clean.safetensors"), help="Where to write the benchmark."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Record the clean benchmark R*(0): train cleanly with early stopping (or measure --checkpoint)."""
    import torch
    from tqdm.auto import tqdm

    from .benchmark import CleanBenchmark, record_clean_benchmark
    from .data import load_dataset
    from .presets import get_preset

    if preset is None and (model is None or data is None):
        raise ValueError("give --preset, or both --model and --data")
    chosen = get_preset(preset) if preset else None
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("width", width)):
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if lr is not None and not lr > 0:
        raise ValueError(f"--lr must be > 0, got {lr}")
    model_factory = _load_factory(model, "--model") if model is not None else None
    data_factory = _load_factory(data, "--data") if data is not None else None
    torch.manual_seed(seed)

    if data_factory is not None:
        sets = data_factory()
        if not (isinstance(sets, (tuple, list)) and len(sets) == 2):
            raise TypeError("--data factory must return (train_dataset, test_dataset)")
        train_set, test_set = sets
        train_eval = train_set
    else:
        train_set, test_set = load_dataset(chosen.dataset, data_dir, download, augment=chosen.augment, seed=seed)
        train_eval = load_dataset(chosen.dataset, data_dir, False, seed=seed)[0] if chosen.augment else train_set
    net = model_factory() if model_factory is not None else chosen.model(width)
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"--model factory must return a torch.nn.Module, got {type(net).__name__}")
    training = {"preset": preset} if preset else {"model": model, "data": data}
    bs = batch_size or (chosen.batch_size if chosen else 128)

    if checkpoint is not None:
        net.load_state_dict(_read_state_dict(checkpoint))
        net.to(device)
        loader = functools.partial(torch.utils.data.DataLoader, batch_size=max(bs, 256))
        bench = CleanBenchmark.measure(net, loader(test_set), loader(train_eval), device=device,
                                       training={**training, "checkpoint": str(checkpoint)})
    else:
        n_epochs = epochs or (chosen.epochs if chosen else 10)

        def progress(loader, epoch):
            return tqdm(loader, desc=f"epoch {epoch}/{n_epochs}", leave=False, disable=quiet, file=sys.stderr)

        def on_epoch(epoch, train_loss, test_loss):
            if not quiet:
                tqdm.write(f"epoch {epoch:3d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}",
                           file=sys.stderr)

        bench = record_clean_benchmark(
            net, train_set, test_set, epochs=n_epochs, batch_size=bs, lr=lr or (chosen.lr if chosen else 0.1),
            weight_decay=chosen.weight_decay if chosen else 5e-4, train_eval_set=train_eval, device=device,
            seed=seed, on_epoch=on_epoch, progress=progress, training={**training, "width": width},
        )
    bench.save(out)
    typer.echo(bench.summary())
    typer.echo(f"wrote {out}")


@app.command("show")
@_user_errors
def show(
    file: Path = typer.Argument(..., help="A clean benchmark file (.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Print a clean benchmark's record (reads the header only, never the weights)."""
    from .benchmark import CleanBenchmark, read_record

    if as_json:
        typer.echo(json.dumps(read_record(file), indent=2, sort_keys=True))
    else:
        typer.echo(CleanBenchmark.read(file).summary())


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


if __name__ == "__main__":
    main()
