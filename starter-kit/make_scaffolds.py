"""Make the learner's scaffolds of module 01 from its solution notebooks.

Run from anywhere: ``.venv/bin/python starter-kit/make_scaffolds.py`` rewrites
``starter-kit/01-retry-client/*.ipynb``; ``--check`` only reports scaffolds that differ from a
fresh generation (exit 1), ``--out DIR`` writes somewhere else, ``--list`` prints what was stubbed.

A scaffold is its solution notebook with the same narrative and cells, and these changes:

* In every export cell (``#| export``, ``#| exporti``, ``#| exports``) the body of each function and
  method is replaced by ``raise NotImplementedError("TODO(01-NN): ...")``. Imports, constants,
  signatures, type hints, decorators and docstrings stay, so the exported module still imports and
  the tests fail on the TODO, not on a missing name. The code is edited as text at the line ranges
  that :mod:`ast` reports, so comments and layout elsewhere in the cell are kept as written.
* Bodies are kept, not stubbed, when they are plumbing rather than the lesson: the names listed in
  :data:`PLANS` for that notebook; the construction and display dunders of :data:`ALWAYS_KEEP`
  (they show the learner which attributes exist); and bodies with nothing to implement (only a
  docstring, ``...``, ``pass`` or ``return None``, as in protocols and abstract methods).
* The TODO text is the notebook's hint for the name if :data:`PLANS` has one, else the first
  paragraph of its docstring. A stub with neither gets a generic text and a warning on stderr
  (the test fails on it): a helper added to a solution later is either kept or given a hint.
* A generator stays a generator (an unreachable ``yield`` follows the ``raise``), so
  ``async for`` over an async-generator stub fails with the TODO rather than a ``TypeError``.
* The checkpoint cell calls ``ingest.checkpoint.check_in_scratch`` on the scaffold itself, with the
  solution's test list: it exports into a scratch copy of the package and never into ``src/ingest``.
* Outputs, execution counts and volatile metadata are cleared; cell ids are the solution's.

The output depends only on the solution notebooks and this file: running it twice gives identical
files, and ``tests/test_checkpoint_starter.py`` checks the committed scaffolds against a fresh run.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "01-retry-client"
SCAFFOLDS = Path(__file__).resolve().parent / "01-retry-client"
MODULE = "01"
LINE_LENGTH = 100  # the project's ruff line length: long stubs are wrapped the way ruff would

# Dunders whose bodies are construction or display plumbing in every notebook.
ALWAYS_KEEP = frozenset({"__init__", "__post_init__", "__repr__", "__str__"})

_EXPORT_DIRECTIVE = re.compile(r"^\s*#\|\s*export[is]?\b", re.MULTILINE)
_CHECKPOINT_IMPORT = "from ingest.checkpoint import run_checkpoint"


@dataclass(frozen=True)
class Plan:
    """What stays intact in one notebook's export cells, and TODO texts for undocumented stubs."""

    keep: frozenset[str] = frozenset()  # qualified names: "function" or "Class.method"
    hints: Mapping[str, str] = field(default_factory=dict)  # qualified name → one-line TODO


def names(text: str) -> frozenset[str]:
    """A set of qualified names written one or more to a line, separated by whitespace."""
    return frozenset(text.split())


