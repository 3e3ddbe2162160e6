"""``advhooks study``: the paper's Tables 3 and 2 on a setting, one unit of work per file."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..schedules import parse_eps, parse_eps_list
from .app import DEVICE_HELP, PRESET_HELP, app, user_errors
from .options import (
    Setup,
    check_options,
    int_list,
    load_factory,
    model_from,
    prepare_output,
    progress_shown,
    resolve_device,
    resolve_setup,
)


@app.command("study")
@user_errors
def study_command(
    preset: str | None = typer.Option(None, help=PRESET_HELP),
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
    check_grid_all: bool = typer.Option(False, "--check-grid-all", help="Also the grid for every seed (its bands "
                                        "over seeds, like the estimate's)."),
    fgsm_threshold: bool = typer.Option(False, "--fgsm-threshold", help="Also the smallest --fgsm-eps at which "
                                        "plain FGSM training overfits catastrophically (the paper's Table 2)."),
    fgsm_eps: str = typer.Option("8/255,16/255,32/255,48/255,64/255,80/255", help="The FGSM probe's strengths."),
    epochs: int | None = typer.Option(None, help="Clean (and grid) epochs (default: the preset's recipe, else "
                                      "Recipe's)."),
    finetune_epochs: int | None = typer.Option(None, help="Epochs of each fine-tune (default: the estimator's)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the preset's recipe, else Recipe's)."),
    weight_decay: float | None = typer.Option(None, help="Weight decay (default: the preset's recipe, else "
                                              "Recipe's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the preset's recipe, else Recipe's)."),
    norm: str = typer.Option("linf", help="linf | l2"),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split and of the fractions' draw."),
    customary_eps: str | None = typer.Option(None, help="The eps shown as its ratio to eps* (default: the "
                                             "dataset's customary one; 8/255 for the digits, which have none)."),
    level: float = typer.Option(0.8, help="Coverage of the bands."),
    units: Path | None = typer.Option(None, help="Folder with one JSON per unit of work: existing units are read, "
                                        "not rerun (resume; gather the shards' files here to combine them)."),
    shard: str = typer.Option("0/1", help="I/N: run only every N-th unit, starting at the I-th (with --units)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the study (units, rows, comparisons) as JSON."),
    plot: Path | None = typer.Option(None, help="Draw eps* with its band against width and data size (PNG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """The eps* study (the paper's Table 3): eps* with its band over model widths x training-set sizes."""
    from tqdm.auto import tqdm

    from ..benchmark import Recipe
    from ..kit.data import DATASETS
    from ..kit.study import StudySettings, finetune_epochs_of, format_study, run_study

    check_options(seeds=seeds, epochs=epochs, finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size)
    if check_grid and check_grid_all:
        raise ValueError("give --check-grid (first seed) or --check-grid-all (every seed), not both")
    shard_at = _parse_shard(shard, units)
    width_list = int_list(widths, "--widths") if widths else [None]
    setup = resolve_setup(preset, model, data, data_dir, False, None, split_seed)
    build = _width_builder(setup, model)
    chosen = setup.preset
    customary = parse_eps(customary_eps) if customary_eps else (DATASETS[chosen.dataset].customary_eps
                                                                if chosen else None)
    if customary is not None and not customary > 0:
        raise ValueError(f"--customary-eps must be > 0, got {customary_eps!r}")
    settings = StudySettings(
        widths=tuple(width_list), fractions=tuple(parse_eps_list(train_fraction)), seeds=tuple(range(seeds)),
        method=method.lower(), check_grid="all" if check_grid_all else check_grid,
        fgsm_eps=tuple(parse_eps_list(fgsm_eps)) if fgsm_threshold else (),
        recipe=(chosen.recipe if chosen else Recipe()).with_given(
            epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay), finetune_epochs=finetune_epochs,
        norm=norm.lower(), split_seed=split_seed, customary_eps=customary, level=level)
    prepare_output(json_out, "--json")
    prepare_output(plot, "--plot")
    prepare_output(units, "--units", folder=True)
    origin = "the preset's" if chosen else "the defaults"
    r = settings.recipe
    typer.echo(f"recipe: {r.epochs} epochs, lr {r.lr:g}, batch size {r.batch_size}, weight decay "
               f"{r.weight_decay:g} (as given, else {origin}); "
               f"{settings.method}"
               + (f" ({finetune_epochs_of(settings)} epochs)" if settings.method == "finetune" else "")
               + f"; seeds {list(settings.seeds)}; split seed {split_seed}", err=True)
    bar = tqdm(total=len(settings.units()), disable=not progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        if text.startswith(("run-", "fgsm-")):
            bar.update(1)
        bar.set_description(text, refresh=True)

    try:
        result = run_study(settings, build, setup.train_set, setup.test_set, train_eval_set=setup.train_eval,
                           units_dir=units, shard=shard_at, device=resolve_device(device), progress=progress,
                           setting={"preset": preset} if preset and not model else {"model": model, "data": data})
    finally:
        bar.close()
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))
    if not result["complete"]:
        typer.echo(f"shard {shard}: {len(result['units'])} of {len(settings.units())} units in {units}; run the "
                   "other shards, then this command without --shard over the gathered files to combine them (the "
                   "table and the plot come then)")
        return
    typer.echo(format_study(result))
    read = f", {result['reused']} of them read from {units}" if result["reused"] else ""
    count = len(settings.units())
    typer.echo(f"{count} unit{'' if count == 1 else 's'}{read}, in {result['seconds']:.0f} s")
    if json_out is not None:
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        from ..kit.study.plot import plot_study

        typer.echo(f"wrote {plot_study(result, plot)}")


def _parse_shard(text: str, units: Path | None) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    if count > 1 and units is None:
        raise ValueError("--shard needs --units (the folder where the shards' units are gathered)")
    return index, count


def _width_builder(setup: Setup, model: str | None) -> Callable[[int | None], Any]:
    """``build(width)``: the preset's model at that width, or the --model factory called with it (without an
    argument when no --widths are given)."""
    if model is None:
        return lambda width: setup.preset.model(width)
    factory = load_factory(model, "--model")
    return lambda width: model_from(factory, width)


