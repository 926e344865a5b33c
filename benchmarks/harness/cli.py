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
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness import ROOT
from deployments.serve_config import DEFAULT_PATH

__all__ = [
    "add_load_window",
    "check_load_window",
    "command_line",
    "emit",
    "listed",
    "parser",
    "positive_int",
    "record_out",
    "setup_logging",
    "write_record",
]

logger = logging.getLogger(__name__)


def parser(module: str, doc: str | None, *, serve_port: int | None = None) -> argparse.ArgumentParser:
    """`python -m <module>`'s parser, described by the first paragraph of `doc`, with `--json`.

    `serve_port`: the script starts its own Serve from a config; adds `--config` and `--port` (this
    default; 0 means the script picks a free port).
    """
    if module == "__main__":  # run as `python -m benchmarks.x`: name the module, not __main__
        module = getattr(sys.modules["__main__"].__spec__, "name", module)
    first = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=first)
    p.add_argument("--json", action="store_true", help="print the record as one JSON object, last line")
    if serve_port is not None:
        p.add_argument("--config", default=str(DEFAULT_PATH), help="the Serve config to deploy from")
        free = " (default 0: a free one)" if serve_port == 0 else ""
        p.add_argument(
            "--port",
            type=int,
            default=serve_port,
            help=f"its own Serve on 127.0.0.1{free} (8000: make serve)",
        )
    return p


def add_load_window(
    p: argparse.ArgumentParser,
    *,
    users: int,
    seconds: float,
    warmup_s: float,
    memory_every_s: float,
    record: Path,
    quick: str,
) -> None:
    """The options of a measured window of closed-loop users with node-memory samples, and its record."""
    p.add_argument("--users", type=positive_int, default=users, help="closed-loop users, round-robin")
    p.add_argument("--seconds", type=float, default=seconds, help="measured, per setup")
    p.add_argument("--warmup-s", type=float, default=warmup_s, help="load before each measured window")
    p.add_argument(
        "--memory-every-s", type=float, default=memory_every_s, help="node memory samples under load"
    )
    p.add_argument("--seed", type=int, default=0, help="the texts' order")
    p.add_argument("--deploy-timeout-s", type=float, default=600.0)
    p.add_argument(
        "--out", default=None, help=f"record file (default {record.relative_to(ROOT)}; --quick: reports/)"
    )
    p.add_argument("--quick", action="store_true", help=quick)


def check_load_window(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`add_load_window`'s options in range, or the parser's error naming them."""
    if args.seconds <= 0 or args.warmup_s < 0 or args.memory_every_s <= 0:
        p.error("--seconds and --memory-every-s must be > 0, --warmup-s >= 0")


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


def command_line(module: str, argv: list[str] | None) -> str:
    """The command a record names: `python -m <module>` and its arguments (`argv`, else this process's)."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def record_out(out: str | None, quick: bool, record: Path) -> Path:
    """Where a run writes its record: `--out` if given, else `record`, but a `--quick` run's goes to
    `reports/<record's name>_quick.json`, so that the recorded file stays as it is."""
    if out:
        return Path(out)
    return ROOT / "reports" / f"{record.stem}_quick{record.suffix}" if quick else record


def write_record(record: dict[str, Any], path: Path) -> None:
    """`record` as indented JSON at `path` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    logger.info("wrote %s", path)


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