# One entry per notebook of the module. ``keep`` names plumbing: helpers for messages, parsing,
# validation, SQL round trips and buffering that the narrative explains but does not build.
PLANS: dict[str, Plan] = {
    # Nothing to implement: the local stack is given.
    "00-local-stack": Plan(keep=names("stack_urls")),
    "01-httpx-basics": Plan(
        keep=names("""
            _is_secret_param redact_url describe_request response_excerpt
            _request_of _request_of_error
        """),
        hints={
            "WrappingTransport.handle_request": "pass the request straight through (forward it)",
            "WrappingTransport.handle_async_request": "pass the request straight through (aforward)",
            "WrappingTransport.close": "close the inner transport when it is a sync one",
            "WrappingTransport.aclose": "close the inner transport when it is an async one",
        },
    ),
    "02-backoff": Plan(
        keep=names("""
            utc_now _aware _rfc850_year parse_http_date _x_ratelimit_hint _ietf_ratelimit_hint
            describe_outcome RetryPolicy.retrying RetryPolicy.async_retrying RetryPolicy._strategies
            _last_outcome _buffered RetryTransport._collector RetryTransport._finish
            RetryTransport._attempt RetryTransport._attempt_async
        """),
        hints={
            "wait_full_jitter.__call__": "a uniform random wait between 0 and the ceiling",
            "retry_if_status.__call__": "True when the outcome is a response that asks to be retried",
            "retry_if_replayable.__call__": "True while the request is safe to send again",
            "wait_retry_after.__call__": "the server's capped hint if there is one, else the fallback",
            "RetryTransport.handle_request": (
                "send the request under the policy's Retrying; count attempts, report retries,"
                " hand back the last response or raise the last error"
            ),
            "RetryTransport.handle_async_request": "the async twin of handle_request",
        },
    ),
    "03-token-bucket": Plan(
        keep=names("""
            _check_limits _check_cost _check_drain LocalTokenBucket._state _unreachable _parse_reply
            _RedisBucketBase.redis_key _RedisBucketBase._args _RedisBucketBase._local_if_active
            _RedisBucketBase._degrade RedisTokenBucket._run AsyncRedisTokenBucket._run
            request_host RateLimitTransport._cost RateLimitTransport._server_now
        """),
        hints={
            "RateLimitTransport._drain_seconds": (
                "seconds to drain the bucket after a 429: the server's hint capped at max_drain,"
                " else drain_without_hint"
            ),
            "RateLimitTransport.handle_request": (
                "take the request's tokens, forward it, and drain the bucket on a 429"
            ),
            "RateLimitTransport.handle_async_request": "the async twin of handle_request",
        },
    ),
    "04-fingerprints": Plan(
        keep=names("""
            _canonical_pairs body_digest
            IdempotencyRecord.completed IdempotencyStore.record_completed IdempotencyStore.get
            IdempotencyStore.prune IdempotencyStore._get
            IdempotencyTransport._begin IdempotencyTransport._replayed IdempotencyTransport._rebuilt
            IdempotencyTransport._buffered IdempotencyTransport._abuffered
            IdempotencyTransport.close IdempotencyTransport.aclose
        """),
        hints={
            "IdempotencyTransport.handle_request": (
                "for unsafe methods: claim the fingerprint, replay a completed one, send with the"
                " Idempotency-Key, then mark it completed or failed"
            ),
            "IdempotencyTransport.handle_async_request": (
                "the async twin of handle_request (store calls off the event loop)"
            ),
        },
    ),
    "05a-pagination": Plan(
        keep=names("""
            parse_path select_path _request_of decode_json _top_level_keys select_records
            set_query_params set_url _check_int _check_name _check_flag _check_path _count_at
            BasePaginator.has_next_page BasePaginator.init_request _known _check_params
            Page.status_code Page.headers _first_request _decode_errors_only _fetch
            _async_decode_errors_only _afetch
        """),
        hints={
            "SinglePagePaginator.update_state": "there is never a next page",
            "JSONResponseCursorPaginator.init_request": "start the walk without a cursor",
            "JSONResponseCursorPaginator.update_state": (
                "read the cursor at cursor_path; no cursor (null or empty) means the last page"
            ),
            "JSONResponseCursorPaginator.update_request": "send the cursor as cursor_param",
            "OffsetPaginator.init_request": "start at the initial offset; set offset and limit",
            "OffsetPaginator.update_state": (
                "advance the offset by limit; stop past the total or after a short page"
            ),
            "OffsetPaginator.update_request": "set the offset and limit query parameters",
            "PageNumberPaginator.init_request": "start at the initial page; set page_param",
            "PageNumberPaginator.update_state": (
                "stop on an empty page, the page count or maximum_page; else go to the next page"
            ),
            "PageNumberPaginator.update_request": "set the page query parameter",
            "_NextURLPaginator.init_request": "start the walk without a next URL",
            "_NextURLPaginator._found": "remember the next URL; none (null or empty) ends the walk",
            "_NextURLPaginator.update_request": "point the request at the next URL",
            "HeaderLinkPaginator.update_state": "the next URL is the Link header's rel=next URL",
            "JSONLinkPaginator.update_state": "the next URL is in the body at next_url_path",
        },
    ),
    "05b-watermarks": Plan(
        keep=names("""
            _as_utc parse_value kind_of format_value _to_document _from_document
            Watermark.kind WatermarkStore.get _check_lookback
        """),
        hints={
            "_require_transaction": "refuse a connection outside a transaction (ConfigError)",
        },
    ),
    "06a-breaker": Plan(
        keep=names("""
            CircuitBreaker.state CircuitBreaker._probe_timeout CircuitBreaker._transition
            _registered BreakerMetrics.track BreakerMetrics._on_transition
            BreakerRegistry.get BreakerRegistry.states
        """),
        hints={
            "CircuitBreaker._refresh": "an open breaker whose cool-down has passed turns half-open",
            "CircuitBreaker._remember": (
                "record an outcome in the window and forget the ones older than the window"
            ),
            "CircuitBreaker._rate_exceeded": (
                "enough calls in the window, and the failure share at or above failure_rate"
            ),
            "CircuitBreakerTransport._judge": (
                "record a failure for a status that says the host is unwell, else a success"
            ),
            "CircuitBreakerTransport.handle_request": (
                "ask the host's breaker before forwarding; record the outcome (or release it)"
            ),
            "CircuitBreakerTransport.handle_async_request": "the async twin of handle_request",
        },
    ),
    "06b-dlq": Plan(
        keep=names("""
            is_secret redact_headers _redacted_url _body_excerpt DeadLetter.resolved
            DeadLetterQueue.put DeadLetterQueue.list DeadLetterQueue.get
            DeadLetterQueue.mark_replayed
        """),
    ),
    "07-landing": Plan(
        keep=names("""
            pg_type LandingTable.ident MergeResult.unchanged _looks_like_timestamps column_type
            encode_csv merge_arrow _unique_keys
        """),
        hints={
            "_merge": (
                "COPY the CSV into a staging table, then INSERT … ON CONFLICT DO UPDATE into the"
                " target: newest row per key, only newer and changed rows overwrite"
            ),
        },
    ),
    "08-assembled-client": Plan(keep=names("build_client")),
    "09-rest-runner": Plan(
        keep=names("policy_for client_for _max_cursor prefetch relaxed_gc _log_start _log_finish"),
    ),
    "09b-parallel-runs": Plan(
        keep=names("""
            _check_share _count StridedOffsetPaginator.init_request
            StridedPageNumberPaginator.init_request pagination_type in_transaction merge_batch
            _incremental_cursor _share_of _until _tag _pull_share _worker_main _sum_into
            _supervise _in_one_process run_parallel
        """),
        hints={
            "StridedOffsetPaginator.update_state": (
                "after a full page, jump ``workers`` pages ahead (offset += workers * limit); stop"
                " on a short or empty page, or past the total"
            ),
            "StridedPageNumberPaginator.update_state": (
                "after a full page, jump ``workers`` pages ahead; stop on a short or empty page,"
                " past the total or past maximum_page"
            ),
            "split_pagination": (
                "one strided paginator per worker for offset and page-number pagination; None when"
                " each page names the next (cursor, Link, next-URL) or there is one page"
            ),
            "_highest": "the watermark the run may advance to: the newest cursor any worker committed",
        },
    ),
}


