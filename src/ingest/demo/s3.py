"""Step 2: the committed sample drops into a bucket, then into PostgreSQL by ``ingest run``'s loader.

The bucket keys are the paths under ``data/s3/`` (``drops/<drop id>/<file>``). The sample holds a
drop with bad rows, one with two corrupt files and one that never finished uploading: the loader
dead-letters the rows, quarantines the files and leaves the incomplete drop waiting.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape

from ingest.demo.context import DemoContext
from ingest.demo.summary import DemoSummary, SourceLine, count_rows, dead_letter_counts
from ingest.errors import StackError
from ingest.s3.loader import S3RunResult, run_s3_source, s3_client_for
from ingest.sources.spec import S3SourceSpec

__all__ = ["DEMO_BUCKET", "demo_s3_spec", "run_s3_step", "upload_drops"]

DEMO_BUCKET = "ingest-demo"


def demo_s3_spec(bucket: str) -> S3SourceSpec:
    """The demo's S3 source, declared as a platform engineer would in sources/*.yaml."""
    return S3SourceSpec.model_validate(
        {
            "name": "demo_orders",
            "kind": "s3",
            "bucket": bucket,
            "prefix": "drops/",
            "primary_key": ["order_id"],
            # The sample's malformed CSV has 2 bad rows in 9 on purpose: they are dead-lettered
            # and the other 7 load. At the 1% default the whole file would be quarantined.
            "max_bad_fraction": 0.25,
        }
    )


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    options: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # the one region S3 refuses a location constraint for
        options["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**options)


def _already_uploaded(s3: Any, bucket: str, key: str, body: bytes) -> bool:
    """Same size and MD5 ETag: uploading again would only add a version to load again."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    etag = str(head.get("ETag", "")).strip('"')
    return int(head["ContentLength"]) == len(body) and etag == hashlib.md5(body).hexdigest()


def upload_drops(
    ctx: DemoContext, s3: Any, bucket: str, region: str, *, advance: Any = None
) -> tuple[int, int]:
    """Put every file of ``data/s3/drops`` under its key; return (uploaded, already there)."""
    root = ctx.data_dir / "s3"
    files = sorted(p for p in (root / "drops").rglob("*") if p.is_file())
    _ensure_bucket(s3, bucket, region)
    uploaded = skipped = 0
    for path in files:
        key = path.relative_to(root).as_posix()
        body = path.read_bytes()
        if _already_uploaded(s3, bucket, key, body):
            skipped += 1
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            uploaded += 1
        if advance is not None:
            advance()
    return uploaded, skipped


def _files(root: Path) -> int:
    return sum(1 for p in (root / "drops").rglob("*") if p.is_file())


def run_s3_step(ctx: DemoContext, summary: DemoSummary, bucket: str) -> None:
    """Upload the sample drops and load them; add the source's line and notes to ``summary``."""
    spec = demo_s3_spec(bucket)
    expected = ctx.expected("s3/expected.json")["totals"]
    env = ctx.environ
    s3 = s3_client_for(spec, environ=env)
    region = s3.meta.region_name or "us-east-1"
    with ctx.connect() as conn:
        before = count_rows(conn, ctx.landing_schema, spec.table)
        letters_before = dead_letter_counts(conn, spec.name)
    ctx.say(f"S3: the sample drops → s3://{bucket}/{spec.prefix} on {ctx.s3_endpoint_url}")
    with ctx.progress() as progress:
        upload = progress.add_task("S3: uploading", total=_files(ctx.data_dir / "s3"))
        try:
            uploaded, skipped = upload_drops(
                ctx, s3, bucket, region, advance=lambda: progress.advance(upload)
            )
        except (BotoCoreError, ClientError) as exc:
            raise StackError(f"cannot upload the sample drops to s3://{bucket}: {exc}") from exc
        objects = progress.add_task("S3: loading objects", total=None)

        def on_progress(partial: S3RunResult) -> None:
            progress.update(objects, total=partial.pending or None, completed=partial.objects)

        result = run_s3_source(
            spec,
            database_url=ctx.database_url,
            state_schema=ctx.state_schema,
            landing_schema=ctx.landing_schema,
            s3=s3,
            on_progress=on_progress,
        )
    if result.status != "succeeded":
        raise StackError(f"the demo's S3 source failed: {result.error}")
    with ctx.connect() as conn:
        after = count_rows(conn, ctx.landing_schema, spec.table)
        letters = dead_letter_counts(conn, spec.name)
    new_letters = {kind: n - letters_before.get(kind, 0) for kind, n in letters.items()}
    summary.lines.append(
        SourceLine(
            source=spec.name,
            kind="s3",
            expected=int(expected["rows_to_land"]),
            landed=after - before,
            already_there=before,
            in_tables=after,
            duplicates=result.rows - result.inserted - result.updated,
            retries=None,  # S3 reads are boto3's, not the HTTP policy stack's
            dead_letters=new_letters.get("s3_row", 0),
            quarantined=result.quarantined,
        )
    )
    summary.facts |= {
        "s3_drops_ready": result.drops_ready,
        "s3_drops_waiting": result.drops_waiting,
        "s3_file_dead_letters": new_letters.get("s3_file", 0),
    }
    notes = [
        f"S3: {uploaded} files uploaded ({skipped} already in the bucket); {result.drops_ready}"
        f" drops complete, {result.drops_waiting} incomplete and waiting; {result.loaded}"
        f" objects loaded, {result.quarantined} corrupt ones quarantined"
        f" ({new_letters.get('s3_file', 0)} file dead letters)"
    ]
    for key, reason in result.quarantined_files:
        notes.append(f"  quarantined {escape(key)}: {escape(reason)}")
    summary.notes += notes
