"""``python -m ingest.mockapi --host 127.0.0.1 --port 8080 [--records N] [--seed S] [--config F]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ingest.mockapi import MockConfig, serve


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ingest.mockapi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--records", type=int, help="fixture records (default 1000)")
    parser.add_argument("--seed", type=int, help="fixture and fault seed (default 0)")
    parser.add_argument("--config", type=Path, help="JSON file shaped like PUT /_admin/config")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)

    data = json.loads(args.config.read_text()) if args.config else {}
    # Explicit flags win over the file.
    if args.records is not None:
        data["records"] = args.records
    if args.seed is not None:
        data["seed"] = args.seed
    serve(
        args.host,
        args.port,
        MockConfig.model_validate(data),
        log_level=args.log_level,
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
