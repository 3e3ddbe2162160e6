"""One setting through every path: do the plain loop, Accelerate (1 and 2 processes), the HF Trainer and Lightning
give the same verdict?

The setting is the digits-mlp clean benchmark's own recipe (60 epochs, global batch 64, SGD with momentum 0.9,
lr 0.05 with the paper's step decay), PGD-10 L∞ training, and the PhaseMonitor on with its own evaluation at its
defaults (θ̂ by the PGD-3 adversarial test loss, R̂ at θ̂'s fixed weights by PGD-10, within the 5 % budget), against
ONE shared benchmark recorded with
``advhooks benchmark-clean --preset digits-mlp`` (or the --benchmark given). Each path is its example script,
run as a subprocess, one at a time, at each ε:

- plain: ``python examples/train_digits.py``
- accelerate-1 / accelerate-2: ``accelerate launch [--multi_gpu --num_processes 2] examples/cifar_adv.py
  --dataset digits --cpu`` (the global batch stays 64: each of 2 processes takes 32)
- hf: ``python examples/train_digits_hf.py`` (it reads the recipe from the benchmark file)
- lightning: ``python examples/train_digits_lightning.py``
- (only when named in --paths) hf-2: the HF Trainer under ``accelerate launch --multi_gpu --num_processes 2``;
  lightning-2: ``train_digits_lightning.py --devices 2``

From each run's final PhaseReport (the examples' --report-json, cifar_adv.py's --report) it collects ρ, its band
(ratio_interval), the regime, θ̂'s epoch and whether the verdict is still provisional; from its output whether the
monitor warned that the recipe differs from the benchmark's, and the evaluation's share of the training time
(the examples' "final:" line). It prints a markdown table (rows: paths, columns: ε; cell "ρ [low, high] regime"),
a second one with θ̂'s epoch, the evaluation's share and the run's wall time, and per ε whether all the bands
overlap (they do when max(low) <= min(high)) and which paths warned about their recipe.

    python benchmarks/every_path.py --out every-path-results            # the full run
    python benchmarks/every_path.py --epochs 2 --eps 8/255              # a smoke run of every path
    python benchmarks/every_path.py --paths plain,hf --benchmark clean.safetensors

--epochs N shortens every run (not the benchmark): total_epochs, the warm-up (N // 2 + 5) and the schedule's
decays then differ from the benchmark's 60 epochs, every path warns about it, and the table says so.
Writes OUT/every_path.json (every run: the command, the final report, the warnings, the times), OUT/every_path.md
(the tables), OUT/runs/ (each run's output and report) and, without --benchmark, OUT/clean.safetensors.

Time on 2 idle CPU cores: about 3.5 minutes for the full run (the benchmark 5 s, then about 10 s per run,
start-up included, 20 runs), about 35 s for the smoke run (--epochs 2 --eps 8/255). On a busy machine the
single-process paths (plain, hf, lightning: torch's own thread count) slow down far more than the Accelerate
launches (one thread per process): the same full run took 25 minutes while a test suite ran beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PY = sys.executable
PATHS = ("plain", "accelerate-1", "accelerate-2", "hf", "lightning")
EXTRA_PATHS = ("hf-2", "lightning-2")  # on 2 processes too, when named in --paths
RECIPE_WARNING = "differs from the clean benchmark's recipe"
# The monitor's warnings: "advhooks WARNING: ..." from its default handler, or the bare message where the script
# configures logging itself (train_digits.py's basicConfig("%(message)s") silences that handler).
WARNING_MARKERS = ("advhooks WARNING", RECIPE_WARNING, "shorter than the monitor's warm-up")
SHARE = re.compile(r"the monitor's evaluation took ([0-9.]+) % of the training time")


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(processes: int) -> list[str]:
    """``accelerate launch`` without a config file: N gloo processes on the CPU (--multi_gpu), or one."""
    multi = ["--multi_gpu"] if processes > 1 else []
    return [PY, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port()]


def command(path: str, eps: str, benchmark: str, report: pathlib.Path, epochs: int | None) -> list[str]:
    """The example's command line for ``path`` at ``eps`` (its defaults otherwise: seed 0, PGD-10)."""
    common = ["--eps", eps, "--benchmark", benchmark, *(["--epochs", str(epochs)] if epochs else [])]
    if path == "plain":
        return [PY, str(EXAMPLES / "train_digits.py"), *common, "--report-json", str(report)]
    if path in ("accelerate-1", "accelerate-2"):
        return [*launch(int(path[-1])), str(EXAMPLES / "cifar_adv.py"), "--dataset", "digits", "--cpu", *common,
                "--report", str(report)]
    if path == "hf":
        return [PY, str(EXAMPLES / "train_digits_hf.py"), *common, "--report-json", str(report)]
    if path == "hf-2":  # the global batch stays the benchmark's: each of 2 processes takes half
        return [*launch(2), str(EXAMPLES / "train_digits_hf.py"), *common, "--report-json", str(report)]
    if path == "lightning":
        return [PY, str(EXAMPLES / "train_digits_lightning.py"), *common, "--report-json", str(report)]
    if path == "lightning-2":
        return [PY, str(EXAMPLES / "train_digits_lightning.py"), *common, "--devices", "2", "--report-json",
                str(report)]
    raise ValueError(f"unknown path {path!r}")


