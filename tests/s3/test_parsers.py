"""Format parsers: files written by other tools parse identically; detection; bad rows; quarantine.

Pure file work, no services: every test writes its files under its own ``tmp_path``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.datagen.s3 import write_s3
from ingest.errors import ConfigError, DataError, Terminal
from ingest.load.postgres import column_type
from ingest.s3 import parsers
from ingest.s3.parsers import (
    FORMATS,
    JSONB,
    BadRow,
    Parsed,
    ParseError,
    ParseOptions,
    QuarantineError,
    convert_text,
    detect,
    parse,
    sniff_decimal_point,
    sniff_delimiter,
)
from tests.support.cli import ingest

LENIENT = ParseOptions(max_bad_fraction=1.0)  # see every bad row instead of quarantining


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(source: Any, **kwargs: Any) -> tuple[pa.Table, Parsed]:
    parsed = parse(source, **kwargs)
    with parsed:
        return parsed.read_all(), parsed


class OneWay(io.RawIOBase):
    """A stream that reads forward only, in small pieces, like an S3 StreamingBody."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self._data.read(min(len(buffer), 1000))
        buffer[: len(piece)] = piece
        return len(piece)


@pytest.fixture
def frame() -> pd.DataFrame:
    """Values that trip CSV writers and readers: quotes, delimiters, newlines, non-ASCII, nulls."""
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "amount": [12.5, -0.25, 1e6, 3.0],
            "name": ['say "hi"', "a,b;c|d", "line one\nline two", "Zoë Müller"],
            "paid": [True, False, True, False],
            "created_at": pd.to_datetime(
                ["2024-01-01 00:00:00", "2024-02-29 12:30:00", "2024-12-31 23:59:59", None]
            ),
            "note": ["", None, "x", "\t tabs and spaces "],
        }
    )


# -- files written by other tools ---------------------------------------------------------------


def test_pandas_csv_parses_like_pyarrow_and_keeps_the_values(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    path = tmp_path / "pandas.csv"
    frame.to_csv(path, index=False)
    table, parsed = read(path)
    native = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert table.equals(native)
    assert table.column_names == list(frame.columns)
    assert table.column("name").to_pylist() == frame["name"].tolist()
    assert table.column("amount").to_pylist() == frame["amount"].tolist()
    assert table.column("paid").to_pylist() == frame["paid"].tolist()
    assert parsed.rows == 4 and parsed.bad_row_count == 0


def test_pyarrow_csv_round_trips(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "ratio": [0.5, None, 2.0],
            "label": ["a", 'b "quoted", with comma', "c\nd"],
            "at": pa.array([0, 86_400, None], pa.timestamp("s")),
        }
    )
    path = tmp_path / "arrow.csv"
    pacsv.write_csv(data, path)
    table, _ = read(path)
    assert table.equals(data)


def test_pandas_parquet_parses_like_pyarrow(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "pandas.parquet"
    frame.to_parquet(path)
    table, parsed = read(path)
    assert parsed.format == "parquet"
    assert table.equals(pq.read_table(path))
    assert table.to_pandas().equals(frame)


def test_pyarrow_parquet_streams_in_batches(tmp_path: Path) -> None:
    rows = 200_000
    data = pa.table({"id": range(rows), "label": [f"row {i}" for i in range(rows)]})
    path = tmp_path / "arrow.parquet"
    pq.write_table(data, path, row_group_size=50_000)
    with parse(path) as parsed:
        batches = list(parsed)
    assert [b.num_rows for b in batches] == [65_536, 65_536, 65_536, rows - 3 * 65_536]
    assert pa.Table.from_batches(batches).equals(data)


def test_nested_parquet_columns_become_json_text(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": [1, 2],
            "address": [{"city": "Lyon", "zip": "69001"}, None],
            "tags": [["a", "b"], []],
            "attrs": pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64())),
        }
    )
    path = tmp_path / "nested.parquet"
    pq.write_table(data, path)
    table, _ = read(path)
    assert table.column("address").to_pylist() == ['{"city":"Lyon","zip":"69001"}', None]
    assert table.column("tags").to_pylist() == ['["a","b"]', "[]"]
    assert table.column("attrs").to_pylist() == ['{"k":1}', "{}"]
    assert [column_type(f) for f in table.schema] == ["bigint", "jsonb", "jsonb", "jsonb"]


# -- CSV -------------------------------------------------------------------------------------------


