"""One command-line shape for every benchmark: argparse from the module docstring, logging, `--json`.

`--json` means one thing everywhere: the last stdout line is the run's record as one JSON object
(without it, a script prints only its human-readable summary). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["emit", "listed", "parser", "positive_int", "setup_logging"]


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m <module>`'s parser, described by the first paragraph of `doc`, with `--json`."""
    first = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=first)
    p.add_argument("--json", action="store_true", help="print the record as one JSON object, last line")
    return p


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped logs on stderr; httpx's one line per request only at WARNING."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def emit(record: dict[str, Any], as_json: bool, summary: Iterable[str] = ()) -> None:
    """Print the human summary, then (with `--json`) the record as the last stdout line."""
    for line in summary:
        print(line)
    if as_json:
        print(json.dumps(record, default=str), flush=True)


T = TypeVar("T")


def positive_int(text: str) -> int:
    """A count that must be at least 1 (repeats, actors, users)."""
    if (value := int(text)) < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def listed(item: Callable[[str], T] = str) -> Callable[[str], tuple[T, ...]]:
    """Comma-separated values, each read by `item`: `listed(int)("10,25")` is (10, 25)."""

    def parse(text: str) -> tuple[T, ...]:
        return tuple(item(x.strip()) for x in text.split(",") if x.strip())

    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'value')}"  # argparse's error names it
    return parse
