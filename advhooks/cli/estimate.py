"""``advhooks estimate-eps-star``: ε* by the grid, run records, fine-tuning or the clean probe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from ..schedules import parse_eps_list
from .app import DEVICE_HELP, NORMALIZE_HELP, PRESET_HELP, app, user_errors
from .options import (
    benchmark_setup,
    check_options,
    parse_normalize,
    prepare_output,
    progress_shown,
    resolve_device,
    show_result,
)


@app.command("estimate-eps-star")
@user_errors
def estimate_eps_star(
    benchmark: Path = typer.Option(..., help="The clean benchmark from `advhooks benchmark-clean`."),
    method: str = typer.Option("clean-probe", help="clean-probe (no training) | finetune | grid (training from "
                               "scratch at each eps) | records (combine --records)"),
    records: str | None = typer.Option(None, metavar="GLOB", help="Run records (JSON from PhaseMonitor.save_record, "
                                       "e.g. 'runs/*.json') for --method records."),
    preset: str | None = typer.Option(None, help="The preset the benchmark was recorded with (default: the "
                                      "benchmark's). " + PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    width: int | None = typer.Option(None, help="The preset model's width."),
    eps: str | None = typer.Option(None, help="Strengths, e.g. '0.5/255,1/255,2/255' (grid points, the fine-tune's "
                                   "first points, or the probe ladder). Default: chosen from the clean probe."),
    norm: str | None = typer.Option(None, help="linf | l2 (default: linf)."),
    attack: str | None = typer.Option(None, help="The training attack: pgd | fgm (default: the grid's pgd, the "
                                      "fine-tune's fgm)."),
    steps: int | None = typer.Option(None, help="PGD steps (of the training attack pgd and of every evaluation; "
                                     "default: 10)."),
    runs: int | None = typer.Option(None, help="Repeats with other seeds (grid, finetune; default: 1)."),
    epochs: int | None = typer.Option(None, help="Epochs per run (default: the fine-tune's own; for grid the "
                                      "clean run's)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the clean run's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the clean run's)."),
    seed: int | None = typer.Option(None, help="Seed of the runs (initialisation, shuffling, attacks; default: 0)."),
    split_seed: int | None = typer.Option(None, help="Seed of the digits train/test split (default: the "
                                          "benchmark's); a split other than the benchmark's is an error."),
    level: float | None = typer.Option(None, help="Coverage of the band around eps* (default: 0.8)."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=NORMALIZE_HELP + " Default: the "
                                         "benchmark's."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    plot: Path | None = typer.Option(None, help="Draw loss against eps with R*(0) and the estimate (PNG)."),
    verify: bool = typer.Option(False, "--verify", help="After --method finetune, one monitored run from scratch at "
                                "the estimate (the cost of one grid run): 'near eps*' confirms it."),
    strict: bool = typer.Option(False, help="Fail (instead of warning) when the benchmark's model or data "
                                "fingerprint differs from the given ones."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Estimate the critical attack strength eps*, with its band, for a clean benchmark."""
    from tqdm.auto import tqdm

    from ..benchmark import CleanBenchmark
    from ..kit import estimate as E

    method = _check_estimate_options(method, norm, attack, level, records)
    if verify and method != "finetune":
        raise ValueError("--verify checks a --method finetune estimate (the grid's runs are from scratch already)")
    check_options(steps=steps, runs=runs, epochs=epochs, batch_size=batch_size, lr=lr)
    grid = E.check_eps_grid(parse_eps_list(eps), "--eps") if eps is not None else None
    normalization = parse_normalize(normalize)
    prepare_output(json_out, "--json")
    prepare_output(plot, "--plot")
    device = resolve_device(device)
    bench = CleanBenchmark.load(benchmark)
    if normalization is None and isinstance(bench.training.get("normalization"), dict):
        recorded = bench.training["normalization"]
        normalization = (list(recorded["mean"]), list(recorded["std"]))
    settings = E.settings_for(method, bench, dict(norm=norm, attack=attack, steps=steps, runs=runs, epochs=epochs,
                                                  lr=lr, batch_size=batch_size, seed=seed, level=level,
                                                  normalization=normalization))
    loaded_records, setup = None, None
    if method == "records":
        loaded_records = _read_records(records)
    else:
        setup = benchmark_setup(bench, preset, model, data, data_dir, width, split_seed, strict)

    bar = tqdm(total=0, disable=not progress_shown(quiet), file=sys.stderr, leave=False)

    def progress(text: str) -> None:
        bar.set_description(text, refresh=False)
        bar.update(1)

    try:
        result = E.estimate_eps_star(
            method, bench, setup.model_factory if setup else None,
            E.EstimationData(setup.train_set, setup.test_set, setup.train_eval) if setup else None, settings,
            eps=grid, records=loaded_records, verify=verify, device=device, progress=progress)
    finally:
        bar.close()
    show_result(result, json_out, plot, "estimate")


def _check_estimate_options(method: str, norm: str | None, attack: str | None, level: float | None,
                            records: str | None) -> str:
    """The estimate command's choices, checked before any work, in the options' own names (the settings check
    them again, and give every default); returns the method, lower-cased."""
    from ..kit.estimate import METHODS

    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"--method must be grid, finetune, clean-probe or records, got {method!r}")
    if norm is not None and norm.lower() not in ("linf", "l2"):
        raise ValueError(f"--norm must be linf or l2, got {norm!r}")
    if attack is not None and attack.lower() not in ("pgd", "fgm"):
        raise ValueError(f"--attack must be pgd or fgm, got {attack!r}")
    if level is not None and not 0 < level < 1:
        raise ValueError(f"--level must be in (0, 1), got {level}")
    if (method == "records") != (records is not None):
        raise ValueError("--records goes with --method records (and --method records needs --records)")
    return method


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