def test_excel_csv_with_bom_semicolons_decimal_commas_and_quoted_newlines(tmp_path: Path) -> None:
    text = '\ufeffid;betrag;notiz\r\n1;12,50;"Zerbrechlich;\r\nbitte ""vorsichtig"""\r\n2;7,00;\r\n'
    table, parsed = read(write(tmp_path, "export.csv", text.encode()))
    assert table.column_names == ["id", "betrag", "notiz"]  # no BOM in the first name
    assert table.to_pylist() == [
        {"id": 1, "betrag": 12.5, "notiz": 'Zerbrechlich;\r\nbitte "vorsichtig"'},
        {"id": 2, "betrag": 7.0, "notiz": ""},
    ]
    assert parsed.bad_row_count == 0


def test_latin1_needs_the_encoding_option(tmp_path: Path) -> None:
    path = write(tmp_path, "kunden.csv", "id,name\n1,Müller\n2,Smith\n".encode("latin-1"))
    table, parsed = read(path, options=LENIENT)
    assert table.to_pylist() == [{"id": 2, "name": "Smith"}]
    [bad] = parsed.bad_rows
    assert (bad.line, bad.raw) == (2, "1,Müller".encode("latin-1"))
    assert "encoding" in bad.reason
    table, parsed = read(path, options=ParseOptions(encoding="latin-1"))
    assert table.column("name").to_pylist() == ["Müller", "Smith"]


def test_utf16_is_recognised_by_its_bom(tmp_path: Path) -> None:
    # Excel's "Unicode text": UTF-16 with a BOM, tab-delimited.
    path = write(tmp_path, "unicode.txt", "id\tname\n1\tZoë\n".encode("utf-16"))
    table, _ = read(path)
    assert table.to_pylist() == [{"id": 1, "name": "Zoë"}]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_sniffed_from_the_header(tmp_path: Path, delimiter: str) -> None:
    rows = [["id", "name", "city"], ["1", "a", "x"], ["2", "b", "y"]]
    text = "".join(delimiter.join(row) + "\n" for row in rows)
    table, _ = read(write(tmp_path, "data.csv", text.encode()))
    assert table.column_names == ["id", "name", "city"]
    assert table.column("city").to_pylist() == ["x", "y"]


def test_sniffing_ignores_delimiters_inside_quotes() -> None:
    assert sniff_delimiter('"a;b;c",d,e') == ","
    assert sniff_delimiter("single") == ","
    assert sniff_decimal_point("a;b\n1;2,5\n", ";") == ","
    assert sniff_decimal_point("a;b\n1;2.5\n3;4,5\n", ";") == "."
    assert sniff_decimal_point("a,b\n1,2\n", ",") == "."


def test_explicit_options_win_over_sniffing(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"a;b,c\n1;2,3\n")
    table, _ = read(path, options=ParseOptions(delimiter=","))
    assert table.column_names == ["a;b", "c"]
    table, _ = read(path, options=ParseOptions(header=False, delimiter=";", decimal_point="."))
    assert table.to_pylist() == [{"f0": "a", "f1": "b,c"}, {"f0": "1", "f1": "2,3"}]


def test_rows_with_the_wrong_field_count_are_bad_rows(tmp_path: Path) -> None:
    text = 'id,name,city\n1,a,x\n2,b\n3,"multi\nline",z\n4,d,w,extra\n5,e,v\n'
    table, parsed = read(write(tmp_path, "bad.csv", text.encode()), options=LENIENT)
    assert table.column("id").to_pylist() == [1, 3, 5]
    assert [(b.line, b.raw, b.reason) for b in parsed.bad_rows] == [
        (3, b"2,b", "expected 3 fields, got 2"),
        (5, b"4,d,w,extra", "expected 3 fields, got 4"),  # record 5: the quoted value spans lines
    ]
    assert all(b.file.endswith("bad.csv") for b in parsed.bad_rows)


def test_a_value_that_stops_fitting_its_column_is_a_bad_row(tmp_path: Path) -> None:
    rows = [f"{i},{i * 10},{'x' if i % 2 else ''}" for i in range(1, 3001)]
    rows[2499] = "A-2500,25000,"  # record 2501, far past the first block
    rows[2699] = "2700,lots,"  # record 2701: another column
    path = write(tmp_path, "late.csv", ("id,amount,flag\n" + "\n".join(rows) + "\n").encode())
    table, parsed = read(path, options=ParseOptions(block_size=4096, max_bad_fraction=0.01))
    assert table.schema.types == [pa.int64(), pa.int64(), pa.string()]
    assert table.num_rows == 2998
    assert table.column("id").to_pylist() == [i for i in range(1, 3001) if i not in (2500, 2700)]
    assert table.column("flag").to_pylist()[:2] == ["x", ""]  # text stays text on the slow path
    assert [(b.line, b.raw) for b in parsed.bad_rows] == [
        (2501, b"A-2500,25000,"),
        (2701, b"2700,lots,"),
    ]
    assert "'A-2500' is not int64" in parsed.bad_rows[0].reason


