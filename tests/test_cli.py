"""The advhooks console script."""

from __future__ import annotations

import pathlib
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
    assert "advhooks/attacks/functional.py" in names
    assert not [n for n in names if n.startswith("integrations/")]
