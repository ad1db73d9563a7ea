"""Checkpoint cells: export one notebook into the package, then run the tests of what it exported.

A solution notebook ends with ``run_checkpoint(...)``. It fails the cell (and so the notebook run)
when the tests fail, and prints only counts, so a notebook's committed output stays the same from one
run to the next.

A learner's scaffold (``starter-kit/``) ends with ``check_in_scratch(...)`` instead, and the same
check runs from a shell::

    .venv/bin/python -m ingest.checkpoint starter-kit/01-retry-client/02-backoff.ipynb [...]

It exports the notebook into a scratch copy of the package, never into ``src/ingest``, and runs the
tests named by the notebook's own checkpoint cell against that copy: a half-finished exercise can
break nothing, and a test run cannot pass on the solution by accident.

A phase (``ingest checkpoint N``, ``make checkpoint PHASE=N``) runs exactly the checks of its
modules: papermill over every notebook with the service URLs as parameters, nbval against the
committed outputs, then the tests its checkpoint cells name plus those of the hand-written wiring
it relies on. ``--from starter-kit`` checks a learner's scaffolds instead: all exported into one
scratch copy, their tests in one run, and the TODO markers left, per notebook.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

__all__ = [
    "PHASES",
    "PLANNED_PHASES",
    "CheckpointResult",
    "NotebookReport",
    "Phase",
    "PhaseUsageError",
    "ScratchCheck",
    "StepResult",
    "check_in_scratch",
    "checkpoint_tests",
    "execute_notebook",
    "main",
    "notebook_parameters",
    "phase_main",
    "phase_notebooks",
    "phase_of",
    "phase_services",
    "phase_tests",
    "project_root",
    "run_checkpoint",
    "run_phase",
    "scratch_check",
    "scratch_phase",
    "todo_markers",
]


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


def _counts(stdout: str, stderr: str) -> tuple[int, int]:
    """Passed and failed (or erroring) tests, from the summary line of ``pytest -q``."""
    summary = stdout.strip().splitlines()[-1] if stdout.strip() else stderr.strip()
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|error)", summary))
    return passed, failed


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
    passed, failed = _counts(proc.stdout, proc.stderr)
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


# -- learners: check a notebook in a scratch copy of the package ---------------------------------

# The checkpoint calls whose ``tests=[...]`` name a notebook's tests.
_CHECKPOINT_CALLS = frozenset({"run_checkpoint", "check_in_scratch"})
# A marker runs to the end of the string literal it opens (a stub's message), else of its line.
_TODO = re.compile(
    r"""(?:(["'])(TODO\(\d{2}-[0-9a-z]+\).*?)(?<!\\)\1|(TODO\(\d{2}-[0-9a-z]+\).*))"""
)
_PROBE_ENV = "INGEST_CHECKPOINT_PROBE"
_PROBE_MODULE = "_ingest_checkpoint_probe"
# A pytest plugin loaded into the test run: it writes down which `ingest` the tests imported.
_PROBE_SOURCE = f'''\
import os
import sys


def pytest_sessionfinish(session, exitstatus):
    module = sys.modules.get("ingest")
    with open(os.environ["{_PROBE_ENV}"], "w", encoding="utf-8") as probe:
        probe.write(getattr(module, "__file__", None) or "")
'''
_FAILURE_LINES = 10  # of pytest's short summary, shown under a failing notebook


@dataclass(frozen=True)
class ScratchCheck:
    """One notebook checked in a scratch copy: what it exported and how its tests went."""

    notebook: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    passed: int
    failed: int
    returncode: int
    todos: tuple[str, ...]  # TODO markers still in the notebook's code cells
    ingest_file: str  # the `ingest/__init__.py` the tests imported: inside the scratch copy
    failures: tuple[str, ...] = ()  # pytest's FAILED/ERROR summary lines
    error: str | None = None  # why the tests could not run (the export failed, say)
    output: str = field(default="", repr=False)  # pytest's whole output

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0 and self.failed == 0

    def report(self) -> str:
        """What a learner reads: counts, the first failures and the TODOs left."""
        lines = [f"{self.notebook} → {', '.join(self.modules) or '(no module)'} (scratch copy)"]
        if self.error is not None:
            lines.append(f"  {self.error}")
        else:
            lines.append(f"  {', '.join(self.tests)}: {self.passed} passed, {self.failed} failed")
            lines.extend(f"    {line}" for line in self.failures[:_FAILURE_LINES])
            if len(self.failures) > _FAILURE_LINES:
                lines.append(f"    … and {len(self.failures) - _FAILURE_LINES} more")
            lines.append(f"  ingest imported from the scratch copy: {self.ingest_file}")
        if self.todos:
            lines.append(f"  TODO markers left: {len(self.todos)}")
            lines.extend(f"    {todo}" for todo in self.todos)
        else:
            lines.append("  no TODO markers left")
        return "\n".join(lines)


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [
        "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for cell in cells
        if cell["cell_type"] == "code"
    ]


def checkpoint_tests(notebook: Path) -> list[str]:
    """The ``tests=[...]`` of the notebook's checkpoint cell (the last one, if several)."""
    found: list[str] | None = None
    for source in _code_cells(notebook):
        if "tests" not in source:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython magics: not a checkpoint cell
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in _CHECKPOINT_CALLS:
                continue
            for keyword in node.keywords:
                if keyword.arg == "tests":
                    value = ast.literal_eval(keyword.value)
                    if not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
                        raise ValueError(f"{notebook}: tests=[...] must be a list of paths")
                    found = value
    if not found:
        raise ValueError(f"{notebook}: no checkpoint cell with tests=[...] (run_checkpoint)")
    return found


def todo_markers(notebook: Path) -> list[str]:
    """Every ``TODO(NN-…)`` marker still in the notebook's code cells, in order."""
    return [
        (match.group(2) or match.group(3)).rstrip()
        for source in _code_cells(notebook)
        for match in _TODO.finditer(source)
    ]


def _exported_modules(notebook: Path) -> tuple[str, ...]:
    text = "\n".join(_code_cells(notebook))
    found = re.findall(r"^\s*#\|\s*default_exp\s+([\w.]+)", text, re.MULTILINE)
    return tuple(f"ingest.{module}" for module in found)


def _resolve(notebook: str | Path, root: Path) -> Path:
    path = Path(notebook)
    candidates = (
        [path] if path.is_absolute() else list(dict.fromkeys([Path.cwd() / path, root / path]))
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no notebook {notebook} (looked at {', '.join(map(str, candidates))})")


def _failure_lines(output: str) -> tuple[str, ...]:
    return tuple(line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR ")))


def _scratch_copy(root: Path, copy: Path, notebooks: Sequence[Path]) -> CompletedProcess[str]:
    """Copy the package into ``copy`` and export ``notebooks`` into that copy, in one process."""
    import shutil

    shutil.copy2(root / "pyproject.toml", copy / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "src" / "ingest", copy / "src" / "ingest", ignore=ignore)
    targets = []
    for path in notebooks:
        target = copy / "notebooks" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        targets.append(str(target.relative_to(copy)))
    # A subprocess: nbdev reads its settings from the working directory, which must not move
    # under a running notebook kernel.
    exporter = (
        "import sys\nfrom nbdev.export import nb_export\n"
        "for notebook in sys.argv[1:]:\n    nb_export(notebook, lib_path='src/ingest')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", exporter, *targets],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )


def _pytest_in_scratch(
    root: Path,
    copy: Path,
    args: Sequence[str],
    *,
    tb: str,
    echo: Callable[[str], bool] | None = None,
) -> tuple[CompletedProcess[str], str]:
    """Run pytest from ``root`` with ``copy``'s ``src`` first on the path.

    Returns the run and the ``ingest/__init__.py`` its tests imported, which must be the copy's.
    ``echo`` picks output lines to print as they come (progress on a long run).
    """
    (copy / "probe").mkdir(exist_ok=True)
    (copy / "probe" / f"{_PROBE_MODULE}.py").write_text(_PROBE_SOURCE, encoding="utf-8")
    probe_file = copy / "probe" / "ingest_file.txt"
    inherited = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(copy / "src"), str(copy / "probe"), *([inherited] if inherited else [])]
        ),
        _PROBE_ENV: str(probe_file),
        "COLUMNS": "160",  # pytest cuts its summary lines to the terminal's width
    }
    pytest = [sys.executable, "-m", "pytest", "-q", f"--tb={tb}", "-p", "no:nbval"]
    pytest += ["-p", _PROBE_MODULE, *args]
    if echo is None:
        proc = subprocess.run(
            pytest, cwd=root, env=env, capture_output=True, text=True, check=False
        )
    else:
        with subprocess.Popen(
            pytest,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        ) as running:
            assert running.stdout is not None and running.stderr is not None
            lines = []
            for line in running.stdout:
                lines.append(line)
                if echo(line):
                    print(f"    {line.rstrip()}", flush=True)
            stderr = running.stderr.read()
        proc = CompletedProcess(pytest, running.returncode, "".join(lines), stderr)
    ingest_file = probe_file.read_text(encoding="utf-8") if probe_file.exists() else ""
    if ingest_file and not Path(ingest_file).is_relative_to(copy / "src" / "ingest"):
        # The whole point of the scratch copy: never report on the package's own modules.
        raise RuntimeError(
            f"the tests imported ingest from {ingest_file}, not from the scratch copy"
            f" {copy / 'src'}"
        )
    return proc, ingest_file


