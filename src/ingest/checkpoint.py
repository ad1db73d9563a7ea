"""Checkpoint cells: export one notebook into the package, then run the tests of what it exported.

A learner's notebook ends with ``run_checkpoint(...)``. It fails the cell (and so the notebook run)
when the tests fail, and prints only counts, so a notebook's committed output stays the same from one
run to the next.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckpointResult", "project_root", "run_checkpoint"]


@dataclass(frozen=True)
class CheckpointResult:
    notebook: str
    modules: tuple[str, ...]
    passed: int
    failed: int

    def __repr__(self) -> str:
        return f"CheckpointResult({self.notebook!r}, modules={list(self.modules)}, passed={self.passed}, failed={self.failed})"


def project_root(start: Path | None = None) -> Path:
    """The nearest folder above ``start`` (default: cwd) holding a ``pyproject.toml`` with nbdev config."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.exists() and "[tool.nbdev]" in candidate.read_text():
            return folder
    raise FileNotFoundError(f"no project root (pyproject.toml with [tool.nbdev]) above {here}")


def _export(root: Path, notebook: str) -> tuple[str, ...]:
    from nbdev.config import get_config
    from nbdev.export import nb_export

    config = get_config(path=str(root))
    nb_path = Path(config.nbs_path) / notebook
    if not nb_path.exists():
        raise FileNotFoundError(f"no notebook {nb_path}")
    cwd = Path.cwd()
    # nbdev resolves its settings from the working directory.
    os.chdir(root)
    try:
        nb_export(str(nb_path), lib_path=str(config.lib_path))
    finally:
        os.chdir(cwd)
    return tuple(re.findall(r"#\|\s*default_exp\s+([\w.]+)", nb_path.read_text()))


def run_checkpoint(notebook: str, *, tests: list[str]) -> CheckpointResult:
    """Export ``notebook`` (relative to the notebooks folder) and run ``tests`` (relative to the root)."""
    root = project_root()
    modules = _export(root, notebook)
    for module in modules:
        print(f"exported {notebook} → src/ingest/{module.replace('.', '/')}.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:nbval", *tests],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|error)", summary))
    print(f"{', '.join(tests)}: {passed} passed, {failed} failed")
    if proc.returncode != 0:
        raise AssertionError(
            f"checkpoint tests failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    return CheckpointResult(notebook, modules, passed, failed)


def export_drift(root: Path | None = None) -> list[str]:
    """Re-export every notebook into a scratch copy and list the files that differ from ``src/ingest``.

    The working tree is left alone, so the check needs no git and cannot clobber local edits.
    """
    import filecmp
    import shutil
    import tempfile

    root = root or project_root()
    lib = root / "src" / "ingest"
    with tempfile.TemporaryDirectory(prefix="ingest-export-") as scratch:
        copy = Path(scratch)
        shutil.copy2(root / "pyproject.toml", copy / "pyproject.toml")
        shutil.copytree(root / "notebooks", copy / "notebooks")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(lib, copy / "src" / "ingest", ignore=ignore)
        proc = subprocess.run(
            [sys.executable, "-c", "from nbdev.doclinks import nbdev_export; nbdev_export()"],
            cwd=copy,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"nbdev export failed:\n{proc.stderr[-3000:]}")
        drift = []
        for path in sorted((copy / "src" / "ingest").rglob("*.py")):
            rel = path.relative_to(copy / "src" / "ingest")
            committed = lib / rel
            if not committed.exists():
                drift.append(
                    f"src/ingest/{rel}: the export creates it, but it is not in the package"
                )
            elif not filecmp.cmp(path, committed, shallow=False):
                drift.append(f"src/ingest/{rel}: differs from what the notebooks export")
        return drift
