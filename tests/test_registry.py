"""Task discovery: entry points (module or task_imports function), includes, and load errors."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_spoolq, subprocess_env

from spoolq.errors import TaskNotFound
from spoolq.registry import discover


def make_extension(site: Path) -> None:
    """A tiny installed extension, as a dist-info on sys.path, with a good and a broken entry point."""
    pkg = site / "ckanext_demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text("def task_imports():\n    return ['ckanext_demo.tasks']\n")
    (pkg / "tasks.py").write_text(
        "import spoolq\n\n@spoolq.task(name='NAME.echofunction')\ndef echo(message):\n    print(message)\n"
    )
    (pkg / "more.py").write_text("import spoolq\n\n@spoolq.task(name='demo.more')\ndef more():\n    return 1\n")
    info = site / "ckanext_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ckanext-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[spoolq.tasks]\n"
        "echo = ckanext_demo.plugin:task_imports\n"
        "more = ckanext_demo.more\n"
        "broken = ckanext_demo.missing:task_imports\n"
    )


def test_spoolq_tasks_lists_entry_point_tasks_and_reports_the_broken_one(tmp_path: Path) -> None:
    # Given an installed extension with two good entry points and one whose module is missing
    site = tmp_path / "site"
    make_extension(site)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    # When `spoolq tasks --json` runs (a real process: the sys.path change must not leak)
    proc = run_spoolq("--spool", str(tmp_path / "spool"), "tasks", "--json", cwd=tmp_path, env=env)
    # Then the good tasks are listed with their entry point, and the broken one named with its error
    out = json.loads(proc.stdout)
    origins = {t["name"]: t["origin"] for t in out["tasks"]}
    assert "entry point echo (ckanext_demo.plugin:task_imports)" in origins["NAME.echofunction"]
    assert "entry point more (ckanext_demo.more)" in origins["demo.more"]
    assert out["errors"] == [
        {
            "source": "entry point broken (ckanext_demo.missing:task_imports)",
            "error": "ModuleNotFoundError: No module named 'ckanext_demo.missing'",
        }
    ]
    assert proc.returncode == 1  # a task source failed to load
    assert not (tmp_path / "spool").exists()  # listing tasks creates no spool

    # And the table form says the same for people
    proc = run_spoolq("--spool", str(tmp_path / "spool"), "tasks", cwd=tmp_path, env=env)
    assert "NAME.echofunction" in proc.stdout and "entry point echo" in proc.stdout
    assert "cannot load entry point broken" in proc.stderr and "ModuleNotFoundError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_includes_are_imported_and_failures_recorded() -> None:
    registry = discover(["tasks", "no_such_module_xyz"], use_entry_points=False)
    assert registry.get("tests.echo")("hi") == "hi"
    assert registry.origin("tests.echo") == "include tasks"
    assert [(e.source, e.error) for e in registry.errors] == [
        ("include no_such_module_xyz", "ModuleNotFoundError: No module named 'no_such_module_xyz'")
    ]
    assert "tasks" in registry.modules


def test_a_module_that_raises_on_import_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "exploding_tasks.py").write_text("raise SystemExit('bad config')\n")
    proc = run_spoolq(
        "tasks",
        "-I",
        "exploding_tasks",
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=f"{tmp_path}:{subprocess_env()['PYTHONPATH']}"),
    )
    assert proc.returncode == 1
    assert "include exploding_tasks: SystemExit: bad config" in proc.stderr


def test_a_registry_knows_only_the_tasks_of_the_modules_discovered_for_it() -> None:
    # Given a module of tasks this process has imported for some other reason
    import tasks  # noqa: F401 - declares tests.echo, tests.add, ...

    # When a registry discovers another module
    registry = discover(["worker_tasks"], use_entry_points=False)
    # Then it finds that module's tasks and nothing else: no process-wide table to fall back on
    assert "wt.record" in registry
    assert "tests.echo" not in registry and not [n for n in registry.names() if n.startswith("tests.")]
    with pytest.raises(TaskNotFound):
        registry.get("tests.echo")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package, not yet imported, whose ``__init__`` imports the module declaring its task."""
    name = f"pkg_{uuid.uuid4().hex[:12]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("from . import jobs\n")
    (tmp_path / name / "jobs.py").write_text(
        "import spoolq\n\n@spoolq.task(name='pkg.hello')\ndef hello():\n    return 'hi'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[m]


def test_a_package_brings_the_tasks_of_the_modules_it_imports(package: str, tmp_path: Path) -> None:
    # When a package is discovered whose task is declared in a module its __init__ imports
    registry = discover([package], use_entry_points=False)
    # Then the task is found, and both modules are listed for the pool's children to import
    assert registry.get("pkg.hello")() == "hi"
    assert registry.origin("pkg.hello") == f"include {package}"
    assert registry.modules == [package, f"{package}.jobs"]
    # And a fresh process importing exactly those modules (as a pool child does) finds the same tasks
    code = "import sys, spoolq.registry as r; print(r.discover(sys.argv[1:], use_entry_points=False).names())"
    env = subprocess_env(PYTHONPATH=f"{tmp_path}:{subprocess_env()['PYTHONPATH']}")
    child = subprocess.run(
        [sys.executable, "-c", code, *registry.modules], env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "['pkg.hello']"
