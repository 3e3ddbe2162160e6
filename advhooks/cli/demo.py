"""``advhooks demo``: the main job on the embedded digits."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .app import app, user_errors
from .options import prepare_output, progress_shown


@app.command("demo")
@user_errors
def demo(
    out: Path = typer.Option(Path("advhooks-demo"), help="Folder for demo.json, demo.png and clean.safetensors."),
    quick: bool = typer.Option(False, "--quick", help="A short version (about 15 s) for smoke tests."),
    seed: int = typer.Option(0, help="Seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or progress lines."),
) -> None:
    """The main job on the embedded digits: benchmark, eps* estimates, and watched adversarial training."""
    from tqdm.auto import tqdm

    from ..kit.demo import format_demo_table, run_demo

    prepare_output(out, "--out", folder=True)
    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", disable=not progress_shown(quiet), file=sys.stderr)

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


