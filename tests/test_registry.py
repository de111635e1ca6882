"""Task discovery: entry points (module or task_imports function), includes, and load errors."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_spoolq, subprocess_env

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
    assert out["errors"] == [{"source": "entry point broken (ckanext_demo.missing:task_imports)",
                              "error": "ModuleNotFoundError: No module named 'ckanext_demo.missing'"}]  # fmt: skip
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
    proc = run_spoolq("tasks", "-I", "exploding_tasks", cwd=tmp_path,
                      env=subprocess_env(PYTHONPATH=f"{tmp_path}:{subprocess_env()['PYTHONPATH']}"))  # fmt: skip
    assert proc.returncode == 1
    assert "include exploding_tasks: SystemExit: bad config" in proc.stderr
