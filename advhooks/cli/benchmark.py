"""``advhooks benchmark-clean`` (record R*(0)) and ``advhooks show`` (read a benchmark)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer

from .app import DEVICE_HELP, NORMALIZE_HELP, PRESET_HELP, app, user_errors
from .options import check_options, parse_normalize, prepare_output, progress_shown, resolve_device, resolve_setup


@app.command("benchmark-clean")
@user_errors
def benchmark_clean(
    preset: str | None = typer.Option(None, help=PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory 'package.module:function' returning "
                                       "(train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    download: bool = typer.Option(False, help="Download missing dataset files (only when asked)."),
    checkpoint: Path | None = typer.Option(None, help="Measure this clean model instead of training "
                                              "(safetensors, or a torch state dict read with weights_only)."),
    epochs: int | None = typer.Option(None, help="Clean training epochs (default: the preset's recipe, else "
                                      "advhooks.benchmark.Recipe's)."),
    batch_size: int | None = typer.Option(None, help="Global batch size (default: the preset's recipe, else "
                                          "Recipe's)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the preset's recipe, else Recipe's)."),
    width: int | None = typer.Option(None, help="The preset model's width (hidden units / widen factor)."),
    seed: int = typer.Option(0, help="Seed for initialisation and shuffling."),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split and of the --train-fraction draw "
                                   "(recorded in the benchmark)."),
    train_fraction: float = typer.Option(1.0, help="Train on this fraction of the training set, drawn with "
                                         "--split-seed (recorded in the benchmark)."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=NORMALIZE_HELP + " Stored in the "
                                         "benchmark, so estimate-eps-star uses it too."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    out: Path = typer.Option(Path("clean.safetensors"), help="Where to write the benchmark."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines."),
) -> None:
    """Record the clean benchmark R*(0): train cleanly with early stopping (or measure --checkpoint)."""
    import torch
    from tqdm.auto import tqdm

    from ..benchmark import CleanBenchmark, Recipe
    from ..kit.checkpoints import load_weights, read_state_dict
    from ..kit.training import record_clean_benchmark

    check_options(epochs=epochs, batch_size=batch_size, lr=lr)
    normalization = parse_normalize(normalize)
    prepare_output(out, "--out")
    device = resolve_device(device)
    setup = resolve_setup(preset, model, data, data_dir, download, width, split_seed, train_fraction)
    torch.manual_seed(seed)
    chosen, net = setup.preset, setup.model_factory()
    train_set, test_set, train_eval = setup.train_set, setup.test_set, setup.train_eval
    training = {"preset": preset} if preset else {"model": model, "data": data}
    training["split_seed"] = split_seed
    if train_fraction != 1:
        training["train_fraction"] = train_fraction
    if normalization is not None:
        training["normalization"] = {"mean": normalization[0], "std": normalization[1]}
    recipe = (chosen.recipe if chosen else Recipe()).with_given(epochs=epochs, batch_size=batch_size, lr=lr)

    if checkpoint is not None:
        load_weights(net, read_state_dict(checkpoint), source=str(checkpoint))
        net.to(device)
        loader = functools.partial(torch.utils.data.DataLoader, batch_size=max(recipe.batch_size, 256))
        bench = CleanBenchmark.measure(net, loader(test_set), loader(train_eval), device=device,
                                       training={**training, "checkpoint": str(checkpoint)})
    else:

        def progress(loader, epoch):
            return tqdm(loader, desc=f"epoch {epoch}/{recipe.epochs}", leave=False, disable=not progress_shown(quiet),
                        file=sys.stderr)

        def on_epoch(epoch, train_loss, test_loss):
            if not quiet:
                tqdm.write(f"epoch {epoch:3d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}",
                           file=sys.stderr)

        bench = record_clean_benchmark(
            net, train_set, test_set, recipe=recipe, train_eval_set=train_eval, device=device,
            seed=seed, on_epoch=on_epoch, progress=progress, training={**training, "width": width},
        )
    bench.save(out)
    typer.echo(bench.summary())
    for warning in bench.warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {out}")


@app.command("show")
@user_errors
def show(
    file: Path = typer.Argument(..., help="A clean benchmark file (.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Print a clean benchmark's record (reads the header only, never the weights)."""
    from ..benchmark import CleanBenchmark, read_header

    if as_json:
        typer.echo(json.dumps(read_header(file), indent=2, sort_keys=True))
    else:
        bench = CleanBenchmark.read(file)
        typer.echo(bench.summary())
        for warning in bench.warnings():
            typer.echo(f"warning: {warning}", err=True)


