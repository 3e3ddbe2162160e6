"""``advhooks evaluate``: robust accuracy by a suite of attacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..schedules import format_eps, parse_eps_list
from .app import DEVICE_HELP, NORMALIZE_HELP, PRESET_HELP, app, user_errors
from .options import check_options, parse_normalize, prepare_output, progress_shown, resolve_device, resolve_setup


@app.command("evaluate")
@user_errors
def evaluate_command(
    checkpoint: Path = typer.Option(..., help="The model's weights (safetensors, or a torch state dict read with "
                                    "weights_only)."),
    preset: str | None = typer.Option(None, help=PRESET_HELP),
    model: str | None = typer.Option(None, help="Your model factory, 'package.module:function'."),
    data: str | None = typer.Option(None, help="Your data factory returning (train_dataset, test_dataset)."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset files (mnist, cifar, svhn)."),
    width: int | None = typer.Option(None, help="The preset model's width."),
    split_seed: int = typer.Option(0, help="Seed of the digits train/test split."),
    eps: str = typer.Option("8/255", help="Attack strength in pixel units, e.g. 8/255."),
    norm: str = typer.Option("linf", help="linf | l2"),
    suite: str = typer.Option("standard", help="standard (AutoAttack's: APGD-CE, APGD-T, FAB-T, Square) | apgd "
                              "(APGD-CE then APGD-T) | fast (the same, 20 steps, 3 targets) | rand (APGD-CE and "
                              "APGD-DLR with 20 draws per step, for randomised models) | pgd (PGD-20)."),
    n: int | None = typer.Option(None, help="Evaluate the first N test samples (default: all)."),
    batch_size: int = typer.Option(256, help="Batch size."),
    seed: int = typer.Option(0, help="Seed of the attacks' random starts."),
    normalize: str | None = typer.Option(None, metavar="MEAN,STD", help=NORMALIZE_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Clean and robust accuracy of a trained model under a suite of attacks (default: AutoAttack's standard)."""
    from tqdm.auto import tqdm

    from ..kit.checkpoints import load_weights, read_state_dict
    from ..robustness import SUITES, robust_accuracy

    if suite not in SUITES:
        raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}")
    if norm.lower() not in ("linf", "l2"):
        raise ValueError(f"--norm must be linf or l2, got {norm!r}")
    check_options(batch_size=batch_size, n=n)
    strength = parse_eps_list(eps)
    if len(strength) != 1:
        raise ValueError(f"--eps takes one strength, got {eps!r}")
    normalization = parse_normalize(normalize)
    prepare_output(json_out, "--json")
    device = resolve_device(device)
    setup = resolve_setup(preset, model, data, data_dir, False, width, split_seed)
    net = setup.model_factory()
    load_weights(net, read_state_dict(checkpoint), source=str(checkpoint))
    net.to(device)
    total = min(n, len(setup.test_set)) if n else len(setup.test_set)
    bar = tqdm(total=total, disable=not progress_shown(quiet), file=sys.stderr, leave=False, desc=f"{suite} suite")
    try:
        report = robust_accuracy(net, setup.test_set, strength[0], norm=norm.lower(), suite=suite, n=n,
                          batch_size=batch_size, device=device, normalization=normalization, seed=seed,
                          progress=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()
    typer.echo(f"{format_eps(report.eps)} {report.norm}, checkpoint {checkpoint}")
    typer.echo(report.summary())
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
        typer.echo(f"wrote {json_out}")


