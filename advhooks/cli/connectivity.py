"""``advhooks connectivity``: the paper's Figure 4 between the clean and an adversarial model."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .app import DEVICE_HELP, PRESET_HELP, app, user_errors
from .options import benchmark_setup, check_options, prepare_output, progress_shown, resolve_device, show_result


@app.command("connectivity")
@user_errors
def connectivity_command(
    benchmark: Path = typer.Option(..., help="The clean benchmark (its weights are the clean end of the path)."),
    checkpoint: Path = typer.Option(..., help="The adversarially trained model: safetensors, a torch state dict "
                                    "(read with weights_only), or a run record whose 'checkpoint' names its weights."),
    preset: str | None = typer.Option(None, help="Default: the benchmark's. " + PRESET_HELP),
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
    resolution: int = typer.Option(21, help="The contour's resolution: RESOLUTION x RESOLUTION evaluations of the "
                                   "training loss (each two passes over the training set with BatchNorm); 0: none."),
    seed: int = typer.Option(0, help="Seed of the curve's training."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    plot: Path | None = typer.Option(None, help="Draw the contour and the loss along both paths (PNG)."),
    strict: bool = typer.Option(False, help="Fail (instead of warning) when the model differs from the benchmark's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Mode connectivity (the paper's Figure 4): clean training loss along the curve and line between models."""
    import torch
    from tqdm.auto import tqdm

    from ..benchmark import CleanBenchmark, Recipe
    from ..kit.checkpoints import load_weights, read_checkpoint
    from ..kit.connectivity import CurveSettings, connectivity

    check_options(bends=bends, epochs=epochs, points=points, lr=lr, batch_size=batch_size)
    prepare_output(json_out, "--json")
    prepare_output(plot, "--plot")
    device = resolve_device(device)
    bench = CleanBenchmark.load(benchmark)
    setup = benchmark_setup(bench, preset, model, data, data_dir, width, split_seed, strict)
    state, source = read_checkpoint(checkpoint)
    clean = bench.load_weights_into(setup.model_factory()).to(device)
    adv = load_weights(setup.model_factory(), state, source=source).to(device)
    recipe = Recipe.from_record(bench.training).with_given(batch_size=batch_size, lr=lr)  # the clean run's, else given
    bs = recipe.batch_size
    settings = CurveSettings(bends=bends, epochs=epochs, lr=recipe.lr, points=points, resolution=resolution, seed=seed)
    loader = torch.utils.data.DataLoader(setup.train_set, batch_size=bs, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    bar = tqdm(total=epochs + resolution, disable=not progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        bar.set_description(text, refresh=False)
        bar.update(1)

    try:
        result = connectivity(clean, adv, loader, settings,
                              eval_loader=torch.utils.data.DataLoader(setup.train_eval, batch_size=max(bs, 256)),
                              device=device, progress=progress)
    finally:
        bar.close()
    result.settings.update(benchmark=str(benchmark), checkpoint=source)
    show_result(result, json_out, plot, "connectivity")


