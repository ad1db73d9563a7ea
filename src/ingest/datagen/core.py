"""``generate``: every data set, scaled by one ``rows`` knob, plus the summary of what should land."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ingest.datagen._common import ProgressFn, write_json
from ingest.datagen.rest import write_rest
from ingest.datagen.s3 import plan_rows, write_s3
from ingest.datagen.saas import n_accounts, n_stripe_customers, write_saas
from ingest.datagen.webhooks import n_deliveries, write_webhooks

__all__ = [
    "FORMAT_VERSION",
    "OWNED",
    "SAMPLE_ROWS",
    "SAMPLE_SEED",
    "generate",
    "generate_sample",
    "progress_total",
]

# Bump when the layout or the meaning of expected.json changes.
FORMAT_VERSION = 1
# The committed sample in data/: small enough to read, big enough that every defect shows.
SAMPLE_ROWS = 200
SAMPLE_SEED = 0
# What generate() writes (and so may replace) inside out_dir; anything else there is left alone.
OWNED = ("expected.json", "rest", "webhooks", "s3", "saas")
_GENERATOR = "ingest.datagen"


def progress_total(rows: int) -> int:
    """The sum of all ``progress`` calls ``generate(rows=rows)`` will make (for a progress bar)."""
    s3_rows = sum(sum(counts) for counts in plan_rows(rows))
    return rows + n_deliveries(rows) + s3_rows + n_stripe_customers(rows) + n_accounts(rows)


def _clear(out_dir: Path) -> None:
    """Remove a previous run's output, refusing to touch a directory generate() did not write."""
    present = [name for name in OWNED if (out_dir / name).exists()]
    if not present:
        return
    try:
        previous = json.loads((out_dir / "expected.json").read_text(encoding="utf-8"))
        ours = previous.get("generator", {}).get("name") == _GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(present)} but no expected.json written by "
            f"{_GENERATOR}; choose an empty directory"
        )
    for name in present:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def generate(
    out_dir: Path, *, rows: int, seed: int = 0, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write REST, webhook, S3 and SaaS data sets under ``out_dir``; return ``expected.json``.

    ``rows`` is the size of the REST set; the S3 drops hold about as many orders, webhooks a fifth
    as many events (plus retries), the SaaS exports a tenth. The same ``(rows, seed)`` gives the same
    files. Memory stays bounded whatever ``rows`` is: everything is written in chunks.
    ``progress`` receives the number of rows just written, summing to ``progress_total(rows)``.
    Prints nothing. A previous run's output in ``out_dir`` is replaced; other files are kept.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear(out_dir)
    rest = write_rest(out_dir / "rest", rows=rows, seed=seed, progress=progress)
    webhooks = write_webhooks(out_dir / "webhooks", rows=rows, seed=seed, progress=progress)
    s3 = write_s3(out_dir / "s3", rows=rows, customers=rows, seed=seed, progress=progress)
    saas = write_saas(out_dir / "saas", rows=rows, seed=seed, progress=progress)
    summary = {
        "generator": {
            "name": _GENERATOR,
            "format_version": FORMAT_VERSION,
            "rows": rows,
            "seed": seed,
        },
        "total_rows": progress_total(rows),
        "rest": rest,
        "webhooks": webhooks,
        "s3": s3,
        "saas": saas,
    }
    write_json(out_dir / "expected.json", summary)
    return summary


def generate_sample(out_dir: Path, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write the small sample that is committed under ``data/`` (the only way it is made)."""
    return generate(out_dir, rows=SAMPLE_ROWS, seed=SAMPLE_SEED, progress=progress)