def scratch_check(
    notebook: str | Path,
    *,
    tests: list[str] | None = None,
    root: Path | None = None,
    tb: str = "no",
) -> ScratchCheck:
    """Export ``notebook`` into a scratch copy of the package and run its tests against that copy.

    ``notebook`` is a path (from the working directory, else from the project root). ``tests``
    default to the notebook's own checkpoint cell; they run from the project root with the scratch
    ``src`` first on ``PYTHONPATH``, and inherit the environment (a test session's ``INGEST_*``
    service URLs, so nested runs reuse its services). ``tb`` is pytest's ``--tb`` style: none by
    default, since formatting hundreds of tracebacks of a fresh scaffold costs more than its tests.
    Nothing is printed and nothing raises for failing tests; see :func:`check_in_scratch`.
    """
    import tempfile

    root = (root or project_root()).resolve()
    path = _resolve(notebook, root)
    shown = str(notebook)
    test_list = tests if tests is not None else checkpoint_tests(path)
    modules = _exported_modules(path)
    todos = tuple(todo_markers(path))
    with tempfile.TemporaryDirectory(prefix="ingest-checkpoint-") as scratch:
        copy = Path(scratch)
        export = _scratch_copy(root, copy, [path])
        if export.returncode != 0:
            last = export.stderr.strip().splitlines()[-1:] or ["(no message)"]
            return ScratchCheck(
                shown,
                modules,
                tuple(test_list),
                passed=0,
                failed=0,
                returncode=export.returncode,
                todos=todos,
                ingest_file="",
                error=f"export failed: {last[0]}",
                output=export.stderr,
            )
        proc, ingest_file = _pytest_in_scratch(root, copy, test_list, tb=tb)
    passed, failed = _counts(proc.stdout, proc.stderr)
    failures = _failure_lines(proc.stdout)
    if proc.returncode != 0 and not failures:  # e.g. "ERROR: file or directory not found"
        failures = tuple((proc.stdout + proc.stderr).strip().splitlines()[-1:])
    error = None
    if not ingest_file:  # no session, or one that never imported ingest: nothing was checked
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        error = f"the tests did not run: {last[0]}"
    if proc.returncode != 0 and failed == 0:
        failed = 1  # pytest failed without a count (a usage or collection error): not a pass
    return ScratchCheck(
        notebook=shown,
        modules=modules,
        tests=tuple(test_list),
        passed=passed,
        failed=failed,
        returncode=proc.returncode,
        todos=todos,
        ingest_file=ingest_file,
        failures=failures,
        error=error,
        output=proc.stdout + proc.stderr,
    )


