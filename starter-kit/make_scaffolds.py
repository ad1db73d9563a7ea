"""Make the learner's scaffolds of modules 01 and 02 from their solution notebooks.

Run from anywhere: ``.venv/bin/python starter-kit/make_scaffolds.py`` rewrites
``starter-kit/01-retry-client/*.ipynb`` and ``starter-kit/02-webhooks-s3/*.ipynb``; ``--check``
only reports scaffolds that differ from a fresh generation (exit 1), ``--out DIR`` writes the
module folders under ``DIR`` instead, ``--list`` prints what was stubbed.

A scaffold is its solution notebook with the same narrative and cells, and these changes:

* In every export cell (``#| export``, ``#| exporti``, ``#| exports``) the body of each function and
  method is replaced by ``raise NotImplementedError("TODO(MM-NN): ...")`` (module, notebook). Imports, constants,
  signatures, type hints, decorators and docstrings stay, so the exported module still imports and
  the tests fail on the TODO, not on a missing name. The code is edited as text at the line ranges
  that :mod:`ast` reports, so comments and layout elsewhere in the cell are kept as written.
* Bodies are kept, not stubbed, when they are plumbing rather than the lesson: the names listed in
  :data:`PLANS` for that module and notebook; the construction and display dunders of :data:`ALWAYS_KEEP`
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
NOTEBOOKS = ROOT / "notebooks"  # one folder per module: the solutions
KIT = Path(__file__).resolve().parent  # the same folders: the scaffolds
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


# One entry per notebook of module 01. ``keep`` names plumbing: helpers for messages, parsing,
# validation, SQL round trips and buffering that the narrative explains but does not build.
PLANS_01: dict[str, Plan] = {
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

# Module 02. The lesson is signature verification, the Bloom ring and its durable confirmation,
# group commit and the outbox relay, drop checks and manifest claims and leases, format detection
# and bad rows, and the loader's COPY path; ``keep`` names the S3 and SQL plumbing, the readers'
# buffering and the configuration checks around them.
PLANS_02: dict[str, Plan] = {
    # Signing as Stripe and Standard Webhooks senders do is given (the tests sign their deliveries
    # with it when they are imported); verifying is the exercise.
    "01-signatures": Plan(
        keep=names("""
            _header _parse_unix_seconds _check_config _hmac_sha256 StripeScheme._signature
            StripeScheme.sign _standard_secret StandardWebhooksScheme._signature
            StandardWebhooksScheme.sign _json_pointer HmacSha256Scheme._content
            HmacSha256Scheme._encode HmacSha256Scheme._decode create_scheme
        """),
        hints={
            "_any_match": (
                "True if `expected` equals any candidate, compared in constant time"
                " (hmac.compare_digest, no early return)"
            ),
        },
    ),
    "02-dedup": Plan(
        keep=names("""
            event_id_for _check_rate _new_bloom GenerationalBloom.window_seconds
            GenerationalBloom.size_bytes GenerationalBloom.max_size_bytes
            GenerationalBloom.live_since GenerationalBloom._slice GenerationalBloom._current_slice
            dedup_key Deduplicator.record_missed_duplicate
        """),
        hints={
            "GenerationalBloom.__contains__": (
                "expire old generations, then ask the live ones (newest first) whether they may"
                " hold `key`"
            ),
        },
    ),
    "03-inbox-outbox": Plan(
        keep=names("""
            InboundEvent.key _Row.encode _set_search_path _Backoff.remaining _Backoff.failed
            _Backoff.succeeded _WriterConnection.insert _WriterConnection._connection
            _WriterConnection._unavailable _WriterConnection.close GroupCommitStats.durable
            _Waiter.key GroupCommitter.__aenter__ GroupCommitter.__aexit__ GroupCommitter.start
            GroupCommitter._configure GroupCommitter.aclose GroupCommitter.exists
            GroupCommitter._write_each GroupCommitter._settle GroupCommitter._fail
            _name_part landing_table_name _ensure_landing _forget_landing _is_row_failure
            _error_text run_relay _relay_worker
        """),
        hints={
            "_relay_round": (
                "in one transaction: claim due outbox rows FOR UPDATE SKIP LOCKED, apply them per"
                " landing table, mark them delivered, and back off the rows that failed"
            ),
        },
    ),
    # A walk-through of the hand-written receiver: nothing is exported, nothing to implement.
    "04-receiver": Plan(),
    "05-s3-manifest": Plan(
        keep=names("""
            map_s3_errors ObjectInfo.md5 _object_info list_objects DropManifest.entry
            DropManifest.to_json _optional _manifest_file parse_manifest DropStatus.problems
            DropStatus.reason _folder is_data_name read_manifest _db_now DropLog.drops
            DropLog.manifest_of worker_id ObjectManifest.get ObjectManifest.objects
            ObjectManifest.summary ScanReport.ready ScanReport.waiting ScanReport.overdue
        """),
        hints={
            "_against_manifest": (
                "compare the listed objects with the producer manifest: missing, wrong size, wrong"
                " MD5 and unlisted files; ready only when nothing is missing or wrong"
            ),
            "DropLog._track_one": (
                "upsert the drop's row (waiting_since kept while it waits) and report it overdue"
                " once, by the scan that sets overdue_at"
            ),
            "ObjectManifest._finish": (
                "set the object's final state, only while `owner` holds the lease; raise LeaseLost"
                " if it does not"
            ),
        },
    ),
    "06-parsers": Plan(
        keep=names("""
            decompress_head _Borrowed.readable _Borrowed.seekable _Borrowed.readinto
            _Borrowed.seek _Borrowed.tell _Input._read_head _Input.spool _Input.open _Input.close
            Parsed._report Parsed.pop_bad_rows Parsed._readers Parsed.__iter__ Parsed._described
            Parsed.read_all Parsed.close Parsed.__enter__ Parsed.__exit__ _widen parse _text_head
            _CsvChunker.chunks _CsvChunker._guess _CsvChunker._last_record_end _CsvChunker._plain
            _CsvChunker._lex _csv_record _read_ahead _CsvReader.batches _CsvReader._parse
            _CsvReader._read _CsvReader._read_first _CsvReader._first_chunk _CsvReader._settle
            _CsvReader._emit _CsvReader._why
            _record_number _JsonChunk.line _JsonChunk.raw _JsonDocument.chunks _JsonDocument._feed
            _JsonDocument._split _json_kind _JsonReader.batches _JsonReader._pinned
            _JsonReader._read _JsonReader._whole _JsonReader._by_line _JsonReader._learn
            _JsonReader._conform _json_default
        """),
    ),
    "07-s3-loader": Plan(
        keep=names("""
            s3_client_for S3Body.readable S3Body.close landing_types _numbers
            LandingWriter._columns LandingWriter.prepare object_context LeaseHeartbeat.__enter__
            LeaseHeartbeat.__exit__ S3RunResult.objects S3RunResult.add _borrowed
            S3Loader._load_conn S3Loader._reset S3Loader.close S3Loader.__enter__ S3Loader.__exit__
            S3Loader.scan S3Loader.claim S3Loader.counts S3Loader.in_flight S3Loader.promised_rows
            S3Loader.load_next S3Loader._original_bytes S3Loader._quarantine S3Loader._fail
            run_s3_source _scan _log_start _log_finish
        """),
        hints={
            "S3Body.readinto": (
                "read into `buffer` from the S3 body; a broken read is a transient ConnectError,"
                " not a short (corrupt) file"
            ),
            "LandingWriter._copy": (
                "COPY `payload` into the landing table in a savepoint; on a unique violation switch"
                " to merging and return False"
            ),
            "LeaseHeartbeat._run": (
                "renew the lease every `interval` until stopped; remember LeaseLost and stop, log"
                " other errors and keep going"
            ),
            "S3Loader._load": (
                "parse the object's body in chunks, land each (bad rows to dead letters), check the"
                " counts, and mark it loaded in the same transaction"
            ),
        },
    ),
}

# Module folder (under notebooks/ and starter-kit/) → its notebooks' plans.
PLANS: dict[str, dict[str, Plan]] = {"01-retry-client": PLANS_01, "02-webhooks-s3": PLANS_02}


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

    ``tag`` is the marker's module and notebook, ``"01-02"`` in ``TODO(01-02): …``.

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
        message = f"TODO({tag}): {qualname} — {summary}"
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


def scaffold_checkpoint(source: str, notebook: str, folder: str) -> str:
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
        f"# `.venv/bin/python -m ingest.checkpoint starter-kit/{folder}/{notebook}`.",
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


def module_of(folder: str) -> str:
    """``"02"`` for ``02-webhooks-s3``."""
    return folder.split("-", 1)[0]


def tag_of(name: str) -> str:
    """``"02"`` for ``02-backoff``, ``"05a"`` for ``05a-pagination``."""
    return name.split("-", 1)[0]


def scaffold(nb: Any, name: str, folder: str) -> tuple[Any, list[Stub]]:
    """The scaffold of solution notebook ``folder/name`` (without ``.ipynb``), and its stubs."""
    plan = PLANS[folder][name]
    tag = f"{module_of(folder)}-{tag_of(name)}"
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
            cell.source = scaffold_checkpoint(cell.source, f"{name}.ipynb", folder)
            checkpoints += 1
    unknown = sorted(set(plan.keep) - seen) + sorted(set(plan.hints) - seen)
    if unknown:
        raise ValueError(f"{name}: PLANS names what its export cells do not define: {unknown}")
    if checkpoints != 1:
        raise ValueError(f"{name}: expected one checkpoint cell, found {checkpoints}")
    return out, stubs


def generate(out_dir: Path, solutions: Path = NOTEBOOKS) -> dict[str, list[Stub]]:
    """Write every module's scaffolds into ``out_dir/<module folder>/``.

    Returns the stubs of each notebook, keyed ``"<module folder>/<notebook>"``.
    """
    report = {}
    for folder, plans in PLANS.items():
        found = sorted(path.stem for path in (solutions / folder).glob("*.ipynb"))
        if found != sorted(plans):
            raise ValueError(f"PLANS[{folder!r}] covers {sorted(plans)}, the solutions are {found}")
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        for name in sorted(plans):
            nb = _read(solutions / folder / f"{name}.ipynb")
            result, stubs = scaffold(nb, name, folder)
            (out_dir / folder / f"{name}.ipynb").write_text(_writes(result), encoding="utf-8")
            report[f"{folder}/{name}"] = stubs
    return report


def differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Scaffolds (``<module folder>/<name>.ipynb``) missing, extra or different between two kits."""

    def scaffolds(kit: Path) -> dict[str, bytes]:
        return {
            f"{folder}/{path.name}": path.read_bytes()
            for folder in PLANS
            for path in (kit / folder).glob("*.ipynb")
        }

    expected, actual = scaffolds(expected_dir), scaffolds(actual_dir)
    return sorted(n for n in expected.keys() | actual.keys() if expected.get(n) != actual.get(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--out", type=Path, default=KIT, help="where to write the module folders of scaffolds"
    )
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