# -- editing one export cell --------------------------------------------------------------------

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Module-level functions and the methods of (nested) classes, with qualified names.

    Functions nested in functions are part of their parent's body and are not visited.
    """
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")


def _docstring_node(func: Function) -> ast.Expr | None:
    first = func.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def _is_empty(func: Function) -> bool:
    """Nothing to implement: only a docstring, ``...``, ``pass`` or ``return None``."""
    body = func.body[1:] if _docstring_node(func) else func.body
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and stmt.value.value is Ellipsis
        ):
            continue
        if isinstance(stmt, ast.Return) and (
            stmt.value is None
            or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None)
        ):
            continue
        return False
    return True


def _is_generator(func: Function) -> bool:
    """Whether ``func`` itself yields (not a function or class nested in it)."""
    pending: list[ast.AST] = list(func.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return False


def _summary(func: Function) -> str | None:
    """The first paragraph of the docstring, on one line."""
    doc = ast.get_docstring(func)
    if not doc:
        return None
    # Markdown's single backticks read better than reST's double ones in a one-line message.
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("``", "`")


def _string_literal(text: str) -> str:
    """``text`` as a Python string literal, quoted the way ruff format would quote it."""
    escaped = text.replace("\\", "\\\\")
    if '"' in text and "'" not in text:
        return "'" + escaped + "'"
    return '"' + escaped.replace('"', '\\"') + '"'


def _stub_lines(indent: str, message: str, generator: bool) -> list[str]:
    literal = _string_literal(message)
    line = f"{indent}raise NotImplementedError({literal})"
    if len(line) > LINE_LENGTH:  # as ruff format wraps it
        lines = [f"{indent}raise NotImplementedError(", f"{indent}    {literal}", f"{indent})"]
    else:
        lines = [line]
    if generator:
        lines.append(f"{indent}yield  # unreachable: keeps this a generator, like the solution")
    return lines


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


@dataclass
class Stub:
    """One function body replaced by a TODO."""

    qualname: str
    message: str


def stub_cell(source: str, *, tag: str, plan: Plan, seen: set[str]) -> tuple[str, list[Stub]]:
    """``source`` of one export cell with every non-kept function body replaced by a TODO.

    Adds the qualified names found to ``seen`` (to check ``plan`` against the notebook).
    """
    lines = source.split("\n")
    tree = ast.parse(source)
    edits: list[tuple[int, int, list[str]]] = []  # 0-based [start, end) line ranges, new lines
    stubs: list[Stub] = []
    for qualname, func in _functions(tree.body):
        seen.add(qualname)
        if qualname in plan.keep or func.name in ALWAYS_KEEP or _is_empty(func):
            continue
        docstring = _docstring_node(func)
        first = func.body[0]
        if first.lineno == func.lineno:
            raise ValueError(f"{qualname}: a body on the line of its `def` cannot be stubbed")
        # Replace from the line after the docstring, or else after the signature (comments
        # before the first statement belong to the body) ...
        if docstring is not None:
            assert docstring.end_lineno is not None
            start = docstring.end_lineno  # 0-based index of the line after the docstring
        else:
            start = first.lineno - 1
            while start > func.lineno and (
                _is_comment(lines[start - 1]) or not lines[start - 1].strip()
            ):
                start -= 1
        # ... to the last statement, plus the comments indented under the `def` that follow it.
        end = func.end_lineno
        assert end is not None
        while (
            end < len(lines)
            and _is_comment(lines[end])
            and _indent_of(lines[end]) > func.col_offset
        ):
            end += 1
        summary = plan.hints.get(qualname) or _summary(func)
        if summary is None:
            # A helper added to a solution after PLANS was written: say so, but still stub it.
            print(f"warning: {tag} {qualname}: no docstring and no hint in PLANS", file=sys.stderr)
            summary = "implement it as the narrative above describes"
        message = f"TODO({MODULE}-{tag}): {qualname} — {summary}"
        indent = " " * (docstring or first).col_offset
        edits.append((start, end, _stub_lines(indent, message, _is_generator(func))))
        stubs.append(Stub(qualname, message))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    result = "\n".join(lines)
    ast.parse(result)  # the scaffold must stay valid Python
    return result, stubs


# -- the checkpoint cell ------------------------------------------------------------------------


def _checkpoint_call(source: str) -> ast.Call | None:
    if "run_checkpoint(" not in source:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: a demo, not the checkpoint
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "run_checkpoint"
        ):
            return node
    return None


def scaffold_checkpoint(source: str, notebook: str) -> str:
    """The checkpoint cell of a scaffold: the solution's tests, checked in a scratch copy."""
    call = _checkpoint_call(source)
    assert call is not None
    tests = next((kw.value for kw in call.keywords if kw.arg == "tests"), None)
    if tests is None:
        raise ValueError(f"{notebook}: the checkpoint cell has no tests=[...]")
    test_list = ast.literal_eval(tests)
    if not (isinstance(test_list, list) and all(isinstance(t, str) for t in test_list)):
        raise ValueError(f"{notebook}: tests=[...] must be a list of strings")
    args = [_string_literal(notebook), "tests=[" + ", ".join(map(_string_literal, test_list)) + "]"]
    one_line = f"check_in_scratch({', '.join(args)})"
    if len(one_line) > LINE_LENGTH:
        call_text = "check_in_scratch(\n" + "".join(f"    {arg},\n" for arg in args) + ")"
    else:
        call_text = one_line
    lines = source.split("\n")
    assert call.end_lineno is not None
    before = lines[: call.lineno - 1]
    if _CHECKPOINT_IMPORT not in before:
        raise ValueError(f"{notebook}: expected `{_CHECKPOINT_IMPORT}` before the checkpoint call")
    before[before.index(_CHECKPOINT_IMPORT)] = "from ingest.checkpoint import check_in_scratch"
    comment = [
        "# Exports THIS notebook (save it first) into a scratch copy of the package, never into",
        "# src/ingest, and runs the tests of what it exports. Jupyter runs a notebook in its own",
        "# folder, so the file name is enough; from the project root use",
        f"# `.venv/bin/python -m ingest.checkpoint starter-kit/01-retry-client/{notebook}`.",
    ]
    return "\n".join([*before, *comment, call_text, *lines[call.end_lineno :]])