def check_in_scratch(
    notebook: str | Path, *, tests: list[str] | None = None, tb: str = "no"
) -> ScratchCheck:
    """The checkpoint cell of a scaffold: :func:`scratch_check`, printed; fails the cell on failure.

    ``tb="short"`` also prints pytest's output with its tracebacks.
    """
    result = scratch_check(notebook, tests=tests, tb=tb)
    if tb != "no":
        print(result.output)
    print(result.report())
    if not result.ok:
        raise AssertionError(f"{result.notebook}: the checkpoint tests do not pass yet")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m ingest.checkpoint NOTEBOOK [NOTEBOOK...]``: 0 only if every notebook passes."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ingest.checkpoint",
        description="Export each notebook into a scratch copy of the package (never src/ingest)"
        " and run the tests its checkpoint cell names against that copy.",
    )
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="path to a .ipynb")
    parser.add_argument(
        "--tb",
        default="no",
        choices=["no", "line", "short", "long"],
        help="pytest's traceback style; anything but 'no' prints pytest's output (default: no)",
    )
    args = parser.parse_args(argv)
    ok = True
    for notebook in args.notebooks:
        try:
            result = scratch_check(notebook, tb=args.tb)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{notebook}: {exc}")
            ok = False
            continue
        if args.tb != "no":
            print(result.output)
        print(result.report(), flush=True)
        ok = ok and result.ok
    return 0 if ok else 1


