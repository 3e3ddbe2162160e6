"""``advhooks simulate-linear``: the paper's linear model (Figures 2 and 3)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..schedules import parse_eps_list
from .app import app, user_errors
from .options import check_options, int_list, prepare_output, progress_shown


@app.command("simulate-linear")
@user_errors
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

    from ..kit.theory import LinearSetting, format_simulation, simulate

    dims = int_list(d, "--d")
    ratio_list = parse_eps_list(ratios)
    if any(r <= 0 for r in ratio_list):
        raise ValueError(f"--ratios must be > 0, got {ratios!r}")
    check_options(n=n, repeats=repeats, steps=steps, lr=lr)
    prepare_output(json_out, "--json")
    prepare_output(plot, "--plot")
    settings = [LinearSetting(n, k, sigma=sigma, theta_norm=theta_norm) for k in dims]
    bar = tqdm(total=len(dims) * len(ratio_list), disable=not progress_shown(quiet), file=sys.stderr, leave=False)
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
        from ..kit.theory.plot import plot_simulation

        typer.echo(f"wrote {plot_simulation(results, plot)}")


