"""papermill runs every notebook with the session's service URLs as parameters.

nbval (in the same `make test` run) checks outputs against the committed ones; this run checks that
each notebook takes its services as parameters, and keeps the executed copies under
`artifacts/papermill/` for CI to publish.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.checkpoint import execute_notebook, notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)
ARTIFACTS = ROOT / "artifacts" / "papermill"


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.notebooks
@pytest.mark.parametrize(
    "notebook", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks"))
)
def test_notebook_runs_with_service_urls_as_parameters(
    notebook: Path, service_urls: dict[str, str]
) -> None:
    # The same runner and parameters as `ingest checkpoint`'s papermill step.
    parameters = notebook_parameters(service_urls)
    executed = execute_notebook(
        notebook, ARTIFACTS / notebook.relative_to(ROOT / "notebooks"), parameters
    )
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected, f"{notebook.name} has no cell tagged 'parameters'"
    for name, value in parameters.items():
        assert (
            f"{name} = {value!r}".replace("'", '"') in injected[0].source
            or f"{name} = {value!r}" in injected[0].source
        )
