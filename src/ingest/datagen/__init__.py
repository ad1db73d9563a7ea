"""Deterministic sample data: REST records, webhook deliveries, S3 drops and SaaS exports.

``generate(out_dir, rows=N, seed=S)`` writes every data set scaled by ``rows`` and an
``expected.json`` saying what should land; ``generate_sample(out_dir)`` writes the small set that is
committed under ``data/``. Run ``python -m ingest.datagen OUT_DIR --rows N`` (or ``--sample``).
See ``data/README.md`` for the layout.
"""

from __future__ import annotations

from ingest.datagen._common import ProgressFn
from ingest.datagen.core import (
    FORMAT_VERSION,
    SAMPLE_ROWS,
    SAMPLE_SEED,
    generate,
    generate_sample,
    progress_total,
)

__all__ = [
    "FORMAT_VERSION",
    "SAMPLE_ROWS",
    "SAMPLE_SEED",
    "ProgressFn",
    "generate",
    "generate_sample",
    "progress_total",
]