def test_bad_rows_before_a_type_change_are_reported_once(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(1, 2001)]
    rows[9] = "10"  # record 11: too few fields, in the first block
    rows[1799] = "oops,1800"  # record 1801: a type change, later
    path = write(tmp_path, "both.csv", ("a,b\n" + "\n".join(rows) + "\n").encode())
    table, parsed = read(path, options=ParseOptions(block_size=4096, max_bad_fraction=0.01))
    assert [b.line for b in parsed.bad_rows] == [11, 1801]
    assert table.num_rows == 1998


def test_a_column_empty_in_the_first_block_is_text(tmp_path: Path) -> None:
    rows = [f"{i}," for i in range(1, 2001)] + ["2001,42"]
    path = write(tmp_path, "sparse.csv", ("id,late\n" + "\n".join(rows) + "\n").encode())
    table, parsed = read(path, options=ParseOptions(block_size=4096))
    assert table.schema.field("late").type == pa.string()
    assert table.column("late").to_pylist()[-1] == "42"
    assert parsed.bad_row_count == 0


def test_chunks_are_cut_where_pyarrow_would_cut_records(tmp_path: Path) -> None:
    # Quoted line breaks, escaped quotes, stray inch marks, CRLF and a value longer than a block.
    rows = [
        "id,label,note",
        '1,"two\r\nlines","a ""quoted"" word"',
        '2,5" screen,7" tablet',
        '3,"' + "long\n" * 3000 + '",x',
        '4,plain,"ends ""here"""',
    ] * 40
    text = "\r\n".join([rows[0], *(r for r in rows if not r.startswith("id,"))]) + "\r\n"
    path = write(tmp_path, "tricky.csv", text.encode())
    native = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    table, parsed = read(path, options=ParseOptions(block_size=4096))
    assert parsed.bad_row_count == 0
    assert table.equals(native)


# Chunks after the first end at a guess (the last line break of a block); a wrong guess is found by
# the end mark and cut again exactly. These files make most guesses wrong.
def multiline_records(count: int, *, bad_every: int = 0) -> tuple[str, list[int]]:
    """A CSV whose values span many lines, with a short bad record every ``bad_every``; the
    record numbers (header = 1) of the bad ones."""
    lines, bad = ["id,note,n"], []
    for i in range(1, count + 1):
        if bad_every and i % bad_every == 0:
            lines.append(f"{i},short")
            bad.append(i + 1)
        else:
            lines.append(f'{i},"' + "a line of the note\n" * (i % 7 + 1) + f'end",{i}')
    return "\n".join(lines) + "\n", bad


def test_wrong_guesses_keep_every_row_and_bad_row_numbers(tmp_path: Path) -> None:
    text, bad = multiline_records(3000, bad_every=97)
    path = write(tmp_path, "notes.csv", text.encode())
    native = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, invalid_row_handler=lambda r: "skip"
        ),
    )
    table, parsed = read(path, options=ParseOptions(block_size=4096, max_bad_fraction=1.0))
    assert table.equals(native)
    assert [b.line for b in parsed.bad_rows] == bad
    assert all(b.reason == "expected 3 fields, got 2" for b in parsed.bad_rows)


def test_one_column_files_with_line_breaks_in_values(tmp_path: Path) -> None:
    # With one column, a one-field end mark would be a row: the mark has two fields there.
    text = "note\n" + "".join(f'"note {i}\nsecond line"\n' for i in range(5000))
    path = write(tmp_path, "one.csv", text.encode())
    table, parsed = read(path, options=ParseOptions(block_size=4096))
    assert table.column("note").to_pylist() == [f"note {i}\nsecond line" for i in range(5000)]
    assert parsed.bad_row_count == 0


def test_a_line_that_reads_like_the_end_mark_is_an_ordinary_bad_row(tmp_path: Path) -> None:
    rows = [f'{i},"x\ny",{i}' for i in range(1, 2001)]
    rows[1499] = parsers._END_MARK  # record 1501 of the file, one field
    path = write(tmp_path, "mark.csv", ("id,note,n\n" + "\n".join(rows) + "\n").encode())
    table, parsed = read(path, options=ParseOptions(block_size=4096, max_bad_fraction=1.0))
    assert table.num_rows == 1999
    assert [(b.line, b.raw) for b in parsed.bad_rows] == [(1501, parsers._END_MARK.encode())]


