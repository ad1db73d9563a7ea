"""`ingest export --check`: a hand edit of a generated module is caught; a clean tree passes."""

from __future__ import annotations

import shutil
from pathlib import Path

from ingest.checkpoint import export_drift

ROOT = Path(__file__).resolve().parents[1]


def _copy_project(dest: Path) -> Path:
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(ROOT / "notebooks", dest / "notebooks")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_committed_package_matches_the_notebooks() -> None:
    assert export_drift(ROOT) == []


def test_hand_edit_of_a_generated_module_is_drift(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    module = project / "src" / "ingest" / "workbook.py"
    module.write_text(module.read_text().replace("Where each service", "Where every service"))
    assert export_drift(project) == [
        "src/ingest/workbook.py: differs from what the notebooks export"
    ]


def test_exported_module_missing_from_the_package_is_drift(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / "src" / "ingest" / "workbook.py").unlink()
    assert export_drift(project) == [
        "src/ingest/workbook.py: the export creates it, but it is not in the package"
    ]