# -- phases: `ingest checkpoint N` ---------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One of the product's checkpoints: the notebook modules it covers, and the tests of the
    hand-written wiring those notebooks rely on (the notebooks' own tests come from their
    checkpoint cells)."""

    number: int
    modules: tuple[str, ...]  # folders under notebooks/ (and under a starter kit)
    support_tests: tuple[str, ...] = ()


PHASES: dict[int, Phase] = {
    1: Phase(
        1,
        modules=("01-retry-client", "02-webhooks-s3"),
        support_tests=(
            "tests/mockapi",  # the mock API that module 01's notebooks pull from
            "tests/test_migrate.py",  # the state schema every store of phase 1 writes to
            "tests/test_settings_errors.py",  # INGEST_* settings and the error tree
            "tests/sources/test_spec.py",  # source YAML behind `ingest run` (rest and s3 sources)
            "tests/webhooks/test_receiver_acceptance.py",  # the hand-written receiver, end to end
            "tests/reliability/test_rest_exactly_once.py",  # a REST run killed and run again
        ),
    ),
}
# Phases the design names but that are not built yet, with what each will cover.
PLANNED_PHASES: dict[int, str] = {
    2: "module 03 (notebooks/03-saas-schema)",
    3: "module 04 (notebooks/04-airflow-observability)",
}
_TODOS_SHOWN = 3  # per notebook, in the report of a starter-kit check
_SCRATCH_TEST_TIMEOUT = 30  # seconds per test on scaffolds; the slowest solution test takes ~10


class PhaseUsageError(ValueError):
    """A phase, filter or folder that cannot be checked (exit code 2)."""


def phase_of(number: int) -> Phase:
    """The phase ``number``; :class:`PhaseUsageError` says why there is none."""
    if number in PHASES:
        return PHASES[number]
    built = ", ".join(map(str, sorted(PHASES)))
    if number in PLANNED_PHASES:
        raise PhaseUsageError(
            f"phase {number} is not built yet: it will check {PLANNED_PHASES[number]};"
            f" the phases that can be checked now: {built}"
        )
    known = ", ".join(map(str, sorted({*PHASES, *PLANNED_PHASES})))
    raise PhaseUsageError(f"there is no phase {number}: the phases are {known} (built: {built})")


def phase_notebooks(phase: Phase, folder: Path, only: Sequence[str] = ()) -> list[Path]:
    """The phase's notebooks under ``folder`` (``notebooks/`` or a starter kit), in module order.

    ``only`` keeps the notebooks named ``<module>/<notebook>`` (``01-retry-client/02-backoff``).
    """
    found: list[Path] = []
    for module in phase.modules:
        directory = folder / module
        if not directory.is_dir():
            raise PhaseUsageError(
                f"{directory}: no such folder (phase {phase.number} covers"
                f" {', '.join(phase.modules)})"
            )
        found.extend(sorted(directory.glob("*.ipynb")))
    if not only:
        return found
    by_name = {f"{path.parent.name}/{path.stem}": path for path in found}
    wanted = [name.removesuffix(".ipynb").strip("/") for name in only]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise PhaseUsageError(
            f"--only {', '.join(unknown)}: not a notebook of phase {phase.number}"
            f" (names look like {next(iter(by_name), '<module>/<notebook>')})"
        )
    return [path for name, path in by_name.items() if name in wanted]


def phase_tests(phase: Phase, notebooks: Sequence[Path], *, support: bool = True) -> list[str]:
    """The union, in order, of the notebooks' checkpoint tests (and the phase's support tests)."""
    tests = dict.fromkeys(test for notebook in notebooks for test in checkpoint_tests(notebook))
    if support:
        tests.update(dict.fromkeys(phase.support_tests))
    return list(tests)


@dataclass
class StepResult:
    """One step of a phase check: what ran and how it went."""

    name: str
    passed: int
    failed: int
    problems: list[str] = field(default_factory=list)  # one line per failure, for the verdict
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.problems


def _say(line: str = "") -> None:
    print(line, flush=True)


def _stream(cmd: list[str], *, cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """Run ``cmd``, echoing its output indented as it comes; return its exit code and output."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        _say("    " + line.rstrip("\n"))
    return proc.wait(), "".join(lines)


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``env`` for the block: papermill's kernels inherit it."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def phase_services() -> Iterator[dict[str, str]]:
    """The environment of a phase run: service URLs, a home and state schemas of its own.

    Services given by ``INGEST_*`` URLs, or running from an earlier ``ingest stack up``, are used
    as they are; the rest are started embedded (as ``ingest stack up`` does) in a temporary home,
    on free ports unless ``INGEST_STACK_*_PORT`` names one, and stopped on exit. The state and
    landing schemas are this run's own and are dropped on exit.
    """
    import shutil
    import tempfile
    import uuid

    import psycopg
    from psycopg import sql

    from ingest.errors import StackError
    from ingest.netutil import free_port
    from ingest.stack import PORT_SETTINGS, SERVICES, Stack, StackConfig, probe
    from ingest.state.migrate import migrate

    config = StackConfig.from_env()
    # A stack the learner brought up counts as given: reused, and never stopped from here.
    for name, url in Stack(config).urls().items():
        if name not in config.given and probe(name, url)[0]:
            config.given[name] = url
    home = Path(tempfile.mkdtemp(prefix="ingest-checkpoint-phase-"))
    config.home = home
    config.ports = {
        name: config.ports[name] if PORT_SETTINGS[name] in os.environ else free_port()
        for name in SERVICES
    }
    stack = Stack(config, log=lambda message: _say(f"  services: {message}"))
    run = uuid.uuid4().hex[:10]
    schemas = (f"checkpoint_{run}", f"checkpoint_{run}_landing")
    database_url = None
    try:
        broken = [f"{s.name}: {s.detail}" for s in stack.up() if not s.ok]
        if broken:
            raise StackError("services do not answer: " + "; ".join(broken))
        env = {
            **stack.env(),
            "INGEST_HOME": str(home),
            "INGEST_DB_SCHEMA": schemas[0],
            "INGEST_LANDING_SCHEMA": schemas[1],
        }
        database_url = env["INGEST_DATABASE_URL"]
        migrate(database_url, schema=schemas[0])
        yield env
    finally:
        if database_url is not None:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(database_url, autocommit=True) as conn,
            ):
                for schema in schemas:
                    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                    conn.execute(drop.format(sql.Identifier(schema)))
        stopped = stack.down()
        if stopped:
            _say(f"  services: stopped what this run started: {', '.join(stopped)}")
        shutil.rmtree(home, ignore_errors=True)


