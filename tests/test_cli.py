"""The advhooks console script."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from typer.testing import CliRunner

import advhooks
from advhooks.cli import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"advhooks {advhooks.__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_info_lists_versions():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0 and "torch" in result.output


def test_console_script_is_installed():
    exe = shutil.which("advhooks", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("advhooks")
    assert exe, "the advhooks console script is not on PATH; install the package (pip install -e '.[all]')"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"advhooks {advhooks.__version__}"


def test_wheel_installs_integrations_as_a_subpackage(tmp_path):
    # Build the real wheel and read its file list: integrations/ must land in advhooks/integrations/,
    # never as a top-level package named "integrations".
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("advhooks-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "advhooks/integrations/__init__.py" in names
    assert not [n for n in names if n.startswith(("integrations/", "tests/", "examples/"))]
    # Every module of every subpackage: a hand-written package list once left advhooks.kit.theory out.
    expected = {p.relative_to(root).as_posix() for p in (root / "advhooks").rglob("*.py")}
    expected |= {"advhooks/integrations/" + p.name for p in (root / "integrations").glob("*.py")}
    assert "advhooks/kit/theory/linear.py" in expected
    assert not sorted(expected - set(names)), f"the wheel lacks {sorted(expected - set(names))}"


def test_preset_names_in_the_help_are_the_presets():
    from advhooks.cli import PRESET_NAMES
    from advhooks.kit.presets import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
    help_text = CliRunner().invoke(app, ["benchmark-clean", "--help"], terminal_width=200).output
    unwrapped = re.sub(r"-\s+", "-", " ".join(help_text.split()))  # the help wraps long lines after a hyphen
    assert all(name in unwrapped for name in PRESETS)
    assert "<bool>" not in help_text and "…" not in help_text


def test_a_bug_inside_the_library_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "buggy.py").write_text(
        "import torch\n"
        "def model():\n    return torch.nn.Linear(64, 10)\n"
        "def data():\n    raise TypeError('a bug, not bad input')\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["benchmark-clean", "--model", "buggy:model", "--data", "buggy:data"])
    assert result.exit_code == 1 and isinstance(result.exception, TypeError)


def test_outputs_are_created_in_missing_folders_before_the_work(tmp_path):
    result = CliRunner().invoke(app, ["simulate-linear", "--n", "20", "--d", "2", "--ratios", "1", "--repeats", "5",
                                      "--steps", "20", "--json", str(tmp_path / "new" / "sub" / "s.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "sub" / "s.json").exists()
