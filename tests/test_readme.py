"""README.md, held to the code: its variables are the real ones, and every command it shows is tested.

1. Every ``INGEST_*`` variable that ``Settings`` reads is in the README, and every ``INGEST_*`` name
   the README mentions is read by the code (a Settings field, or a name the package spells out).
2. Every command in the README's ``bash`` blocks is in ``COMMAND_TESTS`` with the tests that run it,
   and each of those tests exists. A new README command fails here until a test exercises it. The
   cheap read-only ones are run for real below.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.netutil import free_port
from ingest.settings import Settings
from tests.support.cli import ingest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE = ROOT / "src" / "ingest"

SAMPLE_PARSE = "ingest s3 parse data/s3/drops/20260101T010000Z-0001/orders.json --json"
TINY_BENCH = ("--records", "200", "--page", "100", "--requests", "10", "--repeat", "1")

# README command (normalized, see `normalize`) → the tests that exercise it, "path::test_name".
_HERE = "tests/test_readme.py"
_MAKE = f"{_HERE}::test_make_targets_run_the_documented_commands"
_COMPOSE = "tests/test_compose.py"
_PHASE = "tests/test_checkpoint_phase.py"
_PHASE_MAIN = f"{_PHASE}::test_the_main_path_runs_papermill_nbval_and_the_tests_of_one_notebook"
COMMAND_TESTS: dict[str, tuple[str, ...]] = {
    "make demo": (
        _MAKE,
        "tests/test_demo.py::test_demo_lands_phase_1_as_the_generators_say_and_a_rerun_lands_nothing_twice",
    ),
    # `make test` = lint + typecheck + export --check + pytest: the Makefile check shows it runs
    # exactly these; running the whole suite from inside the suite would be circular.
    "make test": (_MAKE, "tests/test_export_sync.py::test_committed_package_matches_the_notebooks"),
    "make checkpoint PHASE=1": (_MAKE, _PHASE_MAIN),
    "make checkpoint PHASE=1 FROM=starter-kit": (
        _MAKE,
        f"{_PHASE}::test_the_untouched_starter_kit_fails_and_names_its_todos",
    ),
    "ingest demo": (
        "tests/test_demo.py::test_demo_lands_phase_1_as_the_generators_say_and_a_rerun_lands_nothing_twice",
        "tests/test_demo.py::test_demo_starts_the_stack_it_needs_when_no_service_is_given",
    ),
    "ingest checkpoint 1": (
        _PHASE_MAIN,
        f"{_PHASE}::test_a_phase_not_built_yet_is_bad_usage_and_says_so",
        f"{_PHASE}::test_services_missing_from_the_environment_are_started_and_stopped_again",
    ),
    "ingest checkpoint 1 --list": (
        f"{_PHASE}::test_list_names_exactly_the_phase_1_notebooks_and_test_files",
    ),
    "ingest stack up": ("tests/stack/test_embedded.py::test_stack_up_status_down_embedded",),
    "ingest stack status": ("tests/stack/test_embedded.py::test_stack_up_status_down_embedded",),
    "ingest stack down": ("tests/stack/test_embedded.py::test_stack_up_status_down_embedded",),
    "ingest run customers": ("tests/test_run_cli.py::test_run_the_example_source",),
    "ingest serve receiver": (
        "tests/webhooks/test_receiver_acceptance.py::test_sigkill_twice_during_load_loses_no_acknowledged_event",
        "tests/webhooks/test_receiver.py::test_serve_receiver_refuses_to_start_without_a_sources_secrets",
    ),
    "ingest relay --drain": (
        "tests/webhooks/test_receiver.py::test_ingest_relay_moves_received_events_to_landing_tables_once",
    ),
    SAMPLE_PARSE: (f"{_HERE}::test_s3_parse_of_the_sample_orders",),
    "ingest dlq list": (
        "tests/reliability/test_rest_exactly_once.py::test_dead_letters_are_listed_and_replayed_through_the_stack",
    ),
    # A full export rewrites the package; what it would write is compared with the committed one.
    "ingest export": ("tests/test_export_sync.py::test_committed_package_matches_the_notebooks",),
    "ingest check starter-kit/01-retry-client/02-backoff.ipynb": (
        "tests/test_checkpoint_starter.py::test_checkpoint_fails_on_untouched_scaffolds",
        "tests/test_cli.py::test_check_reports_a_missing_notebook_and_fails",
    ),
    "ingest --help": (f"{_HERE}::test_help_names_every_documented_command",),
    # No Docker engine in the test run: the file, its commands and its probes are checked instead.
    "docker compose up": (
        f"{_COMPOSE}::test_compose_file_validates_against_the_compose_spec",
        f"{_COMPOSE}::test_phase_one_runs_every_part",
        f"{_COMPOSE}::test_app_service_runs_a_real_cli_command",
        f"{_COMPOSE}::test_http_healthcheck_passes_against_the_app_it_probes",
    ),
    # The tag is made when the phase is complete; its checks are `ingest checkpoint 1`'s.
    "git checkout phase-1": (_PHASE_MAIN,),
    "jupyter lab": (f"{_HERE}::test_jupyter_lab_serves_the_workbook",),
    "python bench/bench_rest.py": (f"{_HERE}::test_bench_rest_runs_and_reports_ratios",),
    "set -a; . .ingest/stack.env; set +a": (f"{_HERE}::test_stack_env_can_be_sourced_by_a_shell",),
}
# `ingest GROUP --help` for every command group: run by test_help_names_every_documented_command.
HELP_GROUPS = ("stack", "db", "serve", "data", "dlq", "s3")
COMMAND_TESTS |= {
    f"ingest {group} --help": (f"{_HERE}::test_help_names_every_documented_command",)
    for group in HELP_GROUPS
}


# -- reading the README ---------------------------------------------------------------------------


def _shell_blocks(text: str) -> Iterator[str]:
    yield from re.findall(r"^```(?:bash|sh|shell)[ \t]*\n(.*?)^```", text, re.M | re.S)


def normalize(command: str) -> str:
    """One spelling per command: comments dropped, ``.venv/bin/`` and ``python -m ingest`` folded."""
    words = shlex.split(command, comments=True)
    if words and words[0].startswith(".venv/bin/"):
        words[0] = words[0].removeprefix(".venv/bin/")
    if words and re.fullmatch(r"python(3(\.\d+)?)?", words[0]):
        words[0] = "python"
    if words[:3] == ["python", "-m", "ingest"]:
        words = ["ingest", *words[3:]]
    return " ".join(words)


def readme_commands(text: str) -> list[str]:
    """The commands of the ``bash`` blocks, continuation lines joined, comments and blanks skipped."""
    commands: list[str] = []
    for block in _shell_blocks(text):
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = normalize(pending + line)
            pending = ""
            if command and command not in commands:
                commands.append(command)
    return commands


def _test_functions(path: Path) -> set[str]:
    """``name`` and ``Class::name`` of the test functions defined in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.add(node.name)
        elif isinstance(node, ast.ClassDef):
            found |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return {name for name in found if name.split("::")[-1].startswith("test_")}