def test_a_file_ending_inside_a_quoted_value_reads_as_pyarrow_reads_it(tmp_path: Path) -> None:
    records = "".join(f'{i},"' + "a line\n" * (i % 7 + 1) + '"\n' for i in range(1, 1001))
    path = write(tmp_path, "cut.csv", ("id,note\n" + records + '1001,"never closed\nline').encode())
    native = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    table, _ = read(path, options=ParseOptions(block_size=4096))
    assert table.equals(native)
    assert table.column("note").to_pylist()[-1] == "never closed\nline"


def test_carriage_returns_alone_end_records(tmp_path: Path) -> None:
    text = "id,name\r" + "".join(f'{i},"n\r{i}"\r' for i in range(2000))
    table, _ = read(
        write(tmp_path, "mac.csv", text.encode()), options=ParseOptions(block_size=4096)
    )
    assert table.column("id").to_pylist() == list(range(2000))
    assert table.column("name").to_pylist()[:2] == ["n\r0", "n\r1"]


plain_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='\x00",\r\n'),
    max_size=10,
)
any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10
)
csv_field = st.one_of(
    any_text.map(lambda t: '"' + ("v" + t).replace('"', '""') + '"'),  # quoted, anything inside
    st.tuples(plain_text, plain_text).map(lambda p: f'w{p[0]}"{p[1]}'),  # a stray quote
    plain_text.map(lambda t: "u" + t),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.lists(csv_field, min_size=3, max_size=3), min_size=1, max_size=60))
def test_chunked_csv_reads_like_pyarrow_in_one_piece(tmp_path: Path, rows: list[list[str]]) -> None:
    # Padding makes the file span many 4 KiB blocks, so the cuts fall all over it.
    lines = ["a,b,c", *(",".join(r) for r in rows for _ in range(8))]
    path = write(tmp_path, "random.csv", ("\n".join(lines) + "\n").encode())
    native = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    table, parsed = read(path, options=ParseOptions(block_size=4096, max_bad_fraction=1.0))
    assert parsed.bad_row_count == 0
    assert table.equals(native)


def test_convert_text_mirrors_the_csv_reader() -> None:
    converted, failed = convert_text(pa.array(["1", "", "NA", "x", "4"]), pa.int64())
    assert converted.to_pylist() == [1, None, None, None, 4]
    assert failed == [3]
    converted, failed = convert_text(pa.array(["1,5", "2"]), pa.float64(), decimal_point=",")
    assert converted.to_pylist() == [1.5, 2.0] and failed == []
    converted, failed = convert_text(pa.array([b"ok", b"\xff"]), pa.string())
    assert converted.to_pylist() == ["ok", None] and failed == [1]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.lists(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12,
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=20,
    ),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
)
def test_csv_round_trip_of_awkward_strings(
    tmp_path: Path, values: list[list[str]], delimiter: str
) -> None:
    # A prefix keeps every column text, whatever the strings look like ("1", "NA", "").
    rows = [[f"v{v}" for v in row] for row in values]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows)
    path = write(tmp_path, "round.csv", buffer.getvalue().encode())
    table, parsed = read(path, options=ParseOptions(delimiter=delimiter))
    assert parsed.bad_row_count == 0
    assert [list(r.values()) for r in table.to_pylist()] == rows


# -- JSON and NDJSON -------------------------------------------------------------------------------


def test_json_array_keeps_nested_values_as_json_text(tmp_path: Path) -> None:
    records = [
        {"id": 1, "total": 12.5, "shipping": {"city": "Lyon", "zip": 69001}, "tags": ["a"]},
        {"id": 2, "total": 7.0, "shipping": {"city": "Köln", "zip": "50667"}, "tags": []},
        {"id": 3, "total": 1.0, "shipping": None},
    ]
    path = write(tmp_path, "orders.json", json.dumps(records, indent=2).encode())
    table, parsed = read(path)
    assert parsed.format == "json" and parsed.bad_row_count == 0
    assert table.column_names == ["id", "total", "shipping", "tags"]
    assert table.schema.field("shipping").metadata == JSONB
    assert [column_type(f) for f in table.schema] == [
        "bigint",
        "double precision",
        "jsonb",
        "jsonb",
    ]
    # Exactly the values sent (a zip that is a number in one row and text in another included).
    shipping = [None if s is None else json.loads(s) for s in table.column("shipping").to_pylist()]
    assert shipping == [r["shipping"] for r in records]
    assert table.column("tags").to_pylist() == ['["a"]', "[]", None]


