"""The command line: ``shmring bench [--quick] [--sizes LIST] [--duration S]
[--json PATH]`` (also ``python -m shmring.bench``) turns its flags into
``Settings``, runs them, and writes ``--json``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence

from .config import DEFAULT, MAX_SIZE, QUICK, KiB, MiB, fmt_size
from .results import BenchError
from .runner import run


def parse_size(text: str) -> int:
    """'8', '64B', '1K', '1KiB', '16M', '16MiB' -> bytes (K and M are 1024-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kKmM])(?:i?[bB])?|[bB])?\s*", text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 8, 64B, 1K, 64KiB, 16M)")
    size = int(match.group(1)) * {None: 1, "k": KiB, "m": MiB}[match.group(2) and match.group(2).lower()]
    if size < 8 or size % 8 or size > MAX_SIZE:
        raise ValueError(f"sizes must be multiples of 8 bytes from 8 B to {fmt_size(MAX_SIZE)}, not {text!r}")
    return size


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_size(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmring bench",
        description="Throughput, latency, copy floor and idle CPU of shmring.Ring against "
        "multiprocessing.Queue, multiprocessing.Pipe, os.pipe and faster-fifo (when installed), between processes.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (for tests)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="comma-separated item sizes in bytes, K or M (1024-based), multiples of 8; "
        "default 8,64,1K,64K,1M,16M (--quick: 8,64K,1M)",
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="sending time per throughput cell")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``shmring bench [--quick] [--sizes LIST] [--duration S] [--json PATH]``;
    returns the exit status: 0, 1 when a measurement failed, 2 for bad usage."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    settings = QUICK if args.quick else DEFAULT
    if args.sizes is not None:
        settings = dataclasses.replace(settings, sizes=args.sizes)
    if args.duration is not None:
        if not 0 < args.duration <= 60:
            parser.print_usage(sys.stderr)
            print("shmring bench: --duration must be in (0, 60] seconds", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, cell_seconds=args.duration)
    if args.json is not None and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        print(f"shmring bench: cannot write --json {args.json!r}", file=sys.stderr)
        return 2
    try:
        report = run(settings)
    except BenchError as exc:
        sys.stdout.flush()
        print(f"\nshmring bench: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(report), f, indent=2)
            f.write("\n")
    return 0