def notebook_parameters(env: Mapping[str, str]) -> dict[str, str]:
    """The papermill parameters every notebook takes: the service URLs from ``INGEST_*``."""
    return {
        "DATABASE_URL": env["INGEST_DATABASE_URL"],
        "REDIS_URL": env["INGEST_REDIS_URL"],
        "S3_ENDPOINT_URL": env["INGEST_S3_ENDPOINT_URL"],
        "MOCK_API_URL": env["INGEST_MOCK_API_URL"],
    }


def execute_notebook(notebook: Path, out: Path, parameters: Mapping[str, str]) -> Any:
    """Run ``notebook`` top to bottom with papermill, in its own folder; the executed copy to
    ``out``. Returns papermill's executed notebook; raises on a failing cell."""
    import papermill  # type: ignore[import-untyped]

    out.parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(
        str(notebook),
        str(out),
        parameters=dict(parameters),
        kernel_name="python3",
        cwd=str(notebook.parent),
        progress_bar=False,
    )


def _papermill_step(notebooks: Sequence[Path], root: Path, env: Mapping[str, str]) -> StepResult:
    artifacts = root / "artifacts" / "papermill"
    _say(
        f"[1/3] papermill: {len(notebooks)} notebooks, the service URLs as parameters;"
        f" executed copies in {artifacts.relative_to(root)}/"
    )
    parameters = notebook_parameters(env)
    result = StepResult("papermill", 0, 0)
    with _environment(env):
        for index, notebook in enumerate(notebooks, 1):
            name = notebook.relative_to(root / "notebooks")
            start = time.monotonic()
            try:
                execute_notebook(notebook, artifacts / name, parameters)
            except Exception as exc:  # a failing cell, a dead kernel: report it, run the rest
                ename, evalue = (
                    getattr(exc, "ename", type(exc).__name__),
                    getattr(exc, "evalue", ""),
                )
                last = (str(exc).strip().splitlines() or [""])[-1]
                message = f"{ename}: {evalue or last}"
                result.failed += 1
                result.problems.append(f"papermill {name}: {message}"[:300])
                outcome = f"FAILED ({message[:160]})"
            else:
                result.passed += 1
                outcome = "ok"
            _say(
                f"  [{index}/{len(notebooks)}] {name}: {outcome} ({time.monotonic() - start:.0f}s)"
            )
    return result


