"""`advhooks demo` end to end: its JSON contract, and that its answers agree with each other."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from advhooks.cli import app
from advhooks.monitor import REGIMES


def _run_demo(tmp_path, *args):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    return result, json.loads((tmp_path / "demo.json").read_text())


def _assert_contract(data):
    for name in ("grid", "finetune", "clean_probe"):
        est = data["eps_star"][name]
        assert {"value", "interval", "level"} <= est.keys() and est["level"] == 0.8
        if est["value"] is not None and est["interval"] is not None:
            assert est["interval"][0] <= est["value"] <= est["interval"][1], name
    for run in data["runs"]:
        assert {"eps", "ratio", "ratio_interval", "regime", "early_stopped_epoch"} <= run.keys()
        assert run["regime"] in REGIMES and run["ratio_interval"][0] <= run["ratio"] <= run["ratio_interval"][1]


def _assert_self_consistent(data):
    band = data["eps_star"]["grid"]["interval"]
    assert band is not None, data["eps_star"]["grid"]["warnings"]
    for run in data["runs"]:
        if run["eps"] > band[1]:
            assert run["regime"] != "clean-like", run
        if run["eps"] < band[0]:
            assert run["regime"] not in ("above eps*", "eps >> eps*"), run


def test_demo_quick(tmp_path):
    result, data = _run_demo(tmp_path, "--quick")
    assert [round(r["eps"] * 255) for r in data["runs"]] == [4, 32]
    _assert_contract(data)
    assert data["runs"][1]["ratio"] > data["runs"][0]["ratio"]
    assert data["eps_star"]["clean_probe"]["value"] is not None
    assert (tmp_path / "clean.safetensors").exists()
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert "R*(0) =" in result.output and "regime" in result.output and "80% bands" in result.output


def test_the_full_demo_agrees_with_itself(tmp_path):
    _, data = _run_demo(tmp_path)
    _assert_contract(data)
    _assert_self_consistent(data)
