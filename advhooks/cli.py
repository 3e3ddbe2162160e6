"""The ``advhooks`` command line (typer). Library errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ._version import __version__
from .errors import one_line_errors
from .schedules import format_eps, parse_eps, parse_eps_list

__all__ = ["PRESET_NAMES", "app", "main"]

# The presets' names for the help texts (the CLI does not import torch to print --help);
# tests/test_cli.py keeps this list equal to advhooks.kit.presets.PRESETS.
PRESET_NAMES = ("digits-mlp", "digits-cnn", "mnist-cnn", "mnist-mlp", "cifar10-preactresnet18", "cifar10-wrn34",
                "cifar100-preactresnet18", "svhn-preactresnet18")
_PRESET_HELP = "A named setting: " + ", ".join(PRESET_NAMES) + "."
_DEVICE_HELP = "Device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."
_NORMALIZE_HELP = ("Your --data yields inputs already normalised as (pixel - mean) / std: give MEAN,STD per channel "
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


_user_errors = one_line_errors  # bad input: one line on stderr and exit code 2, never a traceback


def _prepare_output(path: Path | None, option: str, *, folder: bool = False) -> None:
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


def _progress_shown(quiet: bool) -> bool:
    """Progress bars only for a person at a terminal."""
    return not quiet and sys.stderr.isatty()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    return device


def _parse_normalize(text: str | None) -> tuple[list[float], list[float]] | None:
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


def _model_from(factory: Callable[..., Any], width: int | None) -> Any:
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


def _check_options(**values: Any) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be {'> 0' if name == 'lr' else '>= 1'}, got {value}")


@dataclass
class _Setup:
    preset: Any
    model_factory: Callable[[], Any]
    train_set: Any
    test_set: Any
    train_eval: Any


def _resolve_setup(preset: str | None, model: str | None, data: str | None, data_dir: Path | None,
                   download: bool, width: int | None, split_seed: int, fraction: float = 1.0) -> _Setup:
    """The model factory and datasets from --preset and/or --model/--data (shared by the commands).

    ``fraction`` < 1 keeps that fraction of the training set, drawn with ``split_seed``.
    """
    import torch

    from .kit.data import load_dataset, train_fraction
    from .kit.presets import get_preset

    if preset is None and (model is None or data is None):
        raise ValueError("give --preset, or both --model and --data")
    if width is not None and width < 1:
        raise ValueError(f"--width must be >= 1, got {width}")
    chosen = get_preset(preset) if preset else None
    model_factory = _load_factory(model, "--model") if model is not None else None
    data_factory = _load_factory(data, "--data") if data is not None else None
    torch.manual_seed(split_seed)  # a --data factory that splits at random splits the same way each time
    if data_factory is not None:
        sets = data_factory()
        if not (isinstance(sets, (tuple, list)) and len(sets) == 2):
            raise ValueError("--data factory must return (train_dataset, test_dataset)")
        train_set, test_set = sets
        train_eval = train_set
    else:
        train_set, test_set = load_dataset(chosen.dataset, data_dir, download, augment=chosen.augment, seed=split_seed)
        train_eval = load_dataset(chosen.dataset, data_dir, False, seed=split_seed)[0] if chosen.augment else train_set

    def build():
        return _model_from(model_factory, width) if model_factory is not None else chosen.model(width)

    if fraction != 1:  # the same samples of both views (the augmented one and the one without augmentation)
        train_set, train_eval = (train_fraction(d, fraction, split_seed) for d in (train_set, train_eval))
    return _Setup(chosen, build, train_set, test_set, train_eval)


@app.command("benchmark-clean")
@_user_errors
def benchmark_clean(
    preset: str | None = typer.Option(None, help=_PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory 'package.module:function' returning "
                                       "(train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    download: bool = typer.Option(False, help="Download missing dataset files (only when asked)."),
    checkpoint: Path | None = typer.Option(None, help="Measure this clean model instead of training "
                                              "(safetensors, or a torch state dict read with weights_only)."),
    epochs: int | None = typer.Option(None, help="Clean training epochs (default: the preset's; 10 with "
                                      "--model/--data)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the preset's, else 128)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the preset's, else 0.1)."),
    width: int | None = typer.Option(None, help="The preset model's width (hidden units / widen factor)."),
    seed: int = typer.Option(0, help="Seed for initialisation and shuffling."),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split and of the --train-fraction draw "
                                   "(recorded in the benchmark)."),
    train_fraction: float = typer.Option(1.0, help="Train on this fraction of the training set, drawn with "
                                         "--split-seed (recorded in the benchmark)."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=_NORMALIZE_HELP + " Stored in the "
                                         "benchmark, so estimate-eps-star uses it too."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    out: Path = typer.Option(Path("clean.safetensors"), help="Where to write the benchmark."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines."),
) -> None:
    """Record the clean benchmark R*(0): train cleanly with early stopping (or measure --checkpoint)."""
    import torch
    from tqdm.auto import tqdm

    from .benchmark import CleanBenchmark
    from .kit.checkpoints import load_weights, read_state_dict
    from .kit.training import record_clean_benchmark

    _check_options(epochs=epochs, batch_size=batch_size, lr=lr)
    normalization = _parse_normalize(normalize)
    _prepare_output(out, "--out")
    device = _resolve_device(device)
    setup = _resolve_setup(preset, model, data, data_dir, download, width, split_seed, train_fraction)
    torch.manual_seed(seed)
    chosen, net = setup.preset, setup.model_factory()
    train_set, test_set, train_eval = setup.train_set, setup.test_set, setup.train_eval
    training = {"preset": preset} if preset else {"model": model, "data": data}
    training["split_seed"] = split_seed
    if train_fraction != 1:
        training["train_fraction"] = train_fraction
    if normalization is not None:
        training["normalization"] = {"mean": normalization[0], "std": normalization[1]}
    bs = batch_size or (chosen.batch_size if chosen else 128)

    if checkpoint is not None:
        load_weights(net, read_state_dict(checkpoint), source=str(checkpoint))
        net.to(device)
        loader = functools.partial(torch.utils.data.DataLoader, batch_size=max(bs, 256))
        bench = CleanBenchmark.measure(net, loader(test_set), loader(train_eval), device=device,
                                       training={**training, "checkpoint": str(checkpoint)})
    else:
        n_epochs = epochs or (chosen.epochs if chosen else 10)

        def progress(loader, epoch):
            return tqdm(loader, desc=f"epoch {epoch}/{n_epochs}", leave=False, disable=not _progress_shown(quiet),
                        file=sys.stderr)

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
    for warning in bench.warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {out}")


@app.command("evaluate")
@_user_errors
def evaluate_command(
    checkpoint: Path = typer.Option(..., help="The model's weights (safetensors, or a torch state dict read with "
                                    "weights_only)."),
    preset: str | None = typer.Option(None, help=_PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    width: int | None = typer.Option(None, help="The preset model's width."),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split."),
    eps: str = typer.Option("8/255", help="Attack strength in pixel units, e.g. 8/255."),
    norm: str = typer.Option("linf", help="linf | l2"),
    suite: str = typer.Option("apgd", help="apgd (APGD-CE then APGD-T) | fast (the same, 20 steps, 3 targets) | "
                              "pgd (PGD-20 with early stopping)."),
    n: int | None = typer.Option(None, help="Evaluate the first N test samples (default: all)."),
    batch_size: int = typer.Option(256, help="Batch size."),
    seed: int = typer.Option(0, help="Seed of the attacks' random starts."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=_NORMALIZE_HELP),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Clean and robust accuracy of a trained model under a suite of attacks (APGD-CE, APGD-T)."""
    from tqdm.auto import tqdm

    from .kit.checkpoints import load_weights, read_state_dict
    from .robustness import SUITES, evaluate

    if suite not in SUITES:
        raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}")
    if norm.lower() not in ("linf", "l2"):
        raise ValueError(f"--norm must be linf or l2, got {norm!r}")
    _check_options(batch_size=batch_size, n=n)
    strength = parse_eps_list(eps)
    if len(strength) != 1:
        raise ValueError(f"--eps takes one strength, got {eps!r}")
    normalization = _parse_normalize(normalize)
    _prepare_output(json_out, "--json")
    device = _resolve_device(device)
    setup = _resolve_setup(preset, model, data, data_dir, False, width, split_seed)
    net = setup.model_factory()
    load_weights(net, read_state_dict(checkpoint), source=str(checkpoint))
    net.to(device)
    total = min(n, len(setup.test_set)) if n else len(setup.test_set)
    bar = tqdm(total=total, disable=not _progress_shown(quiet), file=sys.stderr, leave=False, desc=f"{suite} suite")
    try:
        report = evaluate(net, setup.test_set, strength[0], norm=norm.lower(), suite=suite, n=n,
                          batch_size=batch_size, device=device, normalization=normalization, seed=seed,
                          progress=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()
    typer.echo(f"{format_eps(report.eps)} {report.norm}, checkpoint {checkpoint}")
    typer.echo(report.summary())
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
        typer.echo(f"wrote {json_out}")


@app.command("estimate-eps-star")
@_user_errors
def estimate_eps_star(
    benchmark: Path = typer.Option(..., help="The clean benchmark from `advhooks benchmark-clean`."),
    method: str = typer.Option("clean-probe", help="clean-probe (no training) | finetune | grid (training from "
                               "scratch at each eps) | runs (combine --records)"),
    records: str | None = typer.Option(None, metavar="GLOB", help="Run records (JSON from PhaseMonitor.save_record, "
                                       "e.g. 'runs/*.json') for --method runs."),
    preset: str | None = typer.Option(None, help="The preset the benchmark was recorded with (default: the "
                                      "benchmark's). " + _PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    width: int | None = typer.Option(None, help="The preset model's width."),
    eps: str | None = typer.Option(None, help="Strengths, e.g. '0.5/255,1/255,2/255' (grid points, fine-tune "
                                   "points, or the probe ladder). Default: chosen from the clean probe."),
    norm: str = typer.Option("linf", help="linf | l2"),
    attack: str | None = typer.Option(None, help="The training attack: pgd | fgm (default: pgd)."),
    steps: int = typer.Option(10, help="PGD steps."),
    runs: int = typer.Option(1, help="Repeats with other seeds (grid, finetune)."),
    epochs: int | None = typer.Option(None, help="Epochs per run (default: 10 for finetune; for grid the "
                                      "preset's, or 60 with --model/--data)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the clean run's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the clean run's)."),
    seed: int = typer.Option(0, help="Seed of the runs (initialisation, shuffling, attacks)."),
    split_seed: int | None = typer.Option(None, help="Seed of the digits train/test split (default: the "
                                          "benchmark's); a split other than the benchmark's is an error."),
    level: float = typer.Option(0.8, help="Coverage of the band around eps*."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=_NORMALIZE_HELP + " Default: the "
                                         "benchmark's."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    plot: Path | None = typer.Option(None, help="Draw loss against eps with R*(0) and the estimate (PNG)."),
    strict: bool = typer.Option(False, help="Fail (instead of warning) when the benchmark's model or data "
                                "fingerprint differs from the given ones."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Estimate the critical attack strength eps*, with its band, for a clean benchmark."""
    from tqdm.auto import tqdm

    from .benchmark import CleanBenchmark
    from .kit import estimate as E

    method = _check_estimate_options(method, norm, attack, level, records)
    _check_options(steps=steps, runs=runs, epochs=epochs, batch_size=batch_size, lr=lr)
    grid = E.check_eps_grid(parse_eps_list(eps), "--eps") if eps is not None else None
    normalization = _parse_normalize(normalize)
    _prepare_output(json_out, "--json")
    _prepare_output(plot, "--plot")
    device = _resolve_device(device)
    bench = CleanBenchmark.load(benchmark)
    if normalization is None and isinstance(bench.training.get("normalization"), dict):
        recorded = bench.training["normalization"]
        normalization = (list(recorded["mean"]), list(recorded["std"]))
    loaded_records, setup = None, None
    if method == "runs":
        loaded_records = _read_records(records)
    else:
        setup = _benchmark_setup(bench, preset, model, data, data_dir, width, split_seed, strict)

    bar = tqdm(total=0, disable=not _progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        bar.set_description(text, refresh=False)
        bar.update(1)

    try:
        result = E.estimate_eps_star(
            method, bench, model_factory=setup.model_factory if setup else None,
            train_set=setup.train_set if setup else None, test_set=setup.test_set if setup else None,
            train_eval_set=setup.train_eval if setup else None, records=loaded_records, eps=grid, norm=norm.lower(),
            attack=attack, steps=steps, runs=runs, epochs=epochs or (setup.preset.epochs if setup and setup.preset
                                                                     and method == "grid" else None),
            lr=lr, batch_size=batch_size, seed=seed, device=device, normalization=normalization, level=level,
            progress=progress)
    finally:
        bar.close()
    typer.echo(result.summary())
    if json_out is not None:
        json_out.write_text(result.to_json(indent=2))
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from .kit.estimate.plot import plot_estimate

        typer.echo(f"wrote {plot_estimate(result, plot)}")


def _check_estimate_options(method: str, norm: str, attack: str | None, level: float, records: str | None) -> str:
    """The estimate command's choices, checked before any work; returns the method, lower-cased."""
    from .kit.estimate import METHODS

    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"--method must be grid, finetune, clean-probe or runs, got {method!r}")
    if norm.lower() not in ("linf", "l2"):
        raise ValueError(f"--norm must be linf or l2, got {norm!r}")
    if attack is not None and attack.lower() not in ("pgd", "fgm"):
        raise ValueError(f"--attack must be pgd or fgm, got {attack!r}")
    if not 0 < level < 1:
        raise ValueError(f"--level must be in (0, 1), got {level}")
    if (method == "runs") != (records is not None):
        raise ValueError("--records goes with --method runs (and --method runs needs --records)")
    return method


def _benchmark_setup(bench: Any, preset: str | None, model: str | None, data: str | None, data_dir: Path | None,
                     width: int | None, split_seed: int | None, strict: bool) -> _Setup:
    """The setting a benchmark was recorded in: its preset and data split unless others are given, checked."""
    from .benchmark import check_benchmark_setup

    if preset is None and model is None and data is None:
        preset = bench.training.get("preset")
    if split_seed is None:
        split_seed = int(bench.training.get("split_seed", 0))
    if width is None and isinstance(bench.training.get("width"), int):
        width = bench.training["width"]
    setup = _resolve_setup(preset, model, data, data_dir, False, width, split_seed,
                           float(bench.training.get("train_fraction", 1.0)))
    model_difference = check_benchmark_setup(bench, setup.model_factory(), setup.train_eval, setup.test_set,
                                             strict=strict)
    if model_difference:
        typer.echo(f"warning: {model_difference}", err=True)
    return setup


def _read_records(pattern: str) -> list[dict]:
    import glob

    paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not paths:
        raise ValueError(f"--records {pattern!r} matches no file")
    out = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        if isinstance(record, dict):
            record["source"] = path  # named in the refusals
        out.append(record)
    return out


@app.command("connectivity")
@_user_errors
def connectivity_command(
    benchmark: Path = typer.Option(..., help="The clean benchmark (its weights are the clean end of the path)."),
    checkpoint: Path = typer.Option(..., help="The adversarially trained model: safetensors, a torch state dict "
                                    "(read with weights_only), or a run record whose 'checkpoint' names its weights."),
    preset: str | None = typer.Option(None, help="Default: the benchmark's. " + _PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    width: int | None = typer.Option(None, help="The preset model's width."),
    split_seed: int | None = typer.Option(None, help="Seed of the digits train/test split (default: the "
                                          "benchmark's)."),
    bends: int = typer.Option(1, help="Trained points between the two ends (1: the paper's quadratic curve)."),
    epochs: int = typer.Option(20, help="Epochs of training the curve's middle point."),
    lr: float | None = typer.Option(None, help="Learning rate of the curve's training (default: the clean run's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the clean run's)."),
    points: int = typer.Option(21, help="Positions evaluated along each path."),
    grid: int = typer.Option(21, help="The contour's resolution: GRID x GRID evaluations of the training loss (each "
                             "two passes over the training set with BatchNorm); 0: no contour."),
    seed: int = typer.Option(0, help="Seed of the curve's training."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    plot: Path | None = typer.Option(None, help="Draw the contour and the loss along both paths (PNG)."),
    strict: bool = typer.Option(False, help="Fail (instead of warning) when the model differs from the benchmark's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Mode connectivity (the paper's Figure 4): clean training loss along the curve and line between models."""
    import torch
    from tqdm.auto import tqdm

    from .benchmark import CleanBenchmark
    from .kit.checkpoints import load_weights, read_checkpoint
    from .kit.connectivity import connectivity

    _check_options(bends=bends, epochs=epochs, points=points, lr=lr, batch_size=batch_size)
    _prepare_output(json_out, "--json")
    _prepare_output(plot, "--plot")
    device = _resolve_device(device)
    bench = CleanBenchmark.load(benchmark)
    setup = _benchmark_setup(bench, preset, model, data, data_dir, width, split_seed, strict)
    state, source = read_checkpoint(checkpoint)
    clean = bench.load_weights_into(setup.model_factory()).to(device)
    adv = load_weights(setup.model_factory(), state, source=source).to(device)
    bs = batch_size or int(bench.training.get("batch_size", 128))
    loader = torch.utils.data.DataLoader(setup.train_set, batch_size=bs, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    bar = tqdm(total=epochs + grid, disable=not _progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        bar.set_description(text, refresh=False)
        bar.update(1)

    try:
        result = connectivity(clean, adv, loader, bends=bends, epochs=epochs,
                              lr=lr or float(bench.training.get("lr", 0.05)), points=points, grid=grid,
                              eval_loader=torch.utils.data.DataLoader(setup.train_eval, batch_size=max(bs, 256)),
                              device=device, seed=seed, progress=progress)
    finally:
        bar.close()
    result.settings.update(benchmark=str(benchmark), checkpoint=source)
    typer.echo(result.summary())
    if json_out is not None:
        json_out.write_text(result.to_json(indent=2))
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from .kit.connectivity import plot_connectivity

        typer.echo(f"wrote {plot_connectivity(result, plot)}")


@app.command("study")
@_user_errors
def study_command(
    preset: str | None = typer.Option(None, help=_PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory 'package.module:function', called as "
                                     "function(width) for each --widths entry, function() without --widths."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    widths: str | None = typer.Option(None, help="Model widths, e.g. 16,64,256 (default: the model's own)."),
    train_fraction: str = typer.Option("1", help="Training-set fractions, e.g. 1,0.5, drawn with --split-seed."),
    seeds: int = typer.Option(3, help="Seeds per configuration (0, 1, ...): clean benchmark and estimate each."),
    method: str = typer.Option("finetune", help="The eps* estimate per seed: finetune | grid | clean-probe."),
    check_grid: bool = typer.Option(False, "--check-grid", help="Also the grid (training from scratch at each eps) "
                                    "for the first seed of each configuration."),
    fgsm_threshold: bool = typer.Option(False, "--fgsm-threshold", help="Also the smallest --fgsm-eps at which "
                                        "plain FGSM training overfits catastrophically (the paper's Table 2)."),
    fgsm_eps: str = typer.Option("8/255,16/255,32/255,48/255,64/255,80/255", help="The FGSM probe's strengths."),
    epochs: int | None = typer.Option(None, help="Clean (and grid) epochs (default: the preset's; 10 with --model)."),
    finetune_epochs: int = typer.Option(10, help="Epochs of each fine-tune."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the preset's, else 0.1)."),
    weight_decay: float | None = typer.Option(None, help="Weight decay (default: the preset's, else 5e-4)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the preset's, else 128)."),
    norm: str = typer.Option("linf", help="linf | l2"),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split and of the fractions' draw."),
    customary_eps: str | None = typer.Option(None, help="The eps shown as its ratio to eps* (default: the "
                                             "dataset's customary one; 8/255 for the digits, which have none)."),
    level: float = typer.Option(0.8, help="Coverage of the bands."),
    records: Path | None = typer.Option(None, help="Folder with one JSON per unit of work: existing units are read, "
                                        "not rerun (resume; gather the shards' files here to combine them)."),
    shard: str = typer.Option("0/1", help="I/N: run only every N-th unit, starting at the I-th (with --records)."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the study (units, rows, comparisons) as JSON."),
    plot: Path | None = typer.Option(None, help="Draw eps* with its band against width and data size (PNG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """The eps* study (the paper's Table 3): eps* with its band over model widths x training-set sizes."""
    from tqdm.auto import tqdm

    from .kit.data import DATASETS
    from .kit.study import StudySettings, format_study, run_study

    _check_options(seeds=seeds, epochs=epochs, finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size)
    shard_at = _parse_shard(shard, records)
    width_list = _int_list(widths, "--widths") if widths else [None]
    setup = _resolve_setup(preset, model, data, data_dir, False, None, split_seed)
    build = _width_builder(setup, model)
    chosen = setup.preset
    customary = parse_eps(customary_eps) if customary_eps else (DATASETS[chosen.dataset].customary_eps
                                                                if chosen else None)
    if customary is not None and not customary > 0:
        raise ValueError(f"--customary-eps must be > 0, got {customary_eps!r}")
    settings = StudySettings(
        widths=tuple(width_list), fractions=tuple(parse_eps_list(train_fraction)), seeds=tuple(range(seeds)),
        method=method.lower(), check_grid=check_grid, fgsm_eps=tuple(parse_eps_list(fgsm_eps)) if fgsm_threshold
        else (), epochs=epochs or (chosen.epochs if chosen else 10), finetune_epochs=finetune_epochs,
        lr=lr or (chosen.lr if chosen else 0.1), batch_size=batch_size or (chosen.batch_size if chosen else 128),
        weight_decay=weight_decay if weight_decay is not None else (chosen.weight_decay if chosen else 5e-4),
        norm=norm.lower(), split_seed=split_seed, customary_eps=customary, level=level)
    _prepare_output(json_out, "--json")
    _prepare_output(plot, "--plot")
    _prepare_output(records, "--records", folder=True)
    origin = "the preset's" if chosen else "the defaults"
    typer.echo(f"recipe: {settings.epochs} epochs, lr {settings.lr:g}, batch size {settings.batch_size}, weight decay "
               f"{settings.weight_decay:g} (as given, else {origin}); "
               f"{settings.method}" + (f" ({settings.finetune_epochs} epochs)" if settings.method == "finetune" else "")
               + f"; seeds {list(settings.seeds)}; split seed {split_seed}", err=True)
    bar = tqdm(total=len(settings.units()), disable=not _progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        if text.startswith(("run-", "fgsm-")):
            bar.update(1)
        bar.set_description(text, refresh=True)

    try:
        result = run_study(settings, build, setup.train_set, setup.test_set, train_eval_set=setup.train_eval,
                           records_dir=records, shard=shard_at, device=_resolve_device(device), progress=progress,
                           setting={"preset": preset} if preset and not model else {"model": model, "data": data})
    finally:
        bar.close()
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))
    if not result["complete"]:
        typer.echo(f"shard {shard}: {len(result['units'])} of {len(settings.units())} units in {records}; run the "
                   "other shards, then this command without --shard over the gathered files to combine them (the "
                   "table and the plot come then)")
        return
    typer.echo(format_study(result))
    read = f", {result['reused']} of them read from {records}" if result["reused"] else ""
    count = len(settings.units())
    typer.echo(f"{count} unit{'' if count == 1 else 's'}{read}, in {result['seconds']:.0f} s")
    if json_out is not None:
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from .kit.study.plot import plot_study

        typer.echo(f"wrote {plot_study(result, plot)}")


def _parse_shard(text: str, records: Path | None) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    if count > 1 and records is None:
        raise ValueError("--shard needs --records (the folder where the shards' units are gathered)")
    return index, count


def _width_builder(setup: _Setup, model: str | None) -> Callable[[int | None], Any]:
    """``build(width)``: the preset's model at that width, or the --model factory called with it (without an
    argument when no --widths are given)."""
    if model is None:
        return lambda width: setup.preset.model(width)
    factory = _load_factory(model, "--model")
    return lambda width: _model_from(factory, width)


@app.command("demo")
@_user_errors
def demo(
    out: Path = typer.Option(Path("advhooks-demo"), help="Folder for demo.json, demo.png and clean.safetensors."),
    quick: bool = typer.Option(False, "--quick", help="A short version (about 15 s) for smoke tests."),
    seed: int = typer.Option(0, help="Seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or progress lines."),
) -> None:
    """The main job on the embedded digits: benchmark, eps* estimates, and watched adversarial training."""
    from tqdm.auto import tqdm

    from .kit.demo import format_demo_table, run_demo

    _prepare_output(out, "--out", folder=True)
    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", disable=not _progress_shown(quiet), file=sys.stderr)

    def progress(text: str) -> None:
        if not bar.disable:
            bar.set_description(text)
        elif not quiet:
            typer.echo(f"- {text}", err=True)

    try:
        result = run_demo(out, quick=quick, seed=seed, progress=progress)
    finally:
        bar.close()
    typer.echo(format_demo_table(result))
    typer.echo(f"wrote {out / 'demo.json'}" + (f" and {result['plot']}" if result.get("plot") else ""))


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option} must be integers >= 1, got {text!r}")
    return values


@app.command("simulate-linear")
@_user_errors
def simulate_linear(
    n: int = typer.Option(100, help="Samples per dataset."),
    d: str = typer.Option("2,5,10", help="Dimensions, comma-separated (the table's rows)."),
    ratios: str = typer.Option("0.1,0.3,1,3,10", help="eps / sqrt(d/n), comma-separated (the columns)."),
    repeats: int = typer.Option(300, help="Clean reference runs and adversarial runs per setting."),
    steps: int = typer.Option(300, help="Gradient descent steps T."),
    lr: float = typer.Option(0.1, help="Gradient descent step size (divided by (1 + eps)^2 for the endpoints; "
                             "each trajectory pair shares one step)."),
    sigma: float = typer.Option(1.0, help="Noise standard deviation."),
    theta_norm: float = typer.Option(1.0, help="||theta0|| (> 0)."),
    seed: int = typer.Option(0, help="Seed."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all results as JSON."),
    plot: Path | None = typer.Option(None, help="Draw Figures 2 and 3 side by side (PNG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Section 4 of the paper: linear regression under an L2 attack, Figures 2 and 3 as a table.

    The table's cells compare endpoints (each run at its own step); the trajectories of the plot run both
    members of each clean/adversarial pair at one step, printed under the table.
    """
    from tqdm.auto import tqdm

    from .kit.theory import LinearSetting, format_simulation, simulate

    dims = _int_list(d, "--d")
    ratio_list = parse_eps_list(ratios)
    if any(r <= 0 for r in ratio_list):
        raise ValueError(f"--ratios must be > 0, got {ratios!r}")
    _check_options(n=n, repeats=repeats, steps=steps, lr=lr)
    _prepare_output(json_out, "--json")
    _prepare_output(plot, "--plot")
    settings = [LinearSetting(n, k, sigma=sigma, theta_norm=theta_norm) for k in dims]
    bar = tqdm(total=len(dims) * len(ratio_list), disable=not _progress_shown(quiet), file=sys.stderr, leave=False)
    results = []
    for setting in settings:
        results.append(simulate(setting, ratio_list, repeats=repeats, steps=steps, lr=lr, seed=seed,
                                progress=lambda text: bar.update(1)))
    bar.close()
    typer.echo(format_simulation(results))
    if json_out is not None:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2))
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from .kit.theory.plot import plot_simulation

        typer.echo(f"wrote {plot_simulation(results, plot)}")


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
        bench = CleanBenchmark.read(file)
        typer.echo(bench.summary())
        for warning in bench.warnings():
            typer.echo(f"warning: {warning}", err=True)


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


def main() -> None:
    """Entry point of the ``advhooks`` console script."""
    app()


if __name__ == "__main__":
    main()