# -- whole notebooks ----------------------------------------------------------------------------
# nbformat is untyped; these three wrappers are the only places that call it.


def _read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def _node(value: dict[str, Any]) -> Any:
    return nbformat.from_dict(value)  # type: ignore[no-untyped-call]


def _writes(nb: Any) -> str:
    """The notebook as nbformat writes it (validated), ending in a newline as Jupyter saves it."""
    nbformat.validate(nb)
    text: str = nbformat.writes(nb)  # type: ignore[no-untyped-call]
    return text + "\n"


def tag_of(name: str) -> str:
    """``"02"`` for ``02-backoff``, ``"05a"`` for ``05a-pagination``."""
    return name.split("-", 1)[0]


def scaffold(nb: Any, name: str) -> tuple[Any, list[Stub]]:
    """The scaffold of solution notebook ``name`` (without ``.ipynb``), and its stubs."""
    plan = PLANS[name]
    tag = tag_of(name)
    out = copy.deepcopy(nb)
    # Only what the notebook means: no execution timestamps, no interpreter version.
    out.metadata = _node(
        {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}
    )
    seen: set[str] = set()
    stubs: list[Stub] = []
    checkpoints = 0
    for cell in out.cells:
        tags = cell.metadata.get("tags")
        cell.metadata = _node({"tags": list(tags)} if tags else {})
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if _EXPORT_DIRECTIVE.search(cell.source):
            cell.source, cell_stubs = stub_cell(cell.source, tag=tag, plan=plan, seen=seen)
            stubs.extend(cell_stubs)
        elif _checkpoint_call(cell.source) is not None:
            cell.source = scaffold_checkpoint(cell.source, f"{name}.ipynb")
            checkpoints += 1
    unknown = sorted(set(plan.keep) - seen) + sorted(set(plan.hints) - seen)
    if unknown:
        raise ValueError(f"{name}: PLANS names what its export cells do not define: {unknown}")
    if checkpoints != 1:
        raise ValueError(f"{name}: expected one checkpoint cell, found {checkpoints}")
    return out, stubs