def _pytest_step(
    label: str, args: list[str], root: Path, env: Mapping[str, str], *, plugin: str = "no:nbval"
) -> StepResult:
    cmd = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-p", plugin, *args]
    code, output = _stream(cmd, cwd=root, env={**env, "COLUMNS": "160"})
    passed, failed = _counts(output, "")
    problems = [f"{label}: {line}" for line in _failure_lines(output)]
    if code != 0 and not problems:  # a usage or collection error: not a pass
        last = output.strip().splitlines()[-1:] or ["(no output)"]
        problems.append(f"{label}: pytest exited {code}: {last[0]}")
    return StepResult(label, passed, failed, problems)


def _nbval_step(notebooks: Sequence[Path], root: Path, env: Mapping[str, str]) -> StepResult:
    _say(f"[2/3] nbval: {len(notebooks)} notebooks against their committed outputs")
    args = ["--nbval", "--nbval-current-env", "--nbval-sanitize-with", "notebooks/sanitize.cfg"]
    names = [str(notebook.relative_to(root)) for notebook in notebooks]
    return _pytest_step("nbval", [*args, *names], root, env, plugin="nbval")


def _tests_step(tests: Sequence[str], root: Path, env: Mapping[str, str]) -> StepResult:
    _say(f"[3/3] pytest: {len(tests)} test files and folders of the exported primitives and wiring")
    return _pytest_step("pytest", list(tests), root, env)


def run_phase(notebooks: Sequence[Path], tests: Sequence[str], root: Path) -> list[StepResult]:
    """Papermill, nbval, then the tests, on the solutions: every step runs, whatever the first did."""
    results = []
    with phase_services() as env:
        steps: list[tuple[str, Callable[[], StepResult]]] = [
            ("papermill", partial(_papermill_step, notebooks, root, env)),
            ("nbval", partial(_nbval_step, notebooks, root, env)),
            ("pytest", partial(_tests_step, tests, root, env)),
        ]
        for name, step in steps:
            start = time.monotonic()
            result = step()
            result.seconds = time.monotonic() - start
            unit = "notebooks" if name == "papermill" else "cells" if name == "nbval" else "tests"
            _say(
                f"  → {name}: {result.passed} {unit} passed, {result.failed} failed:"
                f" {'passed' if result.ok else 'FAILED'} ({result.seconds:.0f}s)"
            )
            results.append(result)
    return results


# -- phases on a learner's scaffolds: one scratch copy, one pytest run ---------------------------


@dataclass(frozen=True)
class NotebookReport:
    """A scaffold's share of a phase check in a scratch copy: its tests and its TODOs left."""

    notebook: str
    tests: tuple[str, ...]
    passed: int
    failed: int
    todos: tuple[str, ...]
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.todos


def _dotted(test: str) -> str:
    """``tests.http.test_retry`` for ``tests/http/test_retry.py``: junit's class names."""
    return test.removesuffix(".py").strip("/").replace("/", ".")