def final_report(path: str, report: pathlib.Path) -> dict | None:
    """The final PhaseReport as a dict (cifar_adv.py --report writes every epoch's: the last one)."""
    if not report.exists():
        return None
    data = json.loads(report.read_text())
    return data["reports"][-1] if path.startswith("accelerate") else data


def run_one(path: str, eps: str, benchmark: str, runs: pathlib.Path, epochs: int | None) -> dict:
    tag = f"{path}-eps{eps.replace('/', '_')}"
    report = runs / f"{tag}.json"
    report.unlink(missing_ok=True)
    cmd = command(path, eps, benchmark, report, epochs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=runs)
    wall = time.perf_counter() - started
    output = proc.stdout + "\n" + proc.stderr
    (runs / f"{tag}.log").write_text(f"$ {' '.join(cmd)}\n\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    warnings = sorted({line.strip() for line in output.splitlines() if any(m in line for m in WARNING_MARKERS)})
    share = SHARE.search(output)
    final = final_report(path, report) if proc.returncode == 0 else None
    return {
        "path": path, "eps": eps, "command": cmd, "returncode": proc.returncode, "wall_seconds": round(wall, 1),
        "report": final,
        "recipe_warning": any(RECIPE_WARNING in w for w in warnings),
        "warnings": warnings,
        "evaluation_share": None if share is None else float(share.group(1)) / 100,
        "error": None if final is not None else (proc.stderr.strip()[-2000:] or f"exit code {proc.returncode}"),
    }


def cell(run: dict) -> str:
    r = run["report"]
    if r is None:
        return f"FAILED (exit {run['returncode']})"
    low, high = r["ratio_interval"]
    notes = [note for note, on in (("provisional", r["provisional"]), ("NOT COMPARABLE", not r.get("comparable", True)),
                                   ("recipe warning", run["recipe_warning"])) if on]
    regime = r["regime"].replace("*", "\\*")  # (markdown: a bare * between two cells would start emphasis)
    return f"{r['ratio']:.3f} [{low:.3f}, {high:.3f}] {regime}" + "".join(f" ({n})" for n in notes)


def detail(run: dict) -> str:
    r = run["report"]
    if r is None:
        return "-"
    share = "?" if run["evaluation_share"] is None else f"{100 * run['evaluation_share']:.1f} %"
    return f"θ̂ epoch {r['early_stopped_epoch']}, eval {share}, {run['wall_seconds']:.0f} s"


def overlap(runs: list[dict]) -> tuple[bool | None, tuple[float, float] | None]:
    """Do all the bands overlap (a common point: max of the lows <= min of the highs)? None when fewer than 2."""
    bands = [r["report"]["ratio_interval"] for r in runs if r["report"] is not None]
    if len(bands) < 2:
        return None, None
    low, high = max(b[0] for b in bands), min(b[1] for b in bands)
    return low <= high, (low, high)


def summarise(results: list[dict], paths: list[str], eps_list: list[str], setting: str) -> str:
    by = {(r["path"], r["eps"]): r for r in results}
    head = "| path | " + " | ".join(f"ε = {e}" for e in eps_list) + " |"
    rule = "| --- |" + " --- |" * len(eps_list)
    lines = [setting, "", "ρ = R̂(θ̂)/R*(0) [80 % band] and the final regime:", "", head, rule]
    lines += [f"| {p} | " + " | ".join(cell(by[p, e]) for e in eps_list) + " |" for p in paths]
    lines += ["", "θ̂'s epoch, the monitor's evaluation as a share of the training time, the run's wall time:", "", head,
              rule]
    lines += [f"| {p} | " + " | ".join(detail(by[p, e]) for e in eps_list) + " |" for p in paths]
    lines.append("")
    for e in eps_list:
        runs = [by[p, e] for p in paths]
        ok, common = overlap(runs)
        failed = [r["path"] for r in runs if r["report"] is None]
        warned = [r["path"] for r in runs if r["recipe_warning"]]
        regimes = sorted({r["report"]["regime"] for r in runs if r["report"] is not None})
        text = ("fewer than 2 reports" if ok is None else
                f"all {len(runs) - len(failed)} bands overlap (common [{common[0]:.3f}, {common[1]:.3f}])" if ok else
                f"the bands do NOT all overlap (max low {common[0]:.3f} > min high {common[1]:.3f})")
        lines.append(f"- ε = {e}: {text}; regimes: {', '.join(regimes) or '-'}; recipe warnings: "
                     f"{', '.join(warned) or 'none'}{'; FAILED: ' + ', '.join(failed) if failed else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", default="4/255,8/255,16/255,32/255", help="comma-separated strengths")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)} (also: "
                   f"{', '.join(EXTRA_PATHS)})")
    p.add_argument("--epochs", type=int, default=None, help="shorten every run (a smoke run; the recipe then differs "
                   "from the benchmark's)")
    p.add_argument("--benchmark", help="a digits-mlp clean benchmark (default: record one into --out)")
    p.add_argument("--out", default="every-path-results", help="folder for the JSON, the tables and the runs")
    args = p.parse_args(argv)
    eps_list = [e.strip() for e in args.eps.split(",") if e.strip()]
    paths = [q.strip() for q in args.paths.split(",") if q.strip()]
    unknown = [q for q in paths if q not in PATHS + EXTRA_PATHS]
    if unknown or not paths or not eps_list:
        p.error(f"--paths takes a subset of {', '.join(PATHS + EXTRA_PATHS)} (got {args.paths!r}); --eps a list (got "
                f"{args.eps!r})")
    out = pathlib.Path(args.out).resolve()
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    benchmark = str(pathlib.Path(args.benchmark).resolve()) if args.benchmark else str(out / "clean.safetensors")
    if not args.benchmark:
        t0 = time.perf_counter()
        subprocess.run([PY, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp", "--out", benchmark,
                        "-q"], check=True, capture_output=True, text=True)
        print(f"benchmark: advhooks benchmark-clean --preset digits-mlp -> {benchmark} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    from advhooks.benchmark import CleanBenchmark

    bench = CleanBenchmark.read(benchmark)
    training = bench.training
    setting = (f"Benchmark {benchmark}: R*(0) = {bench.clean_test_loss:.4f} ± {bench.test_loss_stderr:.4f} (epoch "
               f"{bench.best_epoch}), recipe: {training.get('epochs')} epochs, global batch "
               f"{training.get('batch_size')}, "
               f"{training.get('optimizer')} lr {training.get('lr')} momentum {training.get('momentum')}, "
               f"{training.get('schedule')}; PGD-10 L∞, seed 0.")
    if args.epochs:
        setting += (f"\n\n**Shortened: every run trains {args.epochs} epochs, not the benchmark's "
                    f"{training.get('epochs')}**"
                    f" (total_epochs, the monitor's warm-up {args.epochs // 2 + 5} and the decays differ from the "
                    "benchmark's recipe: every path is expected to warn about its recipe, and the verdicts are not "
                    "the paper's like-for-like comparison).")

    results = []
    for e in eps_list:
        for path in paths:
            run = run_one(path, e, benchmark, runs, args.epochs)
            results.append(run)
            print(f"{path:13s} eps {e:7s} {cell(run)}  [{detail(run)}]", flush=True)
            if run["error"]:
                print(f"    error: {run['error'].splitlines()[-1] if run['error'] else ''} (log: {runs})", flush=True)
    total = time.perf_counter() - started
    table = summarise(results, paths, eps_list, setting)
    table += f"\n\nTotal wall time {total / 60:.1f} min ({os.cpu_count()} CPU cores)."
    print("\n" + table)
    (out / "every_path.md").write_text(table + "\n")
    summary = {}
    for e in eps_list:
        ok, common = overlap([r for r in results if r["eps"] == e])
        summary[e] = {"bands_overlap": ok, "common_band": common,
                      "recipe_warnings": [r["path"] for r in results if r["eps"] == e and r["recipe_warning"]]}
    (out / "every_path.json").write_text(json.dumps({
        "benchmark": benchmark, "clean_test_loss": bench.clean_test_loss, "benchmark_recipe": training,
        "epochs_override": args.epochs, "paths": paths, "eps": eps_list, "total_seconds": round(total, 1),
        "per_eps": summary, "runs": results}, indent=2))
    print(f"wrote {out / 'every_path.json'} and {out / 'every_path.md'}")
    return 0 if all(r["report"] is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
