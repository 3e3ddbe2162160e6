"""ε* bands and the fine-tune on two benchmarks, each checked with constants the other chose: the bundled 8×8 digits
and MNIST-1D (generated offline by the ``mnist1d`` package: ``pip install -e '.[bench]'``).

Configurations: the digits MLP at widths 16, 64, 256 on the full and half training set (6), MNIST-1D's MLP at
widths 64, 256 and its 1-D CNN at 16, 32 channels (4). Each over ``--seeds`` seeds: a clean benchmark (the
preset's recipe), the fine-tune estimate and the grid (6 points from scratch, θ̂ by adversarial test loss), each
with its 80 % band. Prints per configuration:

- fine-tune / grid: the ratio of their geometric means over seeds (goal: within ×1.4 / ÷1.9, the paper's
  Table 4 accuracy), and whether the configuration's bands overlap (goal: every configuration);
- seed coverage, for the grid and the fine-tune: how often one seed's band covers another seed's estimate, over
  the ordered pairs of seeds (goal: 70–90 %);
- how many estimates are poorly determined (a band wider than a factor ``POORLY_DETERMINED``);
- the fine-tune's time against a 4-point grid's (the grid's time × 4 / its points; goal <= 10 %).

Then leave one dataset out, both ways: on one dataset the fine-tune's length (the one of ``--lengths`` whose
worst configuration's fine-tune / grid is nearest 1, among those within 10 % of a 4-point grid's time),
``BENCHMARK_SPREAD`` (the seeds' spread of R*(0) / its test-set s.e., measured) and the floors ``RUN_SPREAD``
(the value of ``FLOORS`` whose seed coverage there is nearest 80 %) are chosen, and the figures above are
measured on the other.

    python benchmarks/eps_star_transfer.py [--seeds 3] [--units DIR] [--lengths 5,10,20] [--json out.json]

About 45 minutes on 2 CPU cores; ``--units DIR`` (default ``benchmarks/.units``) keeps every unit and every
fine-tune of another length as a file there, so an interrupted run resumes and a rerun only recombines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
from itertools import permutations
from pathlib import Path

import numpy as np

from advhooks.benchmark import CleanBenchmark, write_json_atomic
from advhooks.kit.data import load_dataset, train_fraction
from advhooks.kit.estimate import EpsStarEstimate, EstimationData, FinetuneSettings, estimate_eps_star, spread
from advhooks.kit.estimate.crossing import POORLY_DETERMINED, fill_crossing
from advhooks.kit.presets import get_preset
from advhooks.kit.study import StudySettings, Unit, run_study

# dataset -> (preset, widths, training fractions)
SETTINGS = {
    "digits": [("digits-mlp", (16, 64, 256), (1.0, 0.5))],
    "mnist1d": [("mnist1d-mlp", (64, 256), (1.0,)), ("mnist1d-cnn", (16, 32), (1.0,))],
}
RATIO_GOAL = (1 / 1.9, 1.4)
TIME_GOAL = 0.10  # the fine-tune's time / a 4-point grid's
FLOORS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)  # RUN_SPREAD values tried


def run_units(dataset: str, seeds: int, folder: Path) -> list[dict]:
    """Every unit of ``dataset`` (run, or read back from ``folder``), with where its clean benchmark is."""
    units = []
    for name, widths, fractions in SETTINGS[dataset]:
        preset = get_preset(name)
        train, test = load_dataset(preset.dataset)
        settings = StudySettings(widths=widths, fractions=fractions, seeds=tuple(range(seeds)), method="finetune",
                                 check_grid="all", recipe=preset.recipe, customary_eps=8 / 255)
        result = run_study(settings, preset.model, train, test, units_dir=folder / name, setting={"preset": name},
                           progress=lambda text: print(text, flush=True) if text.startswith("run-") else None)
        for unit in settings.units():
            stored = result["units"][f"{unit.name}.json"]
            units.append({**stored, "preset": name, "config": f"{name} w{unit.width} f{unit.fraction:g}",
                          "bench_path": folder / name / f"grid-{unit.name.removeprefix('run-')}" / "clean.safetensors",
                          "data": (train_fraction(train, unit.fraction, settings.split_seed), test),
                          "model": (lambda p=preset, w=unit.width: p.model(w))})
    return units


def finetune_of(unit: dict, epochs: int, folder: Path) -> dict:
    """The unit's fine-tune estimate at ``epochs`` (its own at the default length; others run once and kept)."""
    if epochs == FinetuneSettings().epochs:
        return unit["estimate"]
    name = Unit("run", unit["width"], unit["fraction"], unit["seed"]).name
    path = folder / unit["preset"] / f"finetune{epochs}-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    train, test = unit["data"]
    est = estimate_eps_star("finetune", CleanBenchmark.load(unit["bench_path"]), unit["model"],
                            EstimationData(train, test), FinetuneSettings(epochs=epochs, seed=unit["seed"])).to_dict()
    write_json_atomic(path, est)
    return est


