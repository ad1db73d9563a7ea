"""A small SaaS export: Stripe list-customers pages and a Salesforce Bulk API 2.0 query result.

Stripe customers are the REST fixture customers (``rest_record``) in Stripe's shape, so the same
person has the same ``cus_…`` id here and in the Stripe webhook events. Salesforce accounts carry
real 18-character ids (15-character id plus the case-checksum suffix).
"""

from __future__ import annotations

import csv
import io
import math
import random
import string
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.datagen._common import (
    ProgressFn,
    alnum,
    dumps_pretty,
    open_sink,
    rng_for,
)
from ingest.mockapi.fixtures import BASE_TIME, rest_record

__all__ = [
    "SOQL",
    "n_accounts",
    "n_stripe_customers",
    "salesforce_id18",
    "stripe_customer",
    "stripe_customer_id",
    "stripe_page_size",
    "write_saas",
]

SOQL = "SELECT Id, Name, Industry, LastModifiedDate FROM Account"
SALESFORCE_COLUMNS = ["Id", "Name", "Industry", "LastModifiedDate"]
# One result file per Bulk API locator page.
SALESFORCE_ROWS_PER_FILE = 50_000
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
# The Salesforce picklist, plus blanks: Industry is often empty in real orgs.
_INDUSTRIES = [
    "Agriculture",
    "Banking",
    "Biotechnology",
    "Chemicals",
    "Communications",
    "Construction",
    "Consulting",
    "Education",
    "Energy",
    "Finance",
    "Food & Beverage",
    "Healthcare",
    "Insurance",
    "Manufacturing",
    "Media",
    "Not For Profit",
    "Retail",
    "Technology",
    "Transportation",
    "",
    "",
]
_NAME_A = ["Blue", "North", "Quantum", "Silver", "Granite", "Bright", "Open", "Lakeside"]
_NAME_B = ["River", "Peak", "Harbor", "Field", "Forge", "Signal", "Meadow", "Works"]
# Names with a comma or a quote must survive CSV quoting.
_NAME_SUFFIX = ["Inc.", "GmbH", "Ltd", "LLC", "& Sons", ", Inc.", "S.A.", '"The Original"']


def n_stripe_customers(rows: int) -> int:
    """How many customers the Stripe export holds for a data set of ``rows``."""
    return max(rows // 10, 1)


def n_accounts(rows: int) -> int:
    """How many Salesforce accounts the Bulk API result holds for a data set of ``rows``."""
    return max(rows // 10, 1)


def stripe_page_size(n: int) -> int:
    """Stripe's default ``limit`` (10) shows pagination on the sample; its maximum (100) keeps the
    file count of large exports down."""
    return 10 if n <= 100 else 100


def stripe_customer_id(i: int, *, seed: int) -> str:
    """The ``cus_…`` id of REST customer ``i``."""
    return "cus_" + alnum(rng_for(seed, "cus", i), 14)


def stripe_customer(i: int, *, seed: int) -> dict[str, Any]:
    """REST customer ``i`` as a Stripe ``customer`` object."""
    record = rest_record(i, seed=seed)
    created = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
    return {
        "id": stripe_customer_id(i, seed=seed),
        "object": "customer",
        "created": int(created.timestamp()),
        "currency": record["currency"],
        "delinquent": record["status"] == "past_due",
        "email": record["email"],
        "livemode": False,
        "metadata": {"ingest_customer_id": str(i)},
        "name": record["name"],
    }


def salesforce_id18(id15: str) -> str:
    """Append the 3-character case checksum that makes a 15-character id case-insensitive.

    Each 5-character block contributes one character: bit ``j`` is set when character ``j`` of the
    block is an uppercase letter, and the 5-bit value indexes
    ``ABCDEFGHIJKLMNOPQRSTUVWXYZ012345``.
    """
    if len(id15) != 15:
        raise ValueError(f"a 15-character Salesforce id is needed, not {id15!r}")
    alphabet = string.ascii_uppercase + "012345"
    suffix = ""
    for block in range(3):
        bits = sum(
            1 << j for j, ch in enumerate(id15[block * 5 : block * 5 + 5]) if "A" <= ch <= "Z"
        )
        suffix += alphabet[bits]
    return id15 + suffix


def _base62(n: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        n, rem = divmod(n, 62)
        digits = _BASE62[rem] + digits
    return digits


def _write_stripe(saas_dir: Path, n: int, seed: int, progress: ProgressFn | None) -> dict[str, Any]:
    """Pages of ``GET /v1/customers``: newest first, as Stripe lists them."""
    limit = stripe_page_size(n)
    pages = math.ceil(n / limit)
    prefix = "saas/stripe/customers/"
    for page in range(pages):
        newest = n - page * limit
        ids = range(newest, max(newest - limit, 0), -1)
        body = {
            "object": "list",
            "data": [stripe_customer(i, seed=seed) for i in ids],
            "has_more": page < pages - 1,
            "url": "/v1/customers",
        }
        path = saas_dir / "stripe" / "customers" / f"page-{page + 1:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((dumps_pretty(body) + "\n").encode("utf-8"))
        if progress is not None:
            progress(len(ids))
    return {"prefix": prefix, "pages": pages, "page_size": limit, "records": n}


def _account_row(rng: random.Random, id_number: int, k: int) -> list[str]:
    """Account ``k`` of the export; ``id_number`` makes its (ordered) id."""
    suffix = rng.choice(_NAME_SUFFIX)
    sep = "" if suffix.startswith(",") else " "
    name = f"{rng.choice(_NAME_A)} {rng.choice(_NAME_B)}{sep}{suffix}"
    modified = BASE_TIME + timedelta(minutes=k, seconds=rng.randrange(60))
    return [
        salesforce_id18("001Dn00000" + _base62(id_number, 5)),
        name,
        rng.choice(_INDUSTRIES),
        # The API's datetime form: milliseconds and a +0000 offset, not "Z".
        modified.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
    ]


def _write_salesforce(
    saas_dir: Path, n: int, seed: int, progress: ProgressFn | None
) -> dict[str, Any]:
    """Bulk API 2.0 query results: every value quoted, ``""`` for null, LF line endings."""
    rng = rng_for(seed, "salesforce")
    # Ids count up from an org-specific offset, so result rows come out in Id order.
    offset = rng.randrange(62**4, 62**5 - n - 1)
    files: list[str] = []
    for start in range(0, n, SALESFORCE_ROWS_PER_FILE):
        rel = f"saas/salesforce/Account/result-{len(files) + 1:04d}.csv"
        files.append(rel)
        count = min(SALESFORCE_ROWS_PER_FILE, n - start)
        with open_sink(saas_dir.parent / rel, gzipped=False) as sink:
            text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
            writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(SALESFORCE_COLUMNS)
            for k in range(start, start + count):
                writer.writerow(_account_row(rng, offset + k, k))
            text.flush()
            text.detach()
        if progress is not None:
            progress(count)
    return {"soql": SOQL, "files": files, "records": n}


def write_saas(
    saas_dir: Path, *, rows: int, seed: int, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write ``saas/stripe/customers/page-*.json`` and ``saas/salesforce/Account/result-*.csv``."""
    return {
        "stripe_customers": _write_stripe(saas_dir, n_stripe_customers(rows), seed, progress),
        "salesforce_accounts": _write_salesforce(saas_dir, n_accounts(rows), seed, progress),
    }