def _junit_outcomes(xml: Path) -> list[tuple[str, bool]]:
    """(dotted test location, failed) for every test case of a pytest junit report."""
    import xml.etree.ElementTree as ET

    outcomes = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        # A collection error has no class name; its name is the module's.
        where = case.get("classname") or case.get("name") or ""
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes.append((where, failed))
    return outcomes


def _belongs(where: str, test: str) -> bool:
    dotted = _dotted(test)
    return where == dotted or where.startswith(dotted + ".")


def _tally(
    outcomes: Sequence[tuple[str, bool]], failures: Sequence[str], tests: Sequence[str]
) -> tuple[int, int, tuple[str, ...]]:
    mine = [failed for where, failed in outcomes if any(_belongs(where, t) for t in tests)]
    lines = tuple(
        line
        for line in failures
        if any(line.split(" ", 1)[1].startswith(t.rstrip("/")) for t in tests)
    )
    return mine.count(False), mine.count(True), lines


def scratch_phase(
    notebooks: Sequence[Path], tests: Sequence[str], root: Path
) -> tuple[StepResult, list[NotebookReport]]:
    """Export every notebook into one scratch copy of the package and run ``tests`` once there.

    Returns the run's totals and each notebook's part of them (the tests its checkpoint names
    and the TODO markers it still has). ``src/ingest`` is never written.
    """
    import tempfile

    start = time.monotonic()
    result = StepResult("scratch pytest", 0, 0)
    with tempfile.TemporaryDirectory(prefix="ingest-checkpoint-") as scratch:
        copy = Path(scratch)
        export = _scratch_copy(root, copy, notebooks)
        if export.returncode != 0:
            last = export.stderr.strip().splitlines()[-1:] or ["(no message)"]
            result.problems.append(f"export failed: {last[0]}")
            return result, []
        _say(f"  exported {len(notebooks)} notebooks into a scratch copy of the package: {copy}")
        _say(f"  pytest: {len(tests)} test files and folders against the scratch copy")
        junit = copy / "junit.xml"
        proc, ingest_file = _pytest_in_scratch(
            root,
            copy,
            # One module that does not import must not hide the other notebooks' results.
            # A stub can leave a test waiting (a loop that never gets its answer): bounded here.
            [
                "--continue-on-collection-errors",
                f"--timeout={_SCRATCH_TEST_TIMEOUT}",
                f"--junitxml={junit}",
                *tests,
            ],
            tb="no",
            echo=lambda line: line.rstrip().endswith("%]"),  # progress lines only
        )
        outcomes = _junit_outcomes(junit) if junit.exists() else []
    failures = _failure_lines(proc.stdout)
    result.passed, result.failed = _counts(proc.stdout, proc.stderr)
    if not ingest_file:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        result.problems.append(f"the tests did not run: {last[0]}")
    elif proc.returncode != 0 and result.failed == 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        result.problems.append(f"pytest exited {proc.returncode}: {last[0]}")
    result.seconds = time.monotonic() - start
    _say(f"  ingest imported from the scratch copy: {ingest_file or '(nothing imported)'}")
    reports = []
    for notebook in notebooks:
        own = checkpoint_tests(notebook)
        passed, failed, lines = _tally(outcomes, failures, own)
        name = f"{notebook.parent.name}/{notebook.stem}"
        reports.append(
            NotebookReport(name, tuple(own), passed, failed, tuple(todo_markers(notebook)), lines)
        )
    return result, reports


def _print_reports(reports: Sequence[NotebookReport]) -> None:
    for report in reports:
        verdict = "ok" if report.ok else "NOT YET"
        _say(f"  {report.notebook}: {verdict}")
        _say(f"    {', '.join(report.tests)}: {report.passed} passed, {report.failed} failed")
        for line in report.failures[:2]:
            _say(f"      {line}")
        if len(report.failures) > 2:
            _say(f"      … and {len(report.failures) - 2} more")
        if report.todos:
            _say(f"    TODO markers left: {len(report.todos)}")
            for todo in report.todos[:_TODOS_SHOWN]:
                _say(f"      {todo}")
            if len(report.todos) > _TODOS_SHOWN:
                _say(f"      … and {len(report.todos) - _TODOS_SHOWN} more")


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _kit_folder(kit: Path, root: Path) -> Path:
    for candidate in (kit, Path.cwd() / kit, root / kit):
        if candidate.is_dir():
            return candidate.resolve()
    raise PhaseUsageError(f"--from {kit}: no such folder")


