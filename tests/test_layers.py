"""The two layers: the core a user wraps a loop with imports nothing from the experiment kit or the CLI; the
library's size limits (classes, functions, modules); the top-level names import lazily."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "advhooks"


def _module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "integrations"):
        return "advhooks.integrations." + path.stem
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> set[str]:
    """Every advhooks module ``path`` (module ``name``) imports, at any depth of the file (lazy imports too)."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("advhooks")}


def _core_files() -> list[Path]:
    kit, cli = PACKAGE / "kit", PACKAGE / "cli"
    files = [p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(kit) and not p.is_relative_to(cli)]
    return files + sorted((ROOT / "integrations").glob("*.py"))


def test_the_core_and_the_adapters_import_nothing_from_the_kit_or_the_cli():
    files = _core_files()
    assert len(files) > 20 and any(p.name == "monitor.py" or p.parent.name == "monitor" for p in files)
    offending = {}
    for path in files:
        bad = sorted(m for m in _imports(path) if m.startswith(("advhooks.kit", "advhooks.cli")))
        if bad:
            offending[str(path.relative_to(ROOT))] = bad
    assert offending == {}


def test_the_layer_check_sees_a_lazy_import_of_the_kit(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from ..kit.data import load_digits\n")
    assert "advhooks.kit.data" in _imports(module, "advhooks.attacks.lazy")


def test_no_class_of_the_library_is_longer_than_200_lines():
    long = {}
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "integrations").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_no_function_of_the_library_is_more_complex_than_12():
    import subprocess
    import sys

    pytest.importorskip("ruff", reason="the complexity check runs ruff: pip install 'advhooks[dev]'")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "C901", "--output-format", "concise",
                          "advhooks", "integrations"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_public_function_of_the_library_takes_more_than_12_parameters():
    """Settings travel as objects (AttackConfig, Recipe, the estimators' settings, CurveSettings), not as long
    keyword lists; CLI commands (each option is a parameter) and private helpers aside."""
    wide = {}
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "integrations").glob("*.py")]:
        if path.is_relative_to(PACKAGE / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                a = node.args
                names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
                    p.arg for p in (a.vararg, a.kwarg) if p is not None]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > 12:
                    wide[f"{path.relative_to(ROOT)}:{node.name}"] = count
    assert wide == {}


def test_the_top_level_names_import_lazily_and_all_resolve():
    import subprocess
    import sys

    code = ("import sys, advhooks, advhooks.cli; assert 'torch' not in sys.modules, 'import advhooks imported torch'; "
            "names = [getattr(advhooks, n) for n in advhooks.__all__]; assert 'torch' in sys.modules; "
            "assert sorted(advhooks.__all__) == sorted([*advhooks._EXPORTS, '__version__']); print(len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_no_module_of_the_library_is_longer_than_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*PACKAGE.rglob("*.py"), *(ROOT / "integrations").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}, "split it by idea, or say in docs/design.md why it stays whole"