@contextlib.contextmanager
def spread_constants(run_spread: dict[str, float], benchmark_spread: float):
    """The run-to-run spread constants of :mod:`advhooks.kit.estimate.spread` set to others for a while."""
    saved = dict(spread.RUN_SPREAD), spread.BENCHMARK_SPREAD
    spread.RUN_SPREAD.update(run_spread)
    spread.BENCHMARK_SPREAD = benchmark_spread
    try:
        yield
    finally:
        spread.RUN_SPREAD.clear()
        spread.RUN_SPREAD.update(saved[0])
        spread.BENCHMARK_SPREAD = saved[1]


def rebanded(stored: dict, bench: CleanBenchmark, seed: int) -> EpsStarEstimate:
    """A stored estimate's value and band recomputed from its points under the spread constants now in force."""
    est = EpsStarEstimate(stored["method"], None, bench.clean_test_loss, stored.get("norm", "linf"),
                          points=stored["points"], level=stored.get("level", 0.8))
    fill_crossing(est, bench, extrapolate=stored["method"] == "finetune", seed=seed)
    est.seconds = stored["seconds"]
    return est


def benchmark_spread_of(units: list[dict]) -> float:
    """The spread of R*(0) between clean runs of one configuration (its seeds; one test set), in units of its
    test-set standard error, pooled over configurations by degrees of freedom: ``BENCHMARK_SPREAD`` measured."""
    variance, stderr2, dof = 0.0, 0.0, 0
    for config in dict.fromkeys(u["config"] for u in units):
        benches = [u["benchmark"] for u in units if u["config"] == config]
        if len(benches) > 1:
            variance += float(np.var([b["clean_test_loss"] for b in benches], ddof=1)) * (len(benches) - 1)
            stderr2 += float(np.mean([b["test_loss_stderr"] ** 2 for b in benches])) * (len(benches) - 1)
            dof += len(benches) - 1
    return math.sqrt(variance / stderr2) if dof else 0.0


def calibrate_floor(units: list[dict], method: str, epochs: int, folder: Path, target: float = 0.8) -> float:
    """The smallest ``RUN_SPREAD[method]`` among ``FLOORS`` whose seed coverage on ``units`` is nearest ``target``
    (the benchmark's spread as in force): a calibration, to be checked on a dataset that did not choose it."""
    key = "coverage_grid" if method == "grid" else "coverage_finetune"

    def coverage(floor: float) -> float:
        with spread_constants({method: floor, **({"records": floor} if method == "grid" else {})},
                              spread.BENCHMARK_SPREAD):
            return summary(per_configuration(units, epochs, folder))[key]

    return min(FLOORS, key=lambda floor: (round(abs(coverage(floor) - target), 6), floor))