def _print_listing(
    phase: Phase, notebooks: Sequence[Path], tests: Sequence[str], root: Path
) -> None:
    _say(f"phase {phase.number}: modules {', '.join(phase.modules)}")
    _say(f"notebooks ({len(notebooks)}):")
    for notebook in notebooks:
        _say(f"  {_shown(notebook, root)}")
    own = [test for test in tests if test not in phase.support_tests]
    _say(f"tests named by their checkpoint cells ({len(own)}):")
    for test in own:
        _say(f"  {test}")
    support = [test for test in tests if test in phase.support_tests]
    _say(f"tests of the hand-written wiring the phase relies on ({len(support)}):")
    for test in support:
        _say(f"  {test}")


def phase_main(argv: list[str] | None = None) -> int:
    """``ingest checkpoint N``: 0 if every check of the phase passes, 1 if one fails, 2 on bad usage."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="ingest checkpoint",
        description="Run exactly the checks of one phase: papermill and nbval over its notebooks,"
        " then the tests of what they export. With --from, check a learner's scaffolds instead,"
        " in a scratch copy of the package.",
    )
    parser.add_argument("phase", type=int, help="the phase: 1 = modules 01-02")
    parser.add_argument(
        "--from",
        dest="kit",
        type=Path,
        metavar="DIR",
        help="a starter kit (module folders of scaffolds), checked in a scratch copy",
    )
    parser.add_argument("--list", action="store_true", help="print what would run; run nothing")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="MODULE/NOTEBOOK",
        help="only this notebook (e.g. 01-retry-client/02-backoff) and its tests; repeatable",
    )
    args = parser.parse_args(argv)
    root = project_root()
    try:
        phase = phase_of(args.phase)
        folder = root / "notebooks" if args.kit is None else _kit_folder(args.kit, root)
        notebooks = phase_notebooks(phase, folder, args.only)
        # The wiring's tests run on the solutions; a kit changes only what its notebooks export,
        # and those exports are what the notebooks' own tests check.
        tests = phase_tests(phase, notebooks, support=not args.only and args.kit is None)
    except (PhaseUsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        _print_listing(phase, notebooks, tests, root)
        return 0
    start = time.monotonic()
    scope = f" (only {', '.join(args.only)})" if args.only else ""
    if args.kit is None:
        _say(f"phase {phase.number}{scope}: {len(notebooks)} notebooks, {len(tests)} test files")
        results = run_phase(notebooks, tests, root)
        problems = [problem for result in results for problem in result.problems]
        ok = all(result.ok for result in results)
    else:
        _say(
            f"phase {phase.number}{scope} from {_shown(folder, root)}: {len(notebooks)} notebooks,"
            f" {len(tests)} test files, in a scratch copy of the package (src/ingest is not written)"
        )
        # A scaffold stops at its first TODO, and its committed outputs are empty: papermill and
        # nbval would only report the first TODO of each notebook. The tests say more.
        _say(
            "  papermill and nbval: not run on scaffolds (they stop at the first TODO);"
            " they run on the solutions (without --from)"
        )
        result, reports = scratch_phase(notebooks, tests, root)
        _print_reports(reports)
        todos = sum(len(report.todos) for report in reports)
        _say(
            f"  → pytest: {result.passed} passed, {result.failed} failed ({result.seconds:.0f}s);"
            f" TODO markers left: {todos}"
        )
        problems = result.problems + [
            f"{report.notebook}: {report.failed} tests failing, {len(report.todos)} TODOs left"
            for report in reports
            if not report.ok
        ]
        ok = result.ok and all(report.ok for report in reports)
    elapsed = time.monotonic() - start
    if ok:
        _say(f"phase {phase.number}{scope}: PASSED ({elapsed:.0f}s)")
        return 0
    _say(f"phase {phase.number}{scope}: FAILED ({elapsed:.0f}s)")
    for problem in problems[:20]:
        _say(f"  {problem}")
    if len(problems) > 20:
        _say(f"  … and {len(problems) - 20} more")
    return 1


if __name__ == "__main__":
    sys.exit(main())