def test_a_single_object_is_one_row(tmp_path: Path) -> None:
    path = write(tmp_path, "order-42", b'{\n  "id": 42,\n  "lines": [{"sku": "A"}]\n}\n')
    table, parsed = read(path)
    assert parsed.format == "json"
    assert table.to_pylist() == [{"id": 42, "lines": '[{"sku":"A"}]'}]


def test_json_timestamps_are_utc(tmp_path: Path) -> None:
    path = write(tmp_path, "t.ndjson", b'{"at": "2024-01-01T02:00:00+02:00"}\n{"at": null}\n')
    table, _ = read(path)
    assert table.schema.field("at").type == pa.timestamp("s", tz="UTC")
    assert table.column("at")[0].as_py() == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payloads=st.lists(
        st.none()
        | st.lists(json_values, max_size=3)
        | st.dictionaries(st.text(max_size=4), json_values, max_size=3),
        min_size=1,
        max_size=15,
    ),
    indent=st.sampled_from([None, 1, 4]),
    block_size=st.sampled_from([4096, 1 << 20]),
)
def test_json_array_cut_by_numpy_matches_json_load(
    tmp_path: Path, payloads: list[Any], indent: int | None, block_size: int
) -> None:
    # Strings full of brackets, commas, quotes and backslashes must not move the cuts.
    records = [
        {"id": i, "text": f'[{i}], "q\\"', "payload": p, "pad": "x" * (i * 97 % 500)}
        for i, p in enumerate(payloads)
    ]
    path = write(tmp_path, "doc.json", json.dumps(records, indent=indent).encode())
    table, parsed = read(path, options=ParseOptions(block_size=block_size))
    assert parsed.bad_row_count == 0
    assert table.column("id").to_pylist() == list(range(len(records)))
    assert table.column("text").to_pylist() == [r["text"] for r in records]
    texts = table.column("payload").to_pylist()
    assert [None if t is None else orjson.loads(t) for t in texts] == payloads


def test_gzipped_ndjson(tmp_path: Path) -> None:
    lines = b"".join(json.dumps({"id": i, "name": f"n{i}"}).encode() + b"\n" for i in range(1000))
    table, parsed = read(write(tmp_path, "events.ndjson.gz", gzip.compress(lines)))
    assert (parsed.format, parsed.compression) == ("ndjson", "gzip")
    assert table.column("id").to_pylist() == list(range(1000))


def test_zstd_by_magic_bytes(tmp_path: Path) -> None:
    lines = b'{"id": 1}\n{"id": 2}\n'
    data = pa.compress(lines, "zstd", asbytes=True)
    table, parsed = read(write(tmp_path, "events-0001", data))
    assert (parsed.format, parsed.compression) == ("ndjson", "zstd")
    assert table.column("id").to_pylist() == [1, 2]
    table, parsed = read(write(tmp_path, "orders.csv.zst", pa.compress(b"a,b\n1,2\n", "zstd")))
    assert (parsed.format, parsed.compression, table.num_rows) == ("csv", "zstd", 1)


def test_ndjson_bad_lines_are_set_aside_with_their_line_numbers(tmp_path: Path) -> None:
    lines = [
        b'{"id": 1, "name": "a"}',
        b"",
        b'{"id": 2, "name": ',
        b"[1, 2]",
        b'{"id": "three", "name": "c"}',
        b'{"id": 4, "name": "d", "extra": true}',
    ]
    table, parsed = read(write(tmp_path, "log.ndjson", b"\n".join(lines) + b"\n"), options=LENIENT)
    assert table.to_pylist() == [
        {"id": 1, "name": "a", "extra": None},
        {"id": 4, "name": "d", "extra": True},
    ]
    assert [(b.line, b.raw) for b in parsed.bad_rows] == [
        (3, b'{"id": 2, "name": '),
        (4, b"[1, 2]"),
        (5, b'{"id": "three", "name": "c"}'),
    ]
    reasons = [b.reason for b in parsed.bad_rows]
    assert reasons[0].startswith("not valid JSON") and reasons[1] == "an array, not an object"


def test_a_bad_element_of_a_json_array_names_its_line(tmp_path: Path) -> None:
    text = b'[\n  {"id": 1},\n  "stray",\n  {\n    "id": 3\n  }\n]\n'
    table, parsed = read(write(tmp_path, "doc.json", text), options=LENIENT)
    assert table.column("id").to_pylist() == [1, 3]
    [bad] = parsed.bad_rows
    assert (bad.line, bad.raw, bad.reason) == (3, b'"stray"', "a string, not an object")


