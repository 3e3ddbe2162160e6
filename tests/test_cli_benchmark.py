"""`advhooks benchmark-clean` and `advhooks show`, through typer's runner and as a real subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from advhooks.benchmark import CleanBenchmark
from advhooks.cli import app
from advhooks.kit.presets import get_preset

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_benchmark_clean_preset_digits_mlp_and_show(tmp_path):
    out = tmp_path / "clean.safetensors"
    result = _run("benchmark-clean", "--preset", "digits-mlp", "--epochs", "4", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "R*(0) clean test loss" in result.output and f"wrote {out}" in result.output
    bench = CleanBenchmark.load(out)
    assert bench.training["preset"] == "digits-mlp" and 1 <= bench.best_epoch <= 4
    shown = _run("show", str(out))
    assert shown.exit_code == 0 and f"{bench.clean_test_loss:.4f}" in shown.output
    as_json = _run("show", str(out), "--json")
    assert as_json.exit_code == 0 and '"clean_test_loss"' in as_json.output


def test_benchmark_clean_as_a_subprocess(tmp_path):
    exe = shutil.which("advhooks", path=str(Path(sys.executable).parent)) or shutil.which("advhooks")
    assert exe, "the advhooks console script is not installed"
    out = tmp_path / "clean.safetensors"
    proc = subprocess.run([exe, "benchmark-clean", "--preset", "digits-mlp", "--epochs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   2" in proc.stderr  # progress lines go to stderr
    assert CleanBenchmark.read(out).best_epoch in (1, 2)


def test_measure_a_checkpoint(tmp_path):
    model = get_preset("digits-mlp").model()
    torch.save(model.state_dict(), tmp_path / "clean.pt")
    out = tmp_path / "b.safetensors"
    result = _run("benchmark-clean", "--preset", "digits-mlp", "--checkpoint", str(tmp_path / "clean.pt"),
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    bench = CleanBenchmark.load(out)
    assert bench.best_epoch is None and bench.training["checkpoint"].endswith("clean.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(bench.state_dict[k], v)
    shown = _run("show", str(out)).output
    assert "None" not in shown and "a given model, measured as it is" in shown


def test_measure_a_checkpoint_saved_from_data_parallel(tmp_path):
    model = get_preset("digits-mlp").model()
    torch.save(torch.nn.DataParallel(model).state_dict(), tmp_path / "dp.pt")  # keys "module.*"
    out = tmp_path / "b.safetensors"
    result = _run("benchmark-clean", "--preset", "digits-mlp", "--checkpoint", str(tmp_path / "dp.pt"),
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    bench = CleanBenchmark.load(out)
    assert all(torch.equal(bench.state_dict[k], v) for k, v in model.state_dict().items())


def test_normalised_data_with_normalize_is_attacked_in_pixel_units(tmp_path, monkeypatch):
    (tmp_path / "normmod.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def model():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))\n"
        "def data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.rand(96, 3, 2, 2, generator=g); y = (x.flatten(1).sum(1) > 6).long()\n"
        "    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)\n"
        "    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)\n"
        "    x = (x - mean) / std  # normalised outside the model, as many CIFAR scripts do\n"
        "    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["--model", "normmod:model", "--data", "normmod:data"]
    result = _run("benchmark-clean", *common, "--epochs", "2", "--out", "b.safetensors", "-q",
                  "--normalize", "0.5,0.4,0.3,0.2,0.25,0.3")
    assert result.exit_code == 0, result.output
    recorded = CleanBenchmark.read(tmp_path / "b.safetensors").training["normalization"]
    assert recorded == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    probe = ["estimate-eps-star", "--benchmark", "b.safetensors", *common, "--method", "clean-probe",
             "--eps", "1/255,2/255", "--steps", "2", "-q"]
    assert _run(*probe).exit_code == 0  # the benchmark's normalisation is used: inputs are inside the bounds
    refused = _run(*probe, "--normalize", "0,0,0,1,1,1")  # saying the data is in pixel units: out of [0, 1]
    assert refused.exit_code == 2 and "outside the attack's bounds" in refused.output


def test_user_model_and_data_factories(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def model():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
        "def data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.rand(64, 1, 2, 2, generator=g); y = (x.flatten(1).sum(1) > 2).long()\n"
        "    return TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = _run("benchmark-clean", "--model", "mymod:model", "--data", "mymod:data", "--epochs", "2",
                  "--out", "b.safetensors", "-q")
    assert result.exit_code == 0, result.output
    assert CleanBenchmark.read(tmp_path / "b.safetensors").n_test == 16


def test_the_cli_records_the_same_benchmark_as_the_library(tmp_path):
    # The CLI's progress bar once drew the batch order a second time: same seed, another R*(0).
    from advhooks.kit.data import load_digits
    from advhooks.kit.training import record_clean_benchmark

    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    torch.manual_seed(0)
    direct = record_clean_benchmark(preset.model(), train, test, recipe=preset.recipe.with_given(epochs=3), seed=0)
    out = tmp_path / "b.safetensors"
    assert _run("benchmark-clean", "--preset", "digits-mlp", "--epochs", "3", "--out", str(out), "-q").exit_code == 0
    assert CleanBenchmark.read(out).clean_test_loss == direct.clean_test_loss
