"""`advhooks demo --quick` end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from advhooks.cli import app


def test_demo_quick(tmp_path):
    pytest.importorskip("sklearn", reason="the demo needs scikit-learn: pip install 'advhooks[demo]'")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "demo.json").read_text())
    assert [round(r["eps"] * 255) for r in data["runs"]] == [4, 32]
    assert all(r["regime"] in ("clean-like", "transition", "eps >> eps*") for r in data["runs"])
    assert data["runs"][1]["final_ratio"] > data["runs"][0]["final_ratio"]
    assert data["eps_star"]["clean_probe_lower_bound"] is not None
    assert (tmp_path / "clean.safetensors").exists()
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert "R*(0) =" in result.output and "regime" in result.output
