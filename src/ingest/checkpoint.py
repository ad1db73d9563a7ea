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
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CheckpointResult",
    "ScratchCheck",
    "check_in_scratch",
    "checkpoint_tests",
    "main",
    "project_root",
    "run_checkpoint",
    "scratch_check",
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
    import shutil
    import tempfile

    root = (root or project_root()).resolve()
    path = _resolve(notebook, root)
    shown = str(notebook)
    test_list = tests if tests is not None else checkpoint_tests(path)
    modules = _exported_modules(path)
    todos = tuple(todo_markers(path))
    with tempfile.TemporaryDirectory(prefix="ingest-checkpoint-") as scratch:
        copy = Path(scratch)
        shutil.copy2(root / "pyproject.toml", copy / "pyproject.toml")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(root / "src" / "ingest", copy / "src" / "ingest", ignore=ignore)
        target = copy / "notebooks" / path.parent.name / path.name
        target.parent.mkdir(parents=True)
        shutil.copy2(path, target)
        # A subprocess: nbdev reads its settings from the working directory, which must not move
        # under a running notebook kernel.
        export = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from nbdev.export import nb_export;"
                " nb_export(sys.argv[1], lib_path='src/ingest')",
                str(target.relative_to(copy)),
            ],
            cwd=copy,
            capture_output=True,
            text=True,
            check=False,
        )
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
        (copy / "probe").mkdir()
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
        pytest += ["-p", _PROBE_MODULE]
        proc = subprocess.run(
            [*pytest, *test_list],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        ingest_file = probe_file.read_text(encoding="utf-8") if probe_file.exists() else ""
        if ingest_file and not Path(ingest_file).is_relative_to(copy / "src" / "ingest"):
            # The whole point of the scratch copy: never report on the package's own modules.
            raise RuntimeError(
                f"the tests imported ingest from {ingest_file}, not from the scratch copy"
                f" {copy / 'src'}"
            )
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


if __name__ == "__main__":
    sys.exit(main())
