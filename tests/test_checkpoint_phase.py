"""``ingest checkpoint N``: exactly one phase's checks, on the solutions or on a starter kit.

The whole of phase 1 runs in CI (`make checkpoint PHASE=1`); here the chain papermill → nbval →
pytest is proven on one notebook, and the starter-kit check on the whole untouched kit.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from ingest.checkpoint import PHASES, checkpoint_tests, phase_services
from ingest.stack import probe
from tests.support.cli import ingest

ROOT = Path(__file__).resolve().parents[1]
PHASE_1_MODULES = ["01-retry-client", "02-webhooks-s3"]


def _listed(stdout: str, prefix: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.startswith(f"  {prefix}")]


def test_list_names_exactly_the_phase_1_notebooks_and_test_files() -> None:
    proc = ingest("checkpoint", "1", "--list")
    assert proc.returncode == 0, proc.stderr
    notebooks = [
        path
        for module in PHASE_1_MODULES
        for path in sorted((ROOT / "notebooks" / module).glob("*.ipynb"))
    ]
    assert _listed(proc.stdout, "notebooks/") == [str(p.relative_to(ROOT)) for p in notebooks]
    own = list(dict.fromkeys(test for nb in notebooks for test in checkpoint_tests(nb)))
    expected = own + [t for t in PHASES[1].support_tests if t not in own]
    assert _listed(proc.stdout, "tests/") == expected
    assert all((ROOT / test).exists() for test in expected)
    # Listing runs nothing: no step is announced.
    assert "papermill" not in proc.stdout and "PASSED" not in proc.stdout


def test_list_from_the_starter_kit_names_the_scaffolds() -> None:
    proc = ingest("checkpoint", "1", "--list", "--from", "starter-kit")
    assert proc.returncode == 0, proc.stderr
    listed = _listed(proc.stdout, "starter-kit/")
    assert len(listed) == len(_listed(ingest("checkpoint", "1", "--list").stdout, "notebooks/"))
    assert "starter-kit/02-webhooks-s3/07-s3-loader.ipynb" in listed


@pytest.mark.parametrize("phase", ["2", "3"])
def test_a_phase_not_built_yet_is_bad_usage_and_says_so(phase: str) -> None:
    proc = ingest("checkpoint", phase)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"phase {phase} is not built yet" in proc.stderr
    assert "can be checked now: 1" in proc.stderr


def test_an_unknown_phase_or_notebook_is_bad_usage() -> None:
    proc = ingest("checkpoint", "7")
    assert proc.returncode == 2 and "there is no phase 7" in proc.stderr
    proc = ingest("checkpoint", "1", "--only", "01-retry-client/99-nothing")
    assert proc.returncode == 2 and "not a notebook of phase 1" in proc.stderr


def test_services_missing_from_the_environment_are_started_and_stopped_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> None:
    # PostgreSQL and Redis are given; S3 and the mock API are not, and no stack runs in this home.
    monkeypatch.setenv("INGEST_HOME", str(tmp_path))
    monkeypatch.delenv("INGEST_S3_ENDPOINT_URL")
    monkeypatch.delenv("INGEST_MOCK_API_URL")
    with phase_services() as env:
        assert env["INGEST_DATABASE_URL"] == database_url
        started = {"s3": env["INGEST_S3_ENDPOINT_URL"], "mock-api": env["INGEST_MOCK_API_URL"]}
        assert all(probe(name, url)[0] for name, url in started.items())
        schema = env["INGEST_DB_SCHEMA"]
        with psycopg.connect(database_url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchone()
        assert tables is not None and tables[0] > 0  # migrated
    assert not any(probe(name, url)[0] for name, url in started.items())
    assert probe("postgres", database_url)[0]  # what was given is left alone
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)",
            ([schema, env["INGEST_LANDING_SCHEMA"]],),
        ).fetchone()
    assert left == (0,)


@pytest.mark.notebooks
@pytest.mark.timeout(900)  # two notebook executions and a test run, on a shared machine
def test_the_main_path_runs_papermill_nbval_and_the_tests_of_one_notebook() -> None:
    notebook = "01-retry-client/02-backoff"
    artifact = ROOT / "artifacts" / "papermill" / f"{notebook}.ipynb"
    artifact.unlink(missing_ok=True)
    proc = ingest("checkpoint", "1", "--only", notebook)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "[1/3] papermill: 1 notebooks" in out
    assert f"[1/1] {notebook}.ipynb: ok" in out
    assert re.search(r"→ papermill: 1 notebooks passed, 0 failed: passed", out), out
    assert "[2/3] nbval: 1 notebooks" in out
    nbval = re.search(r"→ nbval: (\d+) cells passed, 0 failed: passed", out)
    assert nbval is not None and int(nbval.group(1)) > 5, out
    assert "[3/3] pytest: 1 test files" in out  # only the notebook's own: tests/http/test_retry.py
    tests = re.search(r"→ pytest: (\d+) tests passed, 0 failed: passed", out)
    assert tests is not None and int(tests.group(1)) > 100, out
    assert out.rstrip().splitlines()[-1].startswith(f"phase 1 (only {notebook}): PASSED")
    assert artifact.exists()  # the executed copy, for CI to keep


def test_the_scratch_path_passes_on_the_solutions() -> None:
    # The same machinery as --from starter-kit, on notebooks that are complete: nothing is left.
    proc = ingest(
        "checkpoint", "1", "--from", "notebooks", "--only", "02-webhooks-s3/01-signatures"
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "02-webhooks-s3/01-signatures: ok" in proc.stdout
    assert "TODO markers left: 0" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("phase 1 (only")


@pytest.mark.timeout(900)  # every scaffold's tests: about 3 minutes on two cores
def test_the_untouched_starter_kit_fails_and_names_its_todos() -> None:
    lib = ROOT / "src" / "ingest"
    before = {p: p.read_bytes() for p in lib.rglob("*.py")}
    proc = ingest("checkpoint", "1", "--from", "starter-kit")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "papermill and nbval: not run on scaffolds" in out  # said, not hidden
    imported = re.search(r"ingest imported from the scratch copy: (\S+)", out)
    assert imported is not None and not Path(imported.group(1)).is_relative_to(ROOT), out
    for name, todo in (
        ("01-retry-client/02-backoff", "TODO(01-02): "),
        ("02-webhooks-s3/02-dedup", "TODO(02-02): optimal_bits"),
    ):
        found = re.search(rf"^  {re.escape(name)}: (.*?)(?=^  \S)", out, re.MULTILINE | re.DOTALL)
        assert found is not None, out
        block = found.group(1)
        assert block.startswith("NOT YET"), block
        assert re.search(r"\d+ passed, [1-9]\d* failed", block), block
        assert re.search(r"TODO markers left: [1-9]", block), block
        assert todo in block, block
    verdict = out[out.rindex("phase 1: FAILED") :]
    for module in ("01-retry-client", "02-webhooks-s3"):
        assert re.search(rf"{module}/\S+: \d+ tests failing, [1-9]\d* TODOs left", verdict), verdict
    # The kit was checked in a scratch copy: the package is as it was.
    assert {p: p.read_bytes() for p in lib.rglob("*.py")} == before
