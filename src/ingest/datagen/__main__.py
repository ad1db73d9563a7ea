"""``python -m ingest.datagen OUT_DIR [--rows N] [--seed S] | --sample``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest.datagen.core import SAMPLE_ROWS, generate, generate_sample


def main(argv: list[str] | None = None) -> int:
    """Generate into OUT_DIR and print where the expected counts are."""
    parser = argparse.ArgumentParser(prog="python -m ingest.datagen", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to write (e.g. data/generated)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the REST set")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")
    parser.add_argument(
        "--sample",
        action="store_true",
        help=f"write the committed sample (rows={SAMPLE_ROWS}, seed=0); use OUT_DIR=data",
    )
    args = parser.parse_args(argv)
    if args.sample:
        summary = generate_sample(args.out_dir)
    else:
        summary = generate(args.out_dir, rows=args.rows, seed=args.seed)
    print(
        f"wrote {args.out_dir} ({summary['total_rows']} rows); see {args.out_dir / 'expected.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
