"""The package keeps its shape: layers, types, lint, format and size are checked like behaviour.

The module list reads as the life of a job and each module owns one step (STYLE.md); these
checks keep it so, in CI, with the project's own tools: import-linter's contracts
(``.importlinter``: imports point down the layers; fsck never reaches the supervisor), mypy
(``mypy.ini``), ruff (lint and format), and the size limits of the issue that set the shape.
Caches go to a temporary directory: a test never writes into the checkout.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_DIR

pytestmark = pytest.mark.timeout(300)

CODE = ["spoolq", "tests", "bench", "examples"]
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 300


def _tool(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy"), "RUFF_CACHE_DIR": str(tmp_path / "ruff")}
    return subprocess.run(args, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=280)


def test_imports_point_down_the_layers(tmp_path: Path) -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = _tool(str(lint_imports), "--no-cache", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_package_type_checks(tmp_path: Path) -> None:
    done = _tool(sys.executable, "-m", "mypy", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_lint_and_format_are_clean(tmp_path: Path) -> None:
    lint = _tool(sys.executable, "-m", "ruff", "check", *CODE, tmp_path=tmp_path)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = _tool(sys.executable, "-m", "ruff", "format", "--check", *CODE, tmp_path=tmp_path)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_no_module_or_class_outgrows_its_step() -> None:
    too_long = []
    for path in sorted((REPO_DIR / "spoolq").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO_DIR)
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{rel}: class {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
