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
MODULES = ["01-retry-client", "02-webhooks-s3"]
SOLUTIONS = ROOT / "notebooks"
# "<module>/<notebook>" of every solution the kit has a scaffold for.
NOTEBOOKS = sorted(
    f"{module}/{path.stem}" for module in MODULES for path in (SOLUTIONS / module).glob("*.ipynb")
)
# Nothing to implement: the local stack is given; the receiver is hand-written wiring.
NOTHING_TO_DO = {"01-retry-client/00-local-stack", "02-webhooks-s3/04-receiver"}
# Exercises of different kinds: pure strategies, Redis + a subprocess test, an I/O loop, and
# module 02's signature schemes (pure, with the vendors' own SDKs in its tests).
REPRESENTATIVE = [
    "01-retry-client/02-backoff",
    "01-retry-client/03-token-bucket",
    "01-retry-client/05a-pagination",
    "02-webhooks-s3/01-signatures",
]
EXPORT_DIRECTIVE = re.compile(r"^\s*#\|\s*export[is]?\b", re.MULTILINE)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _tag(name: str) -> str:
    """``01-02`` for ``01-retry-client/02-backoff``: the TODO markers' tag."""
    module, notebook = name.split("/")
    return f"{module.split('-')[0]}-{notebook.split('-')[0]}"


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

    def scaffolds(kit: Path) -> list[str]:
        return sorted(f"{m}/{p.stem}" for m in MODULES for p in (kit / m).glob("*.ipynb"))

    assert scaffolds(first) == NOTEBOOKS
    for name in NOTEBOOKS:
        fresh = (first / f"{name}.ipynb").read_bytes()
        assert fresh == (second / f"{name}.ipynb").read_bytes(), f"{name}: two runs differ"
        assert (KIT / f"{name}.ipynb").read_bytes() == fresh, (
            f"starter-kit/{name}.ipynb is stale: run starter-kit/make_scaffolds.py"
        )
    assert scaffolds(KIT) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_scaffold_keeps_the_solution_checkpoint_tests_and_has_todos(name: str) -> None:
    scaffold = KIT / f"{name}.ipynb"
    # One source of truth: the scaffold's checkpoint runs exactly the solution's tests.
    assert checkpoint_tests(scaffold) == checkpoint_tests(SOLUTIONS / f"{name}.ipynb")
    assert "run_checkpoint(" not in "\n".join(_code_cells(scaffold))  # it would export into src
    exports = [cell for cell in _code_cells(scaffold) if EXPORT_DIRECTIVE.search(cell)]
    todos = [line for cell in exports for line in cell.splitlines() if "TODO(" in line]
    assert all(f"TODO({_tag(name)}): " in line for line in todos), todos
    if name in NOTHING_TO_DO:
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
    notebooks = [KIT / f"{name}.ipynb" for name in NOTEBOOKS]
    exporter = (
        "import sys\nfrom nbdev.export import nb_export\n"
        "for nb in sys.argv[1:]:\n    nb_export(nb, lib_path='src/ingest')\n"
    )
    proc = _run("-c", exporter, *map(str, notebooks), cwd=copy)
    assert proc.returncode == 0, proc.stderr
    modules = [m for nb in notebooks for m in _modules(nb)]
    assert len(modules) == len(notebooks) - 1  # one module each; 04-receiver exports nothing
    importer = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(importlib.import_module(name).__file__)\n"
        "import httpx\n"
        "from ingest.http.retry import is_replayable\n"
        "from ingest.webhooks.dedup import optimal_bits\n"
        "for call in (lambda: is_replayable(httpx.Request('GET', 'http://t.test')),"
        " lambda: optimal_bits(1000, 0.01)):\n"
        "    try:\n"
        "        call()\n"
        "    except NotImplementedError as exc:\n"
        "        print(exc)\n"
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
    assert lines[-2].startswith("TODO(01-02): is_replayable")
    assert lines[-1].startswith("TODO(02-02): optimal_bits")


def test_checkpoint_fails_on_untouched_scaffolds() -> None:
    exported = {
        Path(name).name: ROOT / "src" / (m.replace(".", "/") + ".py")
        for name in REPRESENTATIVE
        for m in _modules(KIT / f"{name}.ipynb")
    }
    notebooks = [f"starter-kit/{name}.ipynb" for name in REPRESENTATIVE]
    proc = _run("-m", "ingest.checkpoint", *notebooks)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = _reports(proc.stdout)
    assert sorted(reports) == sorted(Path(name).name for name in REPRESENTATIVE), proc.stdout
    tags = {Path(name).name: _tag(name) for name in REPRESENTATIVE}
    for name, block in reports.items():
        _, failed = _counts(block)
        assert failed > 0, block
        assert f"TODO({tags[name]}): " in block  # the TODOs left are listed
        assert "NotImplementedError" in block  # and the failures say why
        imported = _imported_from(block)
        assert "ingest-checkpoint-" in str(imported) and not imported.is_relative_to(ROOT)
        # The package was not touched: the scaffold went to the scratch copy only.
        assert "TODO(" not in exported[name].read_text(encoding="utf-8")


def test_checkpoint_passes_on_the_solutions_in_scratch() -> None:
    notebooks = [f"notebooks/{name}.ipynb" for name in REPRESENTATIVE]
    proc = _run("-m", "ingest.checkpoint", *notebooks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = _reports(proc.stdout)
    assert sorted(reports) == sorted(Path(name).name for name in REPRESENTATIVE), proc.stdout
    for block in reports.values():
        passed, failed = _counts(block)
        assert passed > 0 and failed == 0, block
        assert "no TODO markers left" in block
        imported = _imported_from(block)
        assert "ingest-checkpoint-" in str(imported) and not imported.is_relative_to(ROOT)
