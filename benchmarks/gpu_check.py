"""Everything a GPU session should measure, as one command: speed ratios, memory, host syncs, label checks.

    python benchmarks/gpu_check.py --out gpu-results              # on a CUDA machine, within 8 minutes
    python benchmarks/gpu_check.py --device cpu --smoke --out tmp  # every path on tiny shapes, < 1 minute

Timings are medians of shuffled paired rounds (every row once per round, in a new order; each ratio is
the median [min-max] of the per-round ratios, so a machine's drift cancels out), as in attack_speed.py.
Per configuration (MNIST CNN and PreActResNet18, batch 128 and 512; tiny shapes with ``--smoke``):

- ``pgd/10U``: PGD-10 / (10 × one forward + input-gradient pass)             goal <= 1.1 at b512
- ``ta/pgd``: torchattacks' PGD-10 / advhooks'                                 goal >= 1.0
- ``bf16/pgd``, ``cl/pgd``, ``compile/pgd``: precision="bf16", channels_last, compile=True / eager
- ``graph/pgd`` and ``ta/graph``: the CUDA-graph path / eager, torchattacks / the CUDA-graph path
                                                                              goal >= 2 on the MNIST CNN b128
- ``step/(10U+C)``: adversarial step + backward + SGD / (10 units + a clean step)
- ``monitor``: PhaseMonitor.update per step, in µs
- ``mem``: peak GPU memory of a PGD-10 training step / a clean step (CUDA only)

and two checks: no host synchronisation inside PGD-20 and an AT/TRADES step + backward + monitor update
(``torch.cuda.set_sync_debug_mode("error")`` on CUDA; the dispatcher's host-read count on the CPU), and
an out-of-range label refused with a ValueError, not a device assert. Writes ``gpu_check.json`` and
``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import paired_times, sync

from advhooks import PGD, AdversarialStep, PhaseMonitor
from advhooks.kit.models import MnistCNN, PreActResNet18
from advhooks.perf import count_host_reads

STEPS, EPS = 10, 8 / 255


def _configs(smoke: bool) -> list[dict]:
    if smoke:
        # compile=True only on the small model: compiling PreActResNet18 alone takes a minute on a CPU.
        return [dict(name="mnist-cnn b4", model=lambda: MnistCNN(hidden=16), shape=(4, 1, 28, 28)),
                dict(name="preact18 b2", model=PreActResNet18, shape=(2, 3, 32, 32), compile=False)]
    return [dict(name=f"{name} b{b}", model=model, shape=(b, *chw))
            for name, model, chw in (("mnist-cnn", lambda: MnistCNN(hidden=128), (1, 28, 28)),
                                     ("preact18", PreActResNet18, (3, 32, 32)))
            for b in (128, 512)]


def _ratio(r: torch.Tensor) -> dict[str, float]:
    return {"median": float(r.median()), "min": float(r.min()), "max": float(r.max())}


def _speed(cfg: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    import torchattacks

    torch.manual_seed(0)
    model = cfg["model"]().to(device)
    x = torch.rand(cfg["shape"], device=device)
    y = torch.randint(0, 10, (cfg["shape"][0],), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    attacks = {"pgd": PGD(EPS, steps=STEPS), "bf16": PGD(EPS, steps=STEPS, precision="bf16")}
    if cfg.get("compile", True):
        attacks["compile"] = PGD(EPS, steps=STEPS, compile=True)
    if device.type == "cuda":
        attacks["graph"] = PGD(EPS, steps=STEPS, cuda_graph=True)
    errors = {}
    for name in ("compile", "graph"):  # the optional paths: one failing must not cost the session the rest
        if name in attacks:
            try:
                attacks[name](model, x, y)
            except Exception as err:  # noqa: BLE001 - recorded in the results, and the exit status says so
                errors[name] = f"{type(err).__name__}: {err}"
                del attacks[name]
    model_cl = cfg["model"]().to(device).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ta = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)
    step = AdversarialStep(model, attacks["pgd"])
    monitor = PhaseMonitor(0.5, eps=EPS)

    def unit() -> None:
        model.eval()
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="none").sum(), xi)
        model.train()

    def clean_step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def adv_step() -> None:
        out = step(x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    out = step(x, y)

    def monitor_update() -> None:
        for _ in range(100):
            monitor.update(out)

    fns: dict[str, Callable[[], None]] = {"unit": unit, "clean step": clean_step, "adv step": adv_step,
                                          "ta": lambda: ta(x, y), "cl": lambda: attacks["pgd"](model_cl, x_cl, y),
                                          "monitor x100": monitor_update}
    fns.update({name: (lambda a=a: a(model, x, y)) for name, a in attacks.items()})
    t = paired_times(fns, device, repeats, warmup)
    medians = {k: 1e3 * float(v.median()) for k, v in t.items()}
    row = {"config": cfg["name"], "device": str(device), "median_ms": medians,
           "pgd/10U": _ratio(t["pgd"] / (STEPS * t["unit"])), "ta/pgd": _ratio(t["ta"] / t["pgd"]),
           "bf16/pgd": _ratio(t["bf16"] / t["pgd"]), "cl/pgd": _ratio(t["cl"] / t["pgd"]),
           "step/(10U+C)": _ratio(t["adv step"] / (STEPS * t["unit"] + t["clean step"])),
           "monitor_us": 1e6 * float(t["monitor x100"].median()) / 100, "errors": errors}
    if "compile" in t:
        row["compile/pgd"] = _ratio(t["compile"] / t["pgd"])
    if "graph" in t:
        row["graph/pgd"] = _ratio(t["graph"] / t["pgd"])
        row["ta/graph"] = _ratio(t["ta"] / t["graph"])
        eager = PGD(EPS, steps=STEPS, random_start=False)
        graphed = PGD(EPS, steps=STEPS, random_start=False, cuda_graph=True)
        diff = (graphed(model, x, y) - eager(model, x, y)).abs()
        row["graph_max_abs_diff"] = float(diff.max())
        row["graph_elements_differing"] = int((diff > 1e-6).sum())  # a flipped sign of a near-zero gradient shows
        row["memory_adv_over_clean"] = _peak_ratio(model, x, y, opt, clean_step, adv_step, device)
    return row


def _peak_ratio(model, x, y, opt, clean_step, adv_step, device) -> float:
    peaks = []
    for fn in (clean_step, adv_step):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    return peaks[1] / max(peaks[0], 1)


def _host_syncs(device: torch.device) -> dict:
    """PGD-20 and AT/TRADES steps + backward + monitor.update, with out_of_bounds='clamp': no sync at all."""
    torch.manual_seed(0)
    model = MnistCNN(hidden=16).to(device)
    x, y = torch.rand(8, 1, 28, 28, device=device), torch.randint(0, 10, (8,), device=device)
    monitor = PhaseMonitor(0.5)
    attack = PGD(EPS, steps=20, out_of_bounds="clamp")
    steps = {name: AdversarialStep(model, attack, objective=name) for name in ("at", "trades")}
    attack(model, x, y)  # warm-up: lazy initialisation may sync once
    for s in steps.values():
        s(x, y).loss.backward()

    def run() -> None:
        attack(model, x, y)
        for s in steps.values():
            out = s(x, y)
            out.loss.backward()
            monitor.update(out)

    result = {"device": str(device)}
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            run()
            result["syncs"] = 0
        except RuntimeError as err:
            result["syncs"] = f"a sync: {err}".splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    else:
        with count_host_reads() as reads:
            run()
        result["syncs"] = reads.count
    return result


def _label_check(device: torch.device) -> dict:
    model = MnistCNN(hidden=16).to(device)
    x, y = torch.rand(4, 1, 28, 28, device=device), torch.full((4,), 12, device=device)
    try:
        PGD(EPS, steps=2)(model, x, y)
    except ValueError as err:
        return {"refused": True, "message": str(err)}
    return {"refused": False, "message": "an out-of-range label was not refused"}


def _graph_cache(device: torch.device) -> dict:
    """An ε schedule over 100 steps with cuda_graph=True: the captures stay at most MAX_CAPTURES."""
    from advhooks import linear_warmup
    from advhooks.attacks.graphs import MAX_CAPTURES

    if device.type != "cuda":
        return {"captures": "not run (needs CUDA)", "bound": MAX_CAPTURES}
    model = MnistCNN().to(device)
    x, y = torch.rand(32, 1, 28, 28, device=device), torch.randint(0, 10, (32,), device=device)
    attack = PGD(linear_warmup(EPS, 100), steps=3, cuda_graph=True, out_of_bounds="clamp")
    most = 0
    for step in range(100):
        attack(model, x, y, step=step)
        most = max(most, len(attack._graphs))
    return {"captures": most, "bound": MAX_CAPTURES, "ok": most <= MAX_CAPTURES}


def _markdown(results: dict) -> str:
    keys = ["pgd/10U", "ta/pgd", "bf16/pgd", "cl/pgd", "compile/pgd", "graph/pgd", "ta/graph", "step/(10U+C)"]
    lines = [f"GPU check on {results['device_name']} (torch {results['torch']}), medians [min-max] of paired rounds",
             "", "| config | " + " | ".join(keys) + " | monitor µs/update | memory adv/clean |",
             "|" + " --- |" * (len(keys) + 3)]
    for r in results["speed"]:
        cells = [f"{r[k]['median']:.3f} [{r[k]['min']:.2f}–{r[k]['max']:.2f}]" if k in r else "-" for k in keys]
        mem = f"{r['memory_adv_over_clean']:.2f}" if "memory_adv_over_clean" in r else "-"
        lines.append(f"| {r['config']} | " + " | ".join(cells) + f" | {r['monitor_us']:.1f} | {mem} |")
    lines += ["", f"host syncs in PGD-20 + AT/TRADES steps + monitor: {results['host_syncs']['syncs']}",
              f"out-of-range label refused: {results['label_check']['refused']} ({results['label_check']['message']})"]
    lines += [f"error in {r['config']} {name}: {msg}" for r in results["speed"] for name, msg in r["errors"].items()]
    lines += [f"error in {name}: {msg}" for name, msg in results.get("errors", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 rounds: checks that every path runs")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu (with --smoke for the quick check)")
    repeats, warmup = (2, 1) if args.smoke else (args.repeats, 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"torch": torch.__version__, "device": str(device), "smoke": args.smoke,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
               or platform.machine(), "speed": []}
    # The checks first: they take seconds, and a timeout in the timings must not cost them.
    for name, check in (("host_syncs", _host_syncs), ("label_check", _label_check), ("graph_cache", _graph_cache)):
        try:
            results[name] = check(device)
        except Exception as err:  # noqa: BLE001 - recorded, and the exit status says so
            results[name] = {"syncs": "not run", "refused": False, "message": f"{type(err).__name__}: {err}"}
            results.setdefault("errors", {})[name] = results[name]["message"]
        print(f"{name}: {results[name]}", flush=True)
    for cfg in _configs(args.smoke):
        row = _speed(cfg, device, repeats, warmup)
        results["speed"].append(row)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2))  # what a timeout would leave
        print(f"{row['config']}: pgd/10U {row['pgd/10U']['median']:.3f}, ta/pgd {row['ta/pgd']['median']:.3f}",
              flush=True)
    results["seconds"] = time.perf_counter() - started
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    (out / "gpu_check.md").write_text(_markdown(results))
    print(_markdown(results))
    print(f"{results['seconds']:.0f} s; wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = bool(results.get("errors")) or any(r["errors"] for r in results["speed"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