def test_fields_first_seen_later_add_columns_at_the_end(tmp_path: Path) -> None:
    first = b"".join(b'{"id": %d, "empty": null}\n' % i for i in range(3000))
    later = b'{"id": 3000, "empty": 5, "new": "x"}\n'
    with parse(
        write(tmp_path, "grow.ndjson", first + later), options=ParseOptions(block_size=4096)
    ) as parsed:
        batches = list(parsed)
    assert batches[0].schema.names == ["id", "empty"]
    assert batches[-1].schema.names == ["id", "empty", "new"]
    assert batches[-1].column("empty").to_pylist()[-1] == "5"  # first seen empty: text
    assert parsed.schema is not None and parsed.schema.names == ["id", "empty", "new"]


# -- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", ("csv", None)),
        ("a.TSV", ("csv", None)),
        ("a.txt", ("csv", None)),
        ("a.json", ("json", None)),
        ("a.ndjson", ("ndjson", None)),
        ("a.jsonl", ("ndjson", None)),
        ("part-0.snappy.parquet", ("parquet", None)),
        ("a.pq", ("parquet", None)),
    ],
)
def test_detection_by_extension(name: str, expected: tuple[str, str | None]) -> None:
    assert detect(name, b"whatever, the name decides\n") == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"PAR1\x15\x04", "parquet"),
        (b'[{"id": 1}]', "json"),
        (b"  [\n  1, 2]", "json"),
        (b'{"id": 1}\n{"id": 2}\n', "ndjson"),
        (b'{\n  "id": 1\n}', "json"),
        (b"\xef\xbb\xbfid;name\n1;a\n", "csv"),
        (b"[id],[name]\n1,a\n", "csv"),
        ("id\tname\n".encode("utf-16"), "csv"),
    ],
)
def test_detection_by_sniffing(head: bytes, expected: str) -> None:
    assert detect("s3-object-without-extension", head) == (expected, None)
    assert detect("compressed", gzip.compress(head)) == (expected, "gzip")
    assert detect("compressed", pa.compress(head, "zstd", asbytes=True)) == (expected, "zstd")


