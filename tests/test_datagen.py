"""The sample data sets and their generator.

The committed ``data/`` must be exactly what ``generate_sample`` writes, every file must be what
``expected.json`` claims (recounted here with pyarrow and the json module, never trusted), and a
medium run must hold up the same way while keeping memory flat.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import string
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from ingest.datagen import (
    SAMPLE_ROWS,
    SAMPLE_SEED,
    _common,
    generate,
    generate_sample,
    progress_total,
)
from ingest.datagen.saas import salesforce_id18
from ingest.mockapi.fixtures import rest_records

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
HAND_WRITTEN = {"README.md"}
MEDIUM_ROWS = 20_000
SALESFORCE_COLUMNS = ["Id", "Name", "Industry", "LastModifiedDate"]


# -- helpers ------------------------------------------------------------------------------------


def tree(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in HAND_WRITTEN
    )


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def without_parquet_checksums(obj: Any) -> Any:
    """JSON with the size/md5 of Parquet files removed: those bytes depend on pyarrow's version."""
    if isinstance(obj, dict):
        is_parquet = obj.get("format") == "parquet"
        return {
            k: without_parquet_checksums(v)
            for k, v in obj.items()
            if not (is_parquet and k in ("size", "md5"))
        }
    if isinstance(obj, list):
        return [without_parquet_checksums(v) for v in obj]
    return obj