def generate(out_dir: Path, solutions: Path = SOLUTIONS) -> dict[str, list[Stub]]:
    """Write every scaffold into ``out_dir``; return the stubs of each notebook."""
    found = sorted(path.stem for path in solutions.glob("*.ipynb"))
    if found != sorted(PLANS):
        raise ValueError(f"PLANS covers {sorted(PLANS)}, the solutions are {found}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in sorted(PLANS):
        nb = _read(solutions / f"{name}.ipynb")
        result, stubs = scaffold(nb, name)
        (out_dir / f"{name}.ipynb").write_text(_writes(result), encoding="utf-8")
        report[name] = stubs
    return report


def differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Scaffold file names that are missing, extra or different between the two folders."""
    expected = {p.name: p.read_bytes() for p in expected_dir.glob("*.ipynb")}
    actual = {p.name: p.read_bytes() for p in actual_dir.glob("*.ipynb")}
    return sorted(n for n in expected.keys() | actual.keys() if expected.get(n) != actual.get(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=SCAFFOLDS, help="where to write the scaffolds")
    parser.add_argument("--check", action="store_true", help="only compare with --out; exit 1")
    parser.add_argument("--list", action="store_true", help="print every stub's TODO")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="scaffolds-") as fresh:
            generate(Path(fresh))
            drift = differences(Path(fresh), args.out)
        for name in drift:
            print(f"{args.out / name}: differs from a fresh generation")
        return 1 if drift else 0
    report = generate(args.out)
    for name, stubs in report.items():
        print(f"{name}: {len(stubs)} TODOs")
        if args.list:
            for stub in stubs:
                print(f"    {stub.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
