"""The fine-tune ε* against the grid on the digits (L∞), per configuration and over seeds, in one reproducible run.

The study of the README (``advhooks study --preset digits-mlp --widths 16,64,256 --train-fraction 1,0.5
--seeds 3 --check-grid-all``): per width × training fraction × seed a clean benchmark (60 epochs), the fine-tune
estimate with its defaults (the clean probe's bound, then the adaptive ladder) and the grid (training from scratch
at the probe's bound × 1/2 … 4, 60 epochs, θ̂ by adversarial test loss, R̂ at θ̂'s weights), each with its 80 %
band. Prints the study's table and what its bands resolve, then per configuration:

- fine-tune / grid: the ratio of their means over the seeds (goal: median 0.85–1.15, none outside 0.75–1.33);
- whether the configuration's bands overlap, and on how many seeds the seeds' own bands do (goal: every one);
- how many seeds' fine-tunes extrapolated (goal: none);
- the fine-tune's time against a 4-point grid's (the grid's time × 4 / its points; goal <= 10 % on the
  demo's setting, width 64 on the full data);
- the cost of the monitor's fixed-weights R̂ evaluation in % of the grid's time (goal <= 5 %).

    python benchmarks/eps_star_digits.py [--seeds 3] [--widths 16,64,256] [--fractions 1,0.5] [--units DIR]
        [--json out.json]

About 20 minutes on 2 CPU cores; ``--units DIR`` keeps each (width, fraction, seed) as a file there, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics

from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.kit.study import StudySettings, Unit, format_study, run_study

DEMO_SETTING = (64, 1.0)  # digits-mlp's default width on the full training set


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]" if values else "-"


def _overlap(a, b) -> bool | None:
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def per_configuration(result: dict) -> list[dict]:
    """Per configuration: the fine-tune / grid ratio, band overlaps, extrapolations and time ratios."""
    out = []
    for row in result["rows"]:
        units = [result["units"][f"{Unit('run', row['width'], row['fraction'], s).name}.json"] for s in row["seeds"]]
        pairs = [(u["estimate"], u["grid"]) for u in units]
        four_point = [g["seconds"] * 4 / len([p for p in g["points"] if p.get("loss") is not None])
                      for _, g in pairs]
        out.append({
            "width": row["width"], "fraction": row["fraction"], "finetune": row["eps_star"], "grid": row["grid"],
            "ratio": None if not (row["eps_star"] and row["grid"]) else row["eps_star"] / row["grid"],
            "bands_overlap": _overlap(row["interval"], row["grid_interval"]),
            "seeds_overlapping": sum(bool(_overlap(f["interval"], g["interval"])) for f, g in pairs),
            "seeds": len(pairs),
            "extrapolated": sum(bool(f.get("extrapolated")) for f, _ in pairs),
            "points": [len({p["eps"] for p in f["points"]}) for f, _ in pairs],
            "time_vs_4_point_grid": [f["seconds"] / t for (f, _), t in zip(pairs, four_point, strict=True)],
            "rhat_share_of_grid": [sum(p.get("rhat_seconds") or 0.0 for p in g["points"]) / g["seconds"]
                                   for _, g in pairs],
        })
    return out


def report(configs: list[dict]) -> str:
    lines = [f"{'width':>5} {'fraction':>8} {'finetune':>9} {'grid':>6} {'ft/grid':>8} {'bands':>8} "
             f"{'seeds overlap':>13} {'extrapolated':>12} {'points':>8} {'time / 4-pt grid':>17}"]
    for c in configs:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}"
        lines.append(f"{c['width']:>5} {c['fraction']:>8g} {255 * (c['finetune'] or 0):>9.2f} "
                     f"{255 * (c['grid'] or 0):>6.2f} {ratio:>8} "
                     f"{'overlap' if c['bands_overlap'] else 'apart':>8} {c['seeds_overlapping']:>9} of {c['seeds']} "
                     f"{c['extrapolated']:>8} of {c['seeds']} {','.join(map(str, c['points'])):>8} "
                     f"{100 * statistics.median(c['time_vs_4_point_grid']):>16.1f}%")
    ratios = [c["ratio"] for c in configs if c["ratio"] is not None]
    demo = [c for c in configs if (c["width"], c["fraction"]) == DEMO_SETTING]
    lines += [
        f"fine-tune / grid over the configurations: median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f} (goal: median 0.85-1.15, all within 0.75-1.33)",
        f"bands overlap on {sum(bool(c['bands_overlap']) for c in configs)} of {len(configs)} configurations, "
        f"{sum(c['seeds_overlapping'] for c in configs)} of {sum(c['seeds'] for c in configs)} seeds; "
        f"extrapolations: {sum(c['extrapolated'] for c in configs)}",
        "fine-tune time / a 4-point grid's, every seed: "
        f"{_spread([100 * t for c in configs for t in c['time_vs_4_point_grid']])} %"
        + (f"; on the demo's setting: {_spread([100 * t for t in demo[0]['time_vs_4_point_grid']])} % (goal <= 10)"
           if demo else ""),
        "fixed-weights R-hat evaluation, % of the grid's time: "
        f"{_spread([100 * s for c in configs for s in c['rhat_share_of_grid']])} (goal <= 5)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (0..N-1)")
    parser.add_argument("--widths", default="16,64,256")
    parser.add_argument("--fractions", default="1,0.5")
    parser.add_argument("--units", help="keep each unit as a JSON file here (resume)")
    parser.add_argument("--json", help="write the study and the per-configuration figures here")
    args = parser.parse_args()
    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    settings = StudySettings(widths=tuple(int(w) for w in args.widths.split(",")),
                             fractions=tuple(float(f) for f in args.fractions.split(",")),
                             seeds=tuple(range(args.seeds)), method="finetune", check_grid="all",
                             recipe=preset.recipe, customary_eps=8 / 255)
    result = run_study(settings, preset.model, train, test, units_dir=args.units, setting={"preset": preset.name},
                       progress=lambda text: print(text, flush=True) if text.startswith("run-") else None)
    print(format_study(result))
    configs = per_configuration(result)
    print()
    print(report(configs))
    print(f"whole run: {result['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"study": result, "configurations": configs}, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