@pytest.mark.parametrize(
    ("name", "head", "message"),
    [
        ("blob", b"\x00\x01\x02\x03", "cannot tell the format"),
        ("empty", b"", "empty"),
        ("orders.csv.gz", b"id,name\n", "named like a gzip file"),
    ],
)
def test_detection_that_cannot_tell_says_so(name: str, head: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        detect(name, head)


def test_an_empty_csv_has_no_rows(tmp_path: Path) -> None:
    table, parsed = read(write(tmp_path, "empty.csv", b""))
    assert table.num_rows == 0 and parsed.bad_row_count == 0
    table, _ = read(write(tmp_path, "header.csv", b"id,name\n"))
    assert table.column_names == ["id", "name"] and table.num_rows == 0


# -- bad rows and quarantine -----------------------------------------------------------------------


def malformed_csv(tmp_path: Path, rows: int, every: int) -> Path:
    lines = ["id,customer,amount"]
    lines += [f"{i},c{i}" if i % every == 0 else f"{i},c{i},{i}.5" for i in range(1, rows + 1)]
    return write(tmp_path, f"malformed-{every}.csv", ("\n".join(lines) + "\n").encode())


def test_bad_rows_below_the_threshold_do_not_fail_the_file(tmp_path: Path) -> None:
    table, parsed = read(malformed_csv(tmp_path, 1000, 200))  # 0.5%
    assert (table.num_rows, parsed.bad_row_count) == (995, 5)


def test_over_the_threshold_the_file_is_quarantined(tmp_path: Path) -> None:
    with pytest.raises(QuarantineError) as caught:
        read(malformed_csv(tmp_path, 1000, 50))  # 2%
    assert (caught.value.rows, caught.value.bad_rows) == (980, 20)
    assert "20 of 1000 rows are bad" in caught.value.reason
    assert "line 51: expected 3 fields, got 2" in caught.value.reason
    assert isinstance(caught.value, DataError) and isinstance(caught.value, Terminal)


def test_exactly_at_the_threshold_passes(tmp_path: Path) -> None:
    _, parsed = read(
        malformed_csv(tmp_path, 1000, 100), options=ParseOptions(max_bad_fraction=0.01)
    )
    assert parsed.bad_row_count == 10


def test_the_early_check_stops_before_the_end(tmp_path: Path) -> None:
    path = malformed_csv(tmp_path, 50_000, 2)
    options = ParseOptions(early_check_rows=1000, block_size=4096)
    with pytest.raises(QuarantineError) as caught:
        read(path, options=options)
    seen = caught.value.rows + caught.value.bad_rows
    assert 1000 <= seen < 5000
    assert "checked early" in caught.value.reason


def test_bad_rows_can_be_taken_as_they_come(tmp_path: Path) -> None:
    with parse(
        malformed_csv(tmp_path, 20_000, 100), options=ParseOptions(block_size=4096)
    ) as parsed:
        taken: list[BadRow] = []
        for _ in parsed:
            taken += parsed.pop_bad_rows()
            assert len(parsed.bad_rows) == 0
    assert len(taken) == parsed.bad_row_count == 200
    assert [b.line for b in taken] == [i + 1 for i in range(100, 20_001, 100)]


# -- broken files ----------------------------------------------------------------------------------


def test_a_truncated_gzip_is_a_parse_error(tmp_path: Path) -> None:
    data = gzip.compress(b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(50_000)))
    path = write(tmp_path, "cut.csv.gz", data[: len(data) // 2])
    with pytest.raises(ParseError, match=r"(?i)truncated"):
        read(path)


def test_a_parquet_file_without_its_footer_is_a_parse_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": range(1000)}), buffer)
    path = write(tmp_path, "cut.parquet", buffer.getvalue()[:-200])
    with pytest.raises(ParseError, match="not a readable Parquet file"):
        read(path)


def test_a_truncated_json_array_is_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.json", b'[{"id": 1}, {"id": 2}, {"id"')
    with pytest.raises(ParseError, match="truncated"):
        read(path)


def test_data_after_the_array_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="after the end"):
        read(write(tmp_path, "two.json", b'[{"id": 1}]\n[{"id": 2}]\n'))


# -- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_one_way_stream_parses_like_the_file(tmp_path: Path, fmt: str) -> None:
    data = pa.table({"id": range(2000), "name": [f"n{i}" for i in range(2000)]})
    writers: dict[str, Callable[[io.BytesIO], None]] = {
        "csv": lambda b: pacsv.write_csv(data, b),
        "json": lambda b: b.write(json.dumps(data.to_pylist()).encode()),
        "ndjson": lambda b: b.write(b"".join(orjson.dumps(r) + b"\n" for r in data.to_pylist())),
        "parquet": lambda b: pq.write_table(data, b),
    }
    buffer = io.BytesIO()
    writers[fmt](buffer)
    raw = gzip.compress(buffer.getvalue())
    table, parsed = read(OneWay(raw), name=f"drops/1/data.{fmt}.gz")
    assert (parsed.format, parsed.compression) == (fmt, "gzip")
    assert table.equals(data)


class DroppedConnection(OneWay):
    """A stream whose connection resets after ``after`` bytes, as a network read can."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data)
        self._left = after

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        n = super().readinto(memoryview(buffer)[: self._left])
        self._left -= n
        return n


@pytest.mark.parametrize("name", ["data.csv", "data.ndjson", "data.parquet"])
def test_a_dropped_connection_is_left_for_the_caller_to_retry(name: str) -> None:
    rows = b"".join(b'{"id": %d, "name": "row %d"}\n' % (i, i) for i in range(20_000))
    data = (b"id,name\n" + rows) if name.endswith(".csv") else rows
    with pytest.raises(ConnectionResetError):  # not a ParseError: the file may be fine
        read(DroppedConnection(data, after=200_000), name=name)


def test_a_caller_s_file_is_left_open_and_where_it_was(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"id\n1\n2\n")
    with path.open("rb") as fh:
        table, parsed = read(fh)
        assert not fh.closed
    assert parsed.name == str(path) and table.num_rows == 2


def test_stopping_early_stops_the_reading_threads(tmp_path: Path) -> None:
    path = write(
        tmp_path, "long.csv", b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(100_000))
    )
    with parse(path, options=ParseOptions(block_size=4096)) as parsed:
        batches = iter(parsed)
        next(batches)
        batches.close()  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name.startswith("csv")]


def test_a_parsed_file_is_iterated_once(tmp_path: Path) -> None:
    parsed = parse(write(tmp_path, "data.csv", b"id\n1\n"))
    parsed.read_all()
    with pytest.raises(RuntimeError, match="once"):
        list(parsed)


def test_memory_is_bounded_by_the_block_not_the_file(tmp_path: Path) -> None:
    rows = 100_000
    path = write(
        tmp_path,
        "big.csv",
        b"id,name,amount\n" + b"".join(b"%d,name %d,%d.25\n" % (i, i, i) for i in range(rows)),
    )
    with parse(path, options=ParseOptions(block_size=64 * 1024)) as parsed:
        sizes = [batch.num_rows for batch in parsed]
    assert sum(sizes) == rows
    assert len(sizes) > 30 and max(sizes) < 5000


@pytest.mark.parametrize(
    "options",
    [
        {"delimiter": ";;"},
        {"quote_char": "\n"},
        {"encoding": "no-such-codec"},
        {"block_size": 10},
        {"max_bad_fraction": 1.5},
        {"early_check_rows": 0},
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ParseOptions(**options)


def test_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known formats"):
        parse(write(tmp_path, "a.csv", b"a\n1\n"), format="xml")  # type: ignore[arg-type]


def test_public_names() -> None:
    assert set(parsers.__all__) >= {
        "BadRow",
        "ParseError",
        "ParseOptions",
        "Parsed",
        "QuarantineError",
        "detect",
        "parse",
    }
    assert all(not name.startswith("_") for name in parsers.__all__)


# -- the sample drops ------------------------------------------------------------------------------


def test_the_generated_drops_parse_as_their_expectations_say(tmp_path: Path) -> None:
    expected = write_s3(tmp_path, rows=2000, customers=100, seed=3)
    checked = 0
    for drop in expected["drops"]:
        for spec in drop["files"]:
            path = tmp_path / spec["key"]
            if spec["status"] in ("missing",):
                assert not path.exists()
                continue
            options = ParseOptions(max_bad_fraction=0.2)
            if spec["corrupt"] or spec["status"] == "partial":
                with pytest.raises(ParseError):
                    read(path, options=options)
            else:
                table, parsed = read(path, options=options)
                assert (parsed.format, parsed.compression) == (spec["format"], spec["compression"])
                assert (table.num_rows, parsed.bad_row_count) == (
                    spec["good_rows"],
                    spec["bad_rows"],
                )
                assert table.column("amount").type == pa.float64()  # decimal commas included
            checked += 1
    assert checked == 15


# -- the command line ------------------------------------------------------------------------------


def test_cli_parses_and_reports_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, "orders.json", b'[{"id": 1, "ship": {"city": "Lyon"}}, {"id": 2}]')
    result = ingest("s3", "parse", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"format", "rows", "columns", "bad_rows"} <= report.keys()
    assert (report["format"], report["rows"], report["columns"]) == ("json", 2, ["id", "ship"])
    assert (report["bad_rows"], report["json_columns"], report["error"]) == (0, ["ship"], None)


def test_cli_human_output_names_format_columns_and_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"id;name\n1;a\n2\n3;c\n")
    result = ingest("s3", "parse", str(path), "--max-bad-fraction", "0.5")
    assert result.returncode == 0, result.stderr
    assert "data.csv: csv, 2 columns, 2 rows, 1 bad rows" in result.stdout
    assert "line 3: expected 2 fields, got 1" in result.stdout


def test_cli_exits_1_for_an_unreadable_file(tmp_path: Path) -> None:
    data = gzip.compress(b"id\n" + b"1\n" * 100_000)
    path = write(tmp_path, "cut.csv.gz", data[: len(data) // 2])
    result = ingest("s3", "parse", str(path), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["format"] == "csv" and "runcated" in report["error"]


def test_cli_exits_1_over_the_bad_row_limit(tmp_path: Path) -> None:
    result = ingest("s3", "parse", str(malformed_csv(tmp_path, 100, 10)), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["rows"], report["bad_rows"]) == (90, 10)
    assert len(report["bad_row_samples"]) == 5
    assert "more than the 1.0% allowed" in report["error"]


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "xml"],
        ["--max-bad-fraction", "2"],
        ["--delimiter", ";;"],
        ["--encoding", "no-such-codec"],
    ],
)
def test_cli_exits_2_on_bad_usage(tmp_path: Path, args: list[str]) -> None:
    path = write(tmp_path, "data.csv", b"a\n1\n")
    result = ingest("s3", "parse", str(path), *args)
    assert result.returncode == 2
    assert result.stdout == ""


def test_cli_exits_2_for_a_missing_file(tmp_path: Path) -> None:
    assert ingest("s3", "parse", str(tmp_path / "nope.csv")).returncode == 2
