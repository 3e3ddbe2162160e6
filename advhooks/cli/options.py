"""What the commands share: output paths checked before any work, the device, ``--normalize``, the user's
``--model``/``--data`` factories, and the setting (preset or factories) resolved into a model and data."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer


def prepare_output(path: Path | None, option: str, *, folder: bool = False) -> None:
    """Check before any work that ``path`` can be written, creating missing parent folders.

    Every command calls this for each of its outputs first, so that a bad path costs nothing.
    """
    if path is None:
        return
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    for parent in (where, *where.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, test_file = tempfile.mkstemp(prefix=".advhooks-write-check.", dir=where)
        os.close(fd)
        os.unlink(test_file)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in {where} ({err.strerror or err})") from None


def progress_shown(quiet: bool) -> bool:
    """Progress bars only for a person at a terminal."""
    return not quiet and sys.stderr.isatty()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    return device


def parse_normalize(text: str | None) -> tuple[list[float], list[float]] | None:
    """``"m1,..,mC,s1,..,sC"`` → (means, stds), checked."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--normalize must be comma-separated numbers MEAN,STD per channel, got {text!r}") from None
    if len(values) < 2 or len(values) % 2:
        raise ValueError(f"--normalize needs as many stds as means (MEAN,STD per channel), got {len(values)} values")
    half = len(values) // 2
    means, stds = values[:half], values[half:]
    if not all(s > 0 for s in stds):
        raise ValueError(f"--normalize: every std must be > 0, got {stds}")
    return means, stds


def load_factory(spec: str, option: str) -> Callable[..., Any]:
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


def model_from(factory: Callable[..., Any], width: int | None) -> Any:
    """``factory(width)`` when a width is given, else ``factory()``, checked to be a module; a factory that takes
    neither call or returns something else is a clear error."""
    import torch

    try:
        net = factory(width) if width is not None else factory()
    except TypeError as err:
        wanted = f"one argument (the width, {width})" if width is not None else "no argument"
        raise ValueError(f"--model factory {getattr(factory, '__name__', factory)!r} cannot be called with "
                         f"{wanted}: {err}") from None
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"--model factory must return a torch.nn.Module, got {type(net).__name__}")
    return net


def check_options(**values: Any) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be {'> 0' if name == 'lr' else '>= 1'}, got {value}")


@dataclass
class Setup:
    preset: Any
    model_factory: Callable[[], Any]
    train_set: Any
    test_set: Any
    train_eval: Any


def resolve_setup(preset: str | None, model: str | None, data: str | None, data_dir: Path | None,
                   download: bool, width: int | None, split_seed: int, fraction: float = 1.0) -> Setup:
    """The model factory and datasets from --preset and/or --model/--data (shared by the commands).

    ``fraction`` < 1 keeps that fraction of the training set, drawn with ``split_seed``.
    """
    import torch

    from ..kit.data import load_dataset, train_fraction
    from ..kit.presets import get_preset

    if preset is None and (model is None or data is None):
        raise ValueError("give --preset, or both --model and --data")
    if width is not None and width < 1:
        raise ValueError(f"--width must be >= 1, got {width}")
    chosen = get_preset(preset) if preset else None
    model_factory = load_factory(model, "--model") if model is not None else None
    data_factory = load_factory(data, "--data") if data is not None else None
    torch.manual_seed(split_seed)  # a --data factory that splits at random splits the same way each time
    if data_factory is not None:
        sets = data_factory()
        if not (isinstance(sets, (tuple, list)) and len(sets) == 2):
            raise ValueError("--data factory must return (train_dataset, test_dataset)")
        train_set, test_set = sets
        train_eval = train_set
    else:
        train_set, test_set = load_dataset(chosen.dataset, data_dir, download, augment=chosen.recipe.augmentation,
                                           seed=split_seed)
        train_eval = (load_dataset(chosen.dataset, data_dir, False, seed=split_seed)[0]
                      if chosen.recipe.augmentation else train_set)

    def build():
        return model_from(model_factory, width) if model_factory is not None else chosen.model(width)

    if fraction != 1:  # the same samples of both views (the augmented one and the one without augmentation)
        train_set, train_eval = (train_fraction(d, fraction, split_seed) for d in (train_set, train_eval))
    return Setup(chosen, build, train_set, test_set, train_eval)


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option} must be integers >= 1, got {text!r}")
    return values


def benchmark_setup(bench: Any, preset: str | None, model: str | None, data: str | None, data_dir: Path | None,
                     width: int | None, split_seed: int | None, strict: bool) -> Setup:
    """The setting a benchmark was recorded in: its preset and data split unless others are given, checked."""
    from ..benchmark import check_benchmark_setup

    if preset is None and model is None and data is None:
        preset = bench.training.get("preset")
    if split_seed is None:
        split_seed = int(bench.training.get("split_seed", 0))
    if width is None and isinstance(bench.training.get("width"), int):
        width = bench.training["width"]
    setup = resolve_setup(preset, model, data, data_dir, False, width, split_seed,
                           float(bench.training.get("train_fraction", 1.0)))
    model_difference = check_benchmark_setup(bench, setup.model_factory(), setup.train_eval, setup.test_set,
                                             strict=strict)
    if model_difference:
        typer.echo(f"warning: {model_difference}", err=True)
    return setup


def show_result(result: Any, json_out: Path | None, plot: Path | None, kind: str) -> None:
    """Print a result's summary, and write its JSON and its figure (``kind``: ``"estimate"`` or
    ``"connectivity"``, the kit package that draws it) when asked."""
    typer.echo(result.summary())
    if json_out is not None:
        json_out.write_text(result.to_json(indent=2))
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from ..kit.connectivity import plot_connectivity
        from ..kit.estimate.plot import plot_estimate

        draw = {"estimate": plot_estimate, "connectivity": plot_connectivity}[kind]
        typer.echo(f"wrote {draw(result, plot)}")