def parquet_table(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return None


def assert_same_file(a: Path, b: Path) -> None:
    """Byte-identical, except that Parquet may differ in bytes as long as the data does not."""
    if a.read_bytes() == b.read_bytes():
        return
    if a.suffix == ".parquet":
        ta, tb = parquet_table(a), parquet_table(b)
        if ta is None or tb is None:  # the deliberately broken one: both must stay broken
            assert ta is None and tb is None, f"{a} and {b}: one of them parses"
        else:
            assert ta.equals(tb, check_metadata=True), f"{a} and {b} hold different data"
        return
    assert a.suffix == ".json", f"{a} and {b} differ"
    assert without_parquet_checksums(load(a)) == without_parquet_checksums(load(b)), (
        f"{a} and {b} differ beyond Parquet checksums"
    )


def read_file(path: Path, spec: dict[str, Any]) -> tuple[pa.Table, int]:
    """Parse a data file the way a loader would; returns the table and the rows skipped as bad."""
    skipped: list[pacsv.InvalidRow] = []

    def skip(row: pacsv.InvalidRow) -> str:
        skipped.append(row)
        return "skip"

    if spec["format"] == "csv":
        table = pacsv.read_csv(
            path,  # a .gz name makes pyarrow decompress
            parse_options=pacsv.ParseOptions(
                delimiter=spec["csv"]["delimiter"],
                newlines_in_values=True,
                invalid_row_handler=skip,
            ),
            convert_options=pacsv.ConvertOptions(decimal_point=spec["csv"]["decimal_point"]),
        )
    elif spec["format"] == "ndjson":
        table = pajson.read_json(path)
    elif spec["format"] == "json":
        table = pa.Table.from_pylist(json.loads(path.read_text(encoding="utf-8")))
    else:
        table = pq.read_table(path)
    return table, len(skipped)


def deliveries(root: Path) -> list[dict[str, Any]]:
    lines = (root / "webhooks" / "deliveries.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate_sample(out)
    return out


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 20k-row run with small chunks under tracemalloc, and a 5k-row one to compare peaks."""
    peaks = {}
    result: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_common, "CHUNK_ROWS", 500)
        for rows in (5_000, MEDIUM_ROWS):
            out = tmp_path_factory.mktemp(f"rows{rows}")
            calls: list[int] = []
            tracemalloc.start()
            try:
                summary = generate(out, rows=rows, seed=3, progress=calls.append)
                peaks[rows] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            result.update(root=out, summary=summary, calls=calls, rows=rows)
    result["peaks"] = peaks
    return result


@pytest.fixture(params=["committed", "medium"])
def dataset(request: pytest.FixtureRequest) -> Path:
    if request.param == "committed":
        return DATA
    root: Path = request.getfixturevalue("medium")["root"]
    return root


# -- the committed sample cannot drift ----------------------------------------------------------


def test_committed_data_is_what_generate_sample_writes(sample: Path) -> None:
    assert (DATA / "expected.json").exists(), (
        "data/ is missing: python -m ingest.datagen data --sample"
    )
    assert tree(DATA) == tree(sample)
    for rel in tree(sample):
        assert_same_file(DATA / rel, sample / rel)


def test_committed_data_is_small() -> None:
    total = sum((DATA / rel).stat().st_size for rel in tree(DATA))
    assert total < 1_000_000


def test_rest_set_is_the_mock_api_fixture(sample: Path) -> None:
    records = rest_records(SAMPLE_ROWS, seed=SAMPLE_SEED)
    text = (DATA / "rest" / "customers.json").read_text(encoding="utf-8")
    assert text == json.dumps(records, indent=2) + "\n"
    assert load(DATA / "expected.json")["rest"]["records"] == SAMPLE_ROWS


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, rows=300, seed=7)
    generate(b, rows=300, seed=7)
    generate(c, rows=300, seed=8)
    assert tree(a) == tree(b) == tree(c)
    for rel in tree(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    same = [
        rel
        for rel in tree(a)
        if (a / rel).read_bytes() == (c / rel).read_bytes() and (a / rel).stat().st_size
    ]
    assert same == [], "a different seed must change every non-empty file"
    # No timestamp in any gzip header: the bytes must not depend on when they were written.
    for rel in tree(a):
        if rel.endswith(".gz"):
            assert (a / rel).read_bytes()[4:8] == b"\0\0\0\0", rel


def test_generate_replaces_its_own_output_but_not_foreign_files(tmp_path: Path) -> None:
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    generate(run, rows=2_000, seed=1)
    (run / "README.md").write_text("mine")
    generate(run, rows=200, seed=1)
    generate(fresh, rows=200, seed=1)
    assert tree(run) == tree(fresh)  # no stale pages or drops left behind
    assert (run / "README.md").read_text() == "mine"

    foreign = tmp_path / "foreign"
    (foreign / "s3").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate(foreign, rows=200)
    assert (foreign / "s3").is_dir()


# -- S3 drops -----------------------------------------------------------------------------------


def test_manifests_match_their_files(dataset: Path) -> None:
    expected = load(dataset / "s3" / "expected.json")
    for drop in expected["drops"]:
        drop_dir = dataset / "s3" / drop["prefix"]
        on_disk = {p.name for p in drop_dir.iterdir()}
        if drop["marker"] == "_SUCCESS":
            assert "_SUCCESS" in on_disk and "_manifest.json" not in on_disk
            assert drop["complete"]
            continue
        manifest = load(drop_dir / "_manifest.json")
        assert manifest["drop_id"] == drop["drop_id"]
        entries = {e["key"]: e for e in manifest["files"]}
        by_name = {f["key"].rsplit("/", 1)[1]: f for f in drop["files"]}
        assert set(entries) == set(by_name)
        found = []
        for name, entry in entries.items():
            path = drop_dir / name
            assert entry["rows"] == by_name[name]["rows"]
            assert entry["format"] == by_name[name]["format"]
            if not path.exists():
                found.append((drop["prefix"] + name, "missing"))
            elif path.stat().st_size != entry["size"]:
                found.append((drop["prefix"] + name, "size_mismatch"))
            else:
                assert hashlib.md5(path.read_bytes()).hexdigest() == entry["md5"], name
        assert on_disk - {"_manifest.json"} <= set(entries), "a file no manifest lists"
        assert drop["complete"] == (not found)
        assert [(p["key"], p["problem"]) for p in drop["problems"]] == found


def test_exactly_one_incomplete_drop_with_a_missing_and_a_partial_file(dataset: Path) -> None:
    drops = load(dataset / "s3" / "expected.json")["drops"]
    incomplete = [d for d in drops if not d["complete"]]
    assert len(incomplete) == 1
    assert sorted(p["problem"] for p in incomplete[0]["problems"]) == ["missing", "size_mismatch"]
    assert incomplete[0]["rows_to_land"] == 0
    assert {d["marker"] for d in drops} == {"manifest", "_SUCCESS"}


def test_every_file_parses_or_fails_as_expected(dataset: Path) -> None:
    expected = load(dataset / "s3" / "expected.json")
    statuses = Counter()
    landed: list[str] = []
    for drop in expected["drops"]:
        for spec in drop["files"]:
            path = dataset / "s3" / spec["key"]
            statuses[spec["status"]] += 1
            if spec["status"] == "missing":
                assert not path.exists()
                continue
            if spec["status"] == "partial":
                continue  # its drop never loads; the manifest test shows the size is off
            if spec["corrupt"]:
                with pytest.raises((pa.ArrowInvalid, OSError)):
                    read_file(path, spec)
                assert spec["good_rows"] == 0
                continue
            table, bad = read_file(path, spec)
            assert (table.num_rows, bad) == (spec["good_rows"], spec["bad_rows"]), spec["key"]
            assert spec["good_rows"] + spec["bad_rows"] == spec["rows"]
            # The BOM is gone, the decimal comma is a number, the nested object is a struct.
            assert table.column_names[0] == "order_id"
            assert table.schema.field("amount").type == pa.float64(), spec["key"]
            if spec["format"] in ("json", "ndjson"):
                assert pa.types.is_struct(table.schema.field("shipping").type)
            if drop["complete"]:
                landed += table.column("order_id").to_pylist()
    assert statuses == {
        "ok": 11,
        "bad_rows": 1,
        "truncated_gzip": 1,
        "footer_cut": 1,
        "missing": 1,
        "partial": 1,
    }
    assert len(landed) == len(set(landed)) == expected["totals"]["rows_to_land"]


def test_tricky_csv_features_are_really_there() -> None:
    drops = load(DATA / "s3" / "expected.json")["drops"]
    files = {f["key"].rsplit("/", 1)[1]: DATA / "s3" / f["key"] for d in drops for f in d["files"]}
    bom = files["orders-bom.csv"].read_bytes()
    assert bom.startswith(b"\xef\xbb\xbforder_id,")
    assert b'"Gift wrap\nNo invoice in the box"' in bom and b', with a comma"' in bom
    eu = files["orders-eu.csv"].read_text(encoding="utf-8")
    assert eu.startswith("order_id;customer_id;amount;")
    assert files["orders-truncated.csv.gz"].read_bytes()[:2] == b"\x1f\x8b"
    with pytest.raises(EOFError):
        gzip.decompress(files["orders-truncated.csv.gz"].read_bytes())
    footerless = files["orders-footerless.parquet"].read_bytes()
    assert footerless[:4] == b"PAR1" and footerless[-4:] != b"PAR1"


def test_malformed_rows_are_skipped_one_by_one(dataset: Path) -> None:
    drops = load(dataset / "s3" / "expected.json")["drops"]
    (spec,) = [f for d in drops for f in d["files"] if f["status"] == "bad_rows"]
    path = dataset / "s3" / spec["key"]
    strict = pacsv.ParseOptions(newlines_in_values=True)
    with pytest.raises(pa.ArrowInvalid):
        pacsv.read_csv(path, parse_options=strict)
    table, bad = read_file(path, spec)
    assert bad == spec["bad_rows"] >= 2
    assert table.num_rows == spec["good_rows"] > bad


# -- webhooks -----------------------------------------------------------------------------------


def test_webhook_duplicates_are_true_retries_and_counts_match(dataset: Path) -> None:
    expected = load(dataset / "webhooks" / "expected.json")
    lines = deliveries(dataset)
    times = [parse_iso(d["delivery_at"]) for d in lines]
    assert times == sorted(times), "the file is in delivery order"

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for d in lines:
        assert set(d) == {"source", "delivery_at", "event_id", "payload"}
        groups[(d["source"], d["event_id"])].append(d)
    distinct = Counter(source for source, _ in groups)
    dups = Counter(source for (source, _), g in groups.items() for _ in g[1:])
    assert dict(distinct) == expected["distinct_events"]
    assert dict(dups) == expected["duplicates_by_source"]
    assert sum(dups.values()) == expected["duplicates"]
    assert len(lines) == expected["deliveries"]
    assert 0.2 <= expected["duplicates"] / len(lines) <= 0.3

    for (source, event_id), group in groups.items():
        first = parse_iso(group[0]["delivery_at"])
        for retry in group[1:]:
            assert retry["payload"] == group[0]["payload"]
            delay = (parse_iso(retry["delivery_at"]) - first).total_seconds()
            assert 3600 <= delay < expected["retry_window_seconds"]
        payload = group[0]["payload"]
        if source == "stripe":
            assert event_id == payload["id"] and event_id.startswith("evt_")
            assert payload["object"] == "event" and payload["livemode"] is False
            assert set(payload["data"]["object"]) >= {"id", "object"}
        else:
            assert event_id.startswith("msg_")
            assert set(payload) == {"type", "timestamp", "data"}


def test_webhook_events_arrive_out_of_creation_order() -> None:
    firsts: dict[str, float] = {}
    for d in deliveries(DATA):
        payload = d["payload"]
        created = (
            float(payload["created"])
            if d["source"] == "stripe"
            else parse_iso(payload["timestamp"]).timestamp()
        )
        firsts.setdefault(d["event_id"], created)
    created_in_delivery_order = list(firsts.values())
    assert created_in_delivery_order != sorted(created_in_delivery_order)


# -- SaaS ---------------------------------------------------------------------------------------


def test_salesforce_id18_checksum() -> None:
    # Worked by hand: uppercase positions per 5-char block, as bits, index A-Z0-5.
    assert salesforce_id18("00D000000000062") == "00D000000000062EAA"
    assert salesforce_id18("ABCDEabcde0000Z") == "ABCDEabcde0000Z5AQ"
    with pytest.raises(ValueError):
        salesforce_id18("001")


def test_saas_exports_match_expected(dataset: Path) -> None:
    expected = load(dataset / "expected.json")["saas"]
    stripe = expected["stripe_customers"]
    pages = sorted((dataset / stripe["prefix"]).glob("page-*.json"))
    assert len(pages) == stripe["pages"] >= 2  # enough to show pagination
    records = []
    for i, page in enumerate(pages):
        body = load(page)
        assert body["object"] == "list" and body["url"] == "/v1/customers"
        assert body["has_more"] == (i < len(pages) - 1)
        assert len(body["data"]) <= stripe["page_size"]
        records += body["data"]
    assert len(records) == stripe["records"]
    created = [r["created"] for r in records]
    assert created == sorted(created, reverse=True), "Stripe lists newest first"

    accounts = expected["salesforce_accounts"]
    assert accounts["soql"] == "SELECT Id, Name, Industry, LastModifiedDate FROM Account"
    ids: list[str] = []
    for rel in accounts["files"]:
        path = dataset / rel
        assert path.read_text(encoding="utf-8").startswith(
            '"Id","Name","Industry","LastModifiedDate"\n'
        )
        # As strings: the point is the exact text form, not what pyarrow makes of it.
        as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(SALESFORCE_COLUMNS, pa.string()))
        table = pacsv.read_csv(path, convert_options=as_text)
        assert table.column_names == SALESFORCE_COLUMNS
        ids += table.column("Id").to_pylist()
        for modified in table.column("LastModifiedDate").to_pylist():
            assert datetime.strptime(modified, "%Y-%m-%dT%H:%M:%S.000+0000")
    assert len(ids) == accounts["records"]
    assert all(len(i) == 18 and salesforce_id18(i[:15]) == i for i in ids)
    assert len({i.lower() for i in ids}) == len(ids), "18-char ids are unique case-insensitively"
    assert all(set(i) <= set(string.ascii_letters + string.digits) for i in ids)


# -- the medium run -----------------------------------------------------------------------------


def test_medium_run_summary_agrees_with_a_recount(medium: dict[str, Any]) -> None:
    root, summary = medium["root"], medium["summary"]
    assert load(root / "expected.json") == summary
    assert summary["generator"]["rows"] == MEDIUM_ROWS
    assert sum(medium["calls"]) == summary["total_rows"] == progress_total(MEDIUM_ROWS)
    assert len(load(root / "rest" / "customers.json")) == MEDIUM_ROWS
    assert load(root / "webhooks" / "expected.json") == summary["webhooks"]
    assert load(root / "s3" / "expected.json") == summary["s3"]
    # "About rows rows" in the drops, spread over every file.
    assert summary["s3"]["totals"]["rows_generated"] == MEDIUM_ROWS


def test_generation_streams_with_bounded_memory(medium: dict[str, Any]) -> None:
    # Four times the rows must not mean (nearly) four times the memory: every writer holds one
    # chunk at a time. Holding the REST records alone as dicts would take far more than this.
    peaks = medium["peaks"]
    assert peaks[MEDIUM_ROWS] < 2 * peaks[5_000], peaks
    assert peaks[MEDIUM_ROWS] < 8_000_000, peaks


def test_common_helpers() -> None:
    rng = _common.rng_for(0, "t")
    picks: Iterator[bool] = _common.select_exact(rng, 7, 50)
    assert sum(picks) == 7
    assert _common.iso_ms(1_767_225_600_123) == "2026-01-01T00:00:00.123Z"