def _geomean(values: list[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def _covers(band, value) -> bool:
    return band is not None and value is not None and band[0] <= value <= band[1]


def per_configuration(units: list[dict], epochs: int, folder: Path) -> list[dict]:
    """Per configuration, under the spread constants in force and the fine-tune at ``epochs``."""
    out = []
    for config in dict.fromkeys(u["config"] for u in units):
        mine = [u for u in units if u["config"] == config]
        grids, fts = [], []
        for u in mine:
            bench = CleanBenchmark.load(u["bench_path"])
            grids.append(rebanded(u["grid"], bench, u["seed"]))
            fts.append(rebanded(finetune_of(u, epochs, folder), bench, u["seed"]))
        row = {"config": config, "seeds": len(mine)}
        for name, ests in (("grid", grids), ("finetune", fts)):
            values = [e.value for e in ests if e.value]
            pairs = list(permutations(range(len(ests)), 2))
            row[name] = {"values": [e.value for e in ests], "bands": [e.interval for e in ests],
                         "geomean": _geomean(values),
                         "covered": sum(_covers(ests[i].interval, ests[j].value) for i, j in pairs),
                         "pairs": len(pairs), "poorly_determined": sum(e.poorly_determined for e in ests)}
        g, f = row["grid"]["geomean"], row["finetune"]["geomean"]
        row["ratio"] = f / g if f and g else None
        row["seed_bands_overlap"] = sum(a.interval is not None and b.interval is not None and
                                        a.interval[0] <= b.interval[1] and b.interval[0] <= a.interval[1]
                                        for a, b in zip(grids, fts, strict=True))
        row["band_overlap"] = _config_bands_overlap(grids, fts)
        row["time_vs_4_point_grid"] = [f.seconds / (u["grid"]["seconds"] * 4 / len(u["grid"]["points"]))
                                       for f, u in zip(fts, mine, strict=True)]
        row["rhat_share_of_grid"] = [sum(p.get("rhat_seconds") or 0.0 for p in u["grid"]["points"])
                                     / u["grid"]["seconds"] for u in mine]
        out.append(row)
    return out


def _config_bands_overlap(grids: list[EpsStarEstimate], fts: list[EpsStarEstimate]) -> bool | None:
    """Whether the grid's and the fine-tune's configuration bands (the study's: geometric mean over seeds, log
    scale) overlap."""
    from advhooks.kit.study.summary import _combined_band

    bands = []
    for ests in (grids, fts):
        usable = [(e.value, e.interval) for e in ests if e.value]
        if not usable:
            return None
        bands.append(_combined_band([v for v, _ in usable], [b for _, b in usable], 0.8)[1])
    a, b = bands
    return None if a is None or b is None else a[0] <= b[1] and b[0] <= a[1]


def summary(rows: list[dict]) -> dict:
    """The figures over configurations that the goals are stated on."""
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    return {
        "configurations": len(rows),
        "ratio_range": (min(ratios), max(ratios)) if ratios else None,
        "within_goal": sum(RATIO_GOAL[0] <= x <= RATIO_GOAL[1] for x in ratios),
        "bands_overlap": sum(bool(r["band_overlap"]) for r in rows),
        "coverage_grid": sum(r["grid"]["covered"] for r in rows) / max(1, sum(r["grid"]["pairs"] for r in rows)),
        "coverage_finetune": (sum(r["finetune"]["covered"] for r in rows)
                              / max(1, sum(r["finetune"]["pairs"] for r in rows))),
        "poorly_determined": sum(r["grid"]["poorly_determined"] + r["finetune"]["poorly_determined"] for r in rows),
        "estimates": 2 * sum(r["seeds"] for r in rows),
        "time_vs_4_point_grid_median": statistics.median(t for r in rows for t in r["time_vs_4_point_grid"]),
        "time_vs_4_point_grid_max": max(t for r in rows for t in r["time_vs_4_point_grid"]),
        "rhat_share_of_grid_median": statistics.median(t for r in rows for t in r["rhat_share_of_grid"]),
    }


def table(rows: list[dict]) -> str:
    def x255(v):
        return "-" if v is None else f"{255 * v:.3g}"

    lines = [f"{'configuration':<24} {'grid x255':>9} {'ft x255':>8} {'ft/grid':>7} {'bands':>7} "
             f"{'grid cover':>10} {'ft cover':>8} {'poor g/ft':>9} {'ft time/4pt grid':>16}"]
    for r in rows:
        g, f = r["grid"], r["finetune"]
        lines.append(f"{r['config']:<24} {x255(g['geomean']):>9} {x255(f['geomean']):>8} "
                     f"{'-' if r['ratio'] is None else format(r['ratio'], '.2f'):>7} "
                     f"{'overlap' if r['band_overlap'] else 'apart':>7} {g['covered']:>5} of {g['pairs']:<2} "
                     f"{f['covered']:>3} of {f['pairs']:<2} {g['poorly_determined']:>5}/{f['poorly_determined']:<3} "
                     f"{100 * statistics.median(r['time_vs_4_point_grid']):>15.1f}%")
    s = summary(rows)
    lo, hi = s["ratio_range"] or (math.nan, math.nan)
    lines.append(f"fine-tune / grid {lo:.2f}-{hi:.2f} ({s['within_goal']} of {s['configurations']} within x1.4 / "
                 f"/1.9); bands overlap on {s['bands_overlap']} of {s['configurations']}; seed coverage: grid "
                 f"{100 * s['coverage_grid']:.0f} %, fine-tune {100 * s['coverage_finetune']:.0f} % (goal 70-90); "
                 f"poorly determined {s['poorly_determined']} of {s['estimates']} (factor > {POORLY_DETERMINED:g}); "
                 f"fine-tune time / 4-point grid median {100 * s['time_vs_4_point_grid_median']:.1f} %, "
                 f"max {100 * s['time_vs_4_point_grid_max']:.1f} %; the monitor's fixed-weights R-hat evaluation: "
                 f"{100 * s['rhat_share_of_grid_median']:.2f} % of the grid's time (median)")
    return "\n".join(lines)


def study_table(units: list[dict], preset: str, folder: Path) -> str:
    """``advhooks study``'s table of one preset's units, their estimates recomputed from their points by the code as
    it stands (what the study prints when run afresh)."""
    from dataclasses import asdict

    from advhooks.kit.study import compare, format_study, summarise

    _, widths, fractions = next(s for d in SETTINGS.values() for s in d if s[0] == preset)
    mine = [u for u in units if u["preset"] == preset]
    settings = StudySettings(widths=widths, fractions=fractions, seeds=tuple(sorted({u["seed"] for u in mine})),
                             method="finetune", check_grid="all", customary_eps=8 / 255)
    rebuilt = {}
    for u in mine:
        bench = CleanBenchmark.load(u["bench_path"])
        rebuilt[f"{Unit('run', u['width'], u['fraction'], u['seed']).name}.json"] = {
            **u, **{k: rebanded(u[k], bench, u["seed"]).to_dict() for k in ("estimate", "grid")}}
    rows = summarise(settings, rebuilt)
    return format_study({"settings": {"level": 0.8, "customary_eps": 8 / 255, "method": "finetune",
                                      "seeds": list(settings.seeds)},
                         "rows": [asdict(r) for r in rows], "comparisons": compare(rows)})


def choose_length(units: list[dict], lengths: list[int], folder: Path) -> int:
    """The fine-tune length whose worst configuration's fine-tune / grid (geometric means over seeds) is nearest 1
    (the smallest largest |ln ratio|), among the lengths whose median time is within ``TIME_GOAL`` of a 4-point
    grid's."""
    scores = {}
    for epochs in lengths:
        rows = per_configuration(units, epochs, folder)
        if summary(rows)["time_vs_4_point_grid_median"] <= TIME_GOAL:
            scores[epochs] = max(abs(math.log(r["ratio"])) for r in rows if r["ratio"])
    if not scores:
        raise ValueError(f"no fine-tune length of {lengths} is within {TIME_GOAL:.0%} of a 4-point grid's time")
    return min(scores, key=scores.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--units", default=str(Path(__file__).with_name(".units")))
    parser.add_argument("--lengths", default="5,10,20", help="fine-tune lengths (epochs) to choose among")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    folder = Path(args.units)
    lengths = [int(v) for v in args.lengths.split(",")]
    units = {name: run_units(name, args.seeds, folder) for name in SETTINGS}
    out = {"defaults": {"run_spread": dict(spread.RUN_SPREAD), "benchmark_spread": spread.BENCHMARK_SPREAD,
                        "epochs": FinetuneSettings().epochs}}
    print(f"\n== the library's constants (RUN_SPREAD {spread.RUN_SPREAD}, BENCHMARK_SPREAD "
          f"{spread.BENCHMARK_SPREAD}, fine-tune {FinetuneSettings().epochs} epochs)")
    for name, mine in units.items():
        rows = per_configuration(mine, FinetuneSettings().epochs, folder)
        print(f"-- {name}\n{table(rows)}")
        for preset, _, _ in SETTINGS[name]:
            print(f"\nadvhooks study --preset {preset} ... --seeds {args.seeds} --check-grid-all:\n"
                  f"{study_table(mine, preset, folder)}\n")
        out[name] = {"rows": rows, "summary": summary(rows)}
    for chose, checked in (("digits", "mnist1d"), ("mnist1d", "digits")):
        epochs = choose_length(units[chose], lengths, folder)
        bench_spread = benchmark_spread_of(units[chose])
        with spread_constants({}, bench_spread):
            floors = {m: calibrate_floor(units[chose], m, epochs, folder) for m in ("grid", "finetune")}
        run_spread = {"grid": floors["grid"], "records": floors["grid"], "finetune": floors["finetune"]}
        print(f"\n== chosen on {chose}, measured on {checked}: fine-tune {epochs} epochs; RUN_SPREAD grid "
              f"{run_spread['grid']:.3f}, fine-tune {run_spread['finetune']:.3f}; BENCHMARK_SPREAD {bench_spread:.3f}")
        with spread_constants(run_spread, bench_spread):
            rows = per_configuration(units[checked], epochs, folder)
        print(table(rows))
        out[f"{chose}->{checked}"] = {"epochs": epochs, "run_spread": run_spread, "benchmark_spread": bench_spread,
                                      "rows": rows, "summary": summary(rows)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
