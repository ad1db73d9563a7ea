"""The learner's starter kit: scaffolds generated from the solutions, and the scratch checkpoint.

The checkpoint runs here nest a pytest session per notebook; they inherit this session's
``INGEST_*`` service URLs, so they reuse its services instead of starting their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.checkpoint import checkpoint_tests, todo_markers

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "starter-kit"
SCAFFOLDS = KIT / "01-retry-client"
SOLUTIONS = ROOT / "notebooks" / "01-retry-client"
# Three exercises of different kinds: pure strategies, Redis + a subprocess test, an I/O loop.
REPRESENTATIVE = ["02-backoff", "03-token-bucket", "05a-pagination"]
EXPORT_DIRECTIVE = re.compile(r"^\s*#\|\s*export[is]?\b", re.MULTILINE)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _modules(notebook: Path) -> list[str]:
    text = "\n".join(_code_cells(notebook))
    return [f"ingest.{m}" for m in re.findall(r"#\|\s*default_exp\s+([\w.]+)", text)]


def _reports(stdout: str) -> dict[str, str]:
    """The CLI's output, one block per notebook, keyed by the notebook's name."""
    blocks: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", stdout.strip()):
        blocks[Path(block.split(" ", 1)[0]).stem] = block
    return blocks


def _counts(block: str) -> tuple[int, int]:
    match = re.search(r": (\d+) passed, (\d+) failed", block)
    assert match is not None, block
    return int(match.group(1)), int(match.group(2))


def _imported_from(block: str) -> Path:
    match = re.search(r"ingest imported from the scratch copy: (\S+)", block)
    assert match is not None, block
    return Path(match.group(1))


def test_scaffolds_are_a_fresh_generation(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        proc = _run(str(KIT / "make_scaffolds.py"), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr  # e.g. a new helper without docstring or hint
    solutions = sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    assert sorted(p.name for p in first.glob("*.ipynb")) == solutions
    for name in solutions:
        fresh = (first / name).read_bytes()
        assert fresh == (second / name).read_bytes(), f"{name}: two runs differ"
        assert (SCAFFOLDS / name).read_bytes() == fresh, (
            f"starter-kit/01-retry-client/{name} is stale: run starter-kit/make_scaffolds.py"
        )
    assert sorted(p.name for p in SCAFFOLDS.glob("*.ipynb")) == solutions


@pytest.mark.parametrize("name", sorted(p.stem for p in SOLUTIONS.glob("*.ipynb")))
def test_scaffold_keeps_the_solution_checkpoint_tests_and_has_todos(name: str) -> None:
    scaffold = SCAFFOLDS / f"{name}.ipynb"
    # One source of truth: the scaffold's checkpoint runs exactly the solution's tests.
    assert checkpoint_tests(scaffold) == checkpoint_tests(SOLUTIONS / f"{name}.ipynb")
    assert "run_checkpoint(" not in "\n".join(_code_cells(scaffold))  # it would export into src
    exports = [cell for cell in _code_cells(scaffold) if EXPORT_DIRECTIVE.search(cell)]
    todos = [line for cell in exports for line in cell.splitlines() if "TODO(01-" in line]
    if name == "00-local-stack":  # nothing to implement: the local stack is given
        assert todos == []
    else:
        assert todos, f"{name}: no TODO in an export cell"
        assert len(todo_markers(scaffold)) == len(todos)
    code = [
        c
        for c in json.loads(scaffold.read_text(encoding="utf-8"))["cells"]
        if c["cell_type"] == "code"
    ]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_every_scaffold_exports_and_imports(tmp_path: Path) -> None:
    # A scratch copy of the project, as the checkpoint makes, with every scaffold exported into it:
    # each module of the chain imports the scaffolds of the modules before it.
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src" / "ingest", copy / "src" / "ingest", ignore=ignore)
    notebooks = sorted(SCAFFOLDS.glob("*.ipynb"))
    exporter = (
        "import sys\nfrom nbdev.export import nb_export\n"
        "for nb in sys.argv[1:]:\n    nb_export(nb, lib_path='src/ingest')\n"
    )
    proc = _run("-c", exporter, *map(str, notebooks), cwd=copy)
    assert proc.returncode == 0, proc.stderr
    modules = [m for nb in notebooks for m in _modules(nb)]
    assert len(modules) == len(notebooks)
    importer = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(importlib.import_module(name).__file__)\n"
        "import httpx\n"
        "from ingest.http.retry import is_replayable\n"
        "try:\n"
        "    is_replayable(httpx.Request('GET', 'http://example.test'))\n"
        "except NotImplementedError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", importer, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[: len(modules)] == [
        str(copy / "src" / (m.replace(".", "/") + ".py")) for m in modules
    ]
    # What was imported is the scaffold, not the solution.
    assert lines[-1].startswith("TODO(01-02): is_replayable")


def test_checkpoint_fails_on_untouched_scaffolds() -> None:
    exported = {
        name: ROOT / "src" / (m.replace(".", "/") + ".py")
        for name in REPRESENTATIVE
        for m in _modules(SCAFFOLDS / f"{name}.ipynb")
    }
    notebooks = [f"starter-kit/01-retry-client/{name}.ipynb" for name in REPRESENTATIVE]
    proc = _run("-m", "ingest.checkpoint", *notebooks)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = _reports(proc.stdout)
    assert sorted(reports) == sorted(REPRESENTATIVE), proc.stdout
    for name, block in reports.items():
        _, failed = _counts(block)
        assert failed > 0, block
        assert f"TODO(01-{name.split('-')[0]})" in block  # the TODOs left are listed
        assert "NotImplementedError" in block  # and the failures say why
        imported = _imported_from(block)
        assert "ingest-checkpoint-" in str(imported) and not imported.is_relative_to(ROOT)
        # The package was not touched: the scaffold went to the scratch copy only.
        assert "TODO(01-" not in exported[name].read_text(encoding="utf-8")


def test_checkpoint_passes_on_the_solutions_in_scratch() -> None:
    notebooks = [f"notebooks/01-retry-client/{name}.ipynb" for name in REPRESENTATIVE]
    proc = _run("-m", "ingest.checkpoint", *notebooks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = _reports(proc.stdout)
    assert sorted(reports) == sorted(REPRESENTATIVE), proc.stdout
    for block in reports.values():
        passed, failed = _counts(block)
        assert passed > 0 and failed == 0, block
        assert "no TODO markers left" in block
        imported = _imported_from(block)
        assert "ingest-checkpoint-" in str(imported) and not imported.is_relative_to(ROOT)
