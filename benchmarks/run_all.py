"""Run every benchmark side by side in one go; write one JSON and one markdown table.

    python benchmarks/run_all.py --out bench-results          # about 30 minutes on 2 CPU cores
    python benchmarks/run_all.py --out bench-results --quick  # fewer repeats

Each benchmark runs in its own process (so process-wide switches such as retain_host_memory do not
leak between them); its printed table goes into the markdown file verbatim, its figures into the JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = ["--quick"] if args.quick else []
    jobs = [
        ("attack speed", "attack_speed.py", quick),
        ("host memory", "host_memory.py", ["--repeats", "3", "--rounds", "1"] if args.quick else []),
        ("fused paths", "fused_path.py", quick),
        ("monitor overhead", "monitor_overhead.py", ["--repeats", "1"] if args.quick else []),
        ("AWP cost", "awp_cost.py", ["--repeats", "1"] if args.quick else []),
        ("what helps when eps >> eps*", "remedies.py", ["--seeds", "1", "--epochs", "10"] if args.quick else []),
        ("time to robustness", "time_to_robustness.py", ["--seeds", "1" if args.quick else "3"]),
        ("eps* estimation", "eps_star_transfer.py", ["--seeds", "2", "--lengths", "10"] if args.quick else []),
    ]
    report = {"torch": torch.__version__, "machine": platform.machine(), "cuda": torch.cuda.is_available(),
              "results": {}}
    lines = [f"# advhooks benchmarks\n\ntorch {torch.__version__}, {platform.machine()}, "
             f"CUDA {'yes' if torch.cuda.is_available() else 'no'}\n"]
    for title, script, extra in jobs:
        json_path = out / f"{script.removesuffix('.py')}.json"
        cmd = [sys.executable, str(HERE / script), *extra]
        if script != "host_memory.py":
            cmd += ["--json", str(json_path)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(f"{title}: {'ok' if proc.returncode == 0 else 'FAILED'} in {seconds:.0f} s", flush=True)
        entry = {"seconds": seconds, "returncode": proc.returncode, "stdout": proc.stdout}
        if json_path.exists():
            entry["figures"] = json.loads(json_path.read_text())
        report["results"][title] = entry
        lines.append(f"## {title}\n\n```\n{proc.stdout.strip() or proc.stderr.strip()[-2000:]}\n```\n")
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text("\n".join(lines))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
