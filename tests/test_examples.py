"""The examples run end to end (shortened)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_train_digits_example_runs():
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn: pip install 'advhooks[demo]'")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--epochs", "5",
                          "--objective", "trades", "--steps", "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "PGD-20 test loss" in out.stderr and "done in" in out.stderr