def missing_tests(registry: dict[str, tuple[str, ...]]) -> list[str]:
    """Registered tests whose file or function does not exist."""
    missing: list[str] = []
    for command, node_ids in registry.items():
        if not node_ids:
            missing.append(f"{command}: no test registered")
        for node_id in node_ids:
            path, _, name = node_id.partition("::")
            file = ROOT / path
            if not file.is_file() or name.split("[")[0] not in _test_functions(file):
                missing.append(f"{command}: {node_id}")
    return missing


# -- 1. configuration -------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def code_variables() -> tuple[set[str], set[str]]:
    """``INGEST_*`` names the package spells out in full, and the prefixes it builds names from."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"INGEST_[A-Z0-9_]*[A-Z0-9]", node.value):
                    names.add(node.value)
            elif isinstance(node, ast.JoinedStr) and node.values:
                head = node.values[0]
                if isinstance(head, ast.Constant) and str(head.value).startswith("INGEST_"):
                    prefixes.add(str(head.value))
    return names, prefixes


def readme_variables(text: str) -> set[str]:
    """``INGEST_*`` names in the README; a name ending in ``_`` is a prefix (``INGEST_STACK_*``)."""
    return set(re.findall(r"\bINGEST_[A-Z0-9_]*", text))


def test_every_setting_is_in_the_readme() -> None:
    documented = readme_variables(README.read_text(encoding="utf-8"))
    missing = sorted(settings_variables() - documented)
    assert not missing, f"Settings reads these, the README does not say so: {missing}"


def test_every_variable_the_readme_names_is_read_by_the_code() -> None:
    settings = settings_variables()
    names, prefixes = code_variables()
    real = settings | names
    unknown = []
    for name in sorted(readme_variables(README.read_text(encoding="utf-8"))):
        if name.endswith("_"):
            known = any(r.startswith(name) for r in real) or any(
                p.startswith(name) or name.startswith(p) for p in prefixes
            )
        else:
            known = name in real
        if not known:
            unknown.append(name)
    assert not unknown, f"the README names variables nothing reads: {unknown}"


def test_the_variable_checks_see_what_they_should() -> None:
    # The controls for the two tests above.
    assert {"INGEST_DATABASE_URL", "INGEST_HOME", "INGEST_STACK_S3_PORT"} <= settings_variables()
    names, prefixes = code_variables()
    assert "INGEST_DATABASE_URL" in names
    assert all(prefix.startswith("INGEST_") for prefix in prefixes)
    assert not any(name.endswith("_") for name in names)
    assert readme_variables("set `INGEST_DATABASE_URL`; `INGEST_STACK_*` ports") == {
        "INGEST_DATABASE_URL",
        "INGEST_STACK_",
    }


# -- 2. commands -------------------------------------------------------------------------------------


def test_every_readme_command_is_registered_with_tests() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert commands, "the README has no ```bash block"
    unregistered = [command for command in commands if command not in COMMAND_TESTS]
    assert not unregistered, (
        f"README commands no test is registered for (add them to COMMAND_TESTS): {unregistered}"
    )


def test_every_registered_test_exists() -> None:
    assert missing_tests(COMMAND_TESTS) == []


def test_command_extraction_and_the_registry_check() -> None:
    text = (
        "```bash\n"
        "make demo   # starts the stack\n"
        "\n"
        "# a comment\n"
        ".venv/bin/ingest s3 parse \\\n"
        "    data/x.json --json\n"
        "python3 -m ingest stack up\n"
        ".venv/bin/python bench/bench_rest.py\n"
        "set -a; . .ingest/stack.env; set +a\n"
        "```\n"
        "```python\nprint('not a shell command')\n```\n"
    )
    assert readme_commands(text) == [
        "make demo",
        "ingest s3 parse data/x.json --json",
        "ingest stack up",
        "python bench/bench_rest.py",
        "set -a; . .ingest/stack.env; set +a",
    ]
    assert missing_tests({"x": (f"{_HERE}::test_every_registered_test_exists",)}) == []
    assert missing_tests({"x": (f"{_HERE}::test_nothing_like_this",)}) == [
        f"x: {_HERE}::test_nothing_like_this"
    ]
    assert missing_tests({"x": ("tests/no_such_file.py::test_x",), "y": ()}) == [
        "x: tests/no_such_file.py::test_x",
        "y: no test registered",
    ]


# -- the cheap commands, run for real -------------------------------------------------------------------


def test_help_names_every_documented_command() -> None:
    top = ingest("--help")
    assert top.returncode == 0, top.stderr
    documented = [
        c.split()[1:] for c in readme_commands(README.read_text()) if c.startswith("ingest ")
    ]
    for words in documented:
        assert words[0] in top.stdout, f"`ingest --help` does not list {words[0]!r}"
    for group in HELP_GROUPS:
        result = ingest(group, "--help")
        assert result.returncode == 0, result.stderr
        for words in documented:
            if words[0] == group and len(words) > 1 and not words[1].startswith("-"):
                assert words[1] in result.stdout, f"`ingest {group} --help` lacks {words[1]!r}"


def test_s3_parse_of_the_sample_orders() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingest", *shlex.split(SAMPLE_PARSE)[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert (parsed["format"], parsed["bad_rows"], parsed["error"]) == ("json", 0, None)
    assert parsed["rows"] > 0 and "order_id" in parsed["columns"]


def test_stack_env_can_be_sourced_by_a_shell(tmp_path: Path) -> None:
    # The session's stack wrote its stack.env the way `ingest stack up` does.
    written = Path(os.environ["INGEST_HOME"]) / "stack.env"
    assert written.is_file(), "the session's stack wrote no stack.env"
    (tmp_path / ".ingest").mkdir()
    shutil.copy(written, tmp_path / ".ingest" / "stack.env")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    command = "set -a; . .ingest/stack.env; set +a"
    shell = subprocess.run(
        ["bash", "-c", f"{command}; env -0"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    exported = dict(item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
    from_file = Settings(_env_file=written)  # type: ignore[call-arg]
    for name in ("database_url", "redis_url", "s3_endpoint_url", "mock_api_url"):
        assert exported[f"INGEST_{name.upper()}"] == getattr(from_file, name), name


def test_make_targets_run_the_documented_commands() -> None:
    # `make -n` prints what a target would run without running it (prerequisites included).
    expected = {
        ("demo",): ["ingest demo"],
        ("test",): ["ruff check", "mypy", "ingest export --check", "-m pytest tests notebooks"],
        ("checkpoint", "PHASE=1"): ["ingest checkpoint 1"],
        ("checkpoint", "PHASE=1", "FROM=starter-kit"): ["ingest checkpoint 1 --from starter-kit"],
    }
    for args, commands in expected.items():
        plan = subprocess.run(
            ["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert plan.returncode == 0, f"make -n {' '.join(args)}: {plan.stderr}"
        lines = [line.strip() for line in plan.stdout.splitlines()]
        for command in commands:
            assert any(command in line for line in lines), (
                f"`make {' '.join(args)}` does not run `{command}`:\n{plan.stdout}"
            )
    # The checkpoint runs exactly the phase asked for, with or without a starter kit.
    plain = subprocess.run(
        ["make", "-n", "checkpoint", "PHASE=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--from" not in plain.stdout


def test_jupyter_lab_serves_the_workbook(tmp_path: Path) -> None:
    port, token = free_port(), "readme-test"
    argv = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={ROOT}",
    ]
    if os.geteuid() == 0:  # Jupyter refuses root unless told; a learner is not root
        argv.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    log = tmp_path / "jupyter.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base}/api/status", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "jupyter lab did not answer in 120 s"
            time.sleep(0.2)
        listing = httpx.get(f"{base}/api/contents/notebooks", headers=headers).json()
        folders = {item["name"] for item in listing["content"] if item["type"] == "directory"}
        assert "01-retry-client" in folders, folders
        kernels = httpx.get(f"{base}/api/kernelspecs", headers=headers).json()["kernelspecs"]
        assert "python3" in kernels
        assert httpx.get(f"{base}/lab", headers=headers).status_code == 200
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_bench_rest_runs_and_reports_ratios() -> None:
    # The README's command with the smallest sizes: it must run, not measure anything here.
    result = subprocess.run(
        [sys.executable, "bench/bench_rest.py", *TINY_BENCH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "per request: bare httpx" in result.stdout
    assert "x the bare loop" in result.stdout


@pytest.mark.parametrize(
    "command",
    sorted(c for c in COMMAND_TESTS if c.startswith("ingest ") and not c.endswith("--help")),
)
def test_registered_ingest_commands_parse(command: str) -> None:
    # Every registered `ingest …` command names a real command and parses with its options.
    import typer

    import ingest.cli
    from tests.test_compose import check_invocation

    check_invocation(typer.main.get_command(ingest.cli.app), shlex.split(command)[1:])
