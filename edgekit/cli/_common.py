"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

# Piped output (logs, CI) is not cut to rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def add_profiles_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles",
        metavar="DIR",
        action="append",
        default=[],
        help="extra folder of board profiles (*.toml); may repeat; also $EDGEKIT_PROFILE_PATH",
    )


def add_budget_options(
    parser: argparse.ArgumentParser, *, board_help: str, board_required: bool = False
) -> None:
    """--board, --sram, --flash and --latency-ms, as ``edgekit search`` reads them."""
    parser.add_argument("--board", metavar="NAME", required=board_required, help=board_help)
    parser.add_argument(
        "--sram",
        metavar="SIZE",
        help="tensor-arena budget, e.g. 256KiB (default: the board's SRAM after the firmware)",
    )
    parser.add_argument(
        "--flash",
        metavar="SIZE",
        help="model flash budget, e.g. 1MiB (default: the board's flash after the firmware)",
    )
    parser.add_argument(
        "--latency-ms", type=float, metavar="MS", help="latency budget (default: none)"
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="digits",
        metavar="SPEC",
        help="dataset: 'digits' (bundled), 'fashion-mnist', or a path to IDX files, CIFAR-10 "
        "batches, a class_name/*.png image folder or an .npz file; 'FORMAT:PATH' forces a "
        "format (idx, cifar10, folder, npz) (default: digits)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


@contextmanager
def progress(enabled: bool = True) -> Iterator[object]:
    """A rich progress bar for long work; a no-op object when disabled (quiet mode)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=error_console,
        disable=not enabled,
        transient=False,
    ) as bar:
        yield bar
