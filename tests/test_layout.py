"""The package's shape: no import cycles, and an app module that does no work when imported."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cycle_finder_finds_a_cycle_hidden_by_a_lazy_import(tmp_path, monkeypatch):
    checker = load_script("import_cycles")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.b\n")
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    monkeypatch.setattr(checker, "PACKAGE", "pkg")
    assert checker.cycles(checker.graph()) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles_among_the_packages_modules():
    checker = load_script("import_cycles")
    assert checker.cycles(checker.graph()) == []


def test_importing_the_app_loads_no_model_and_asks_no_hub():
    refuse = ("import selfspec.models.loading as loading, selfspec.profiles.hub as hub\n"
              "def refuse(*args, **kwargs):\n    raise SystemExit('work at import: ' + repr(args))\n"
              "loading.load_model = hub.load_profile = refuse\n"
              "import app\n"
              "assert app.demo is not None\n")
    result = subprocess.run([sys.executable, "-c", refuse], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
