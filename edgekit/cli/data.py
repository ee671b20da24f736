"""`edgekit data`: load a dataset the way training will, and describe it."""

from __future__ import annotations

import argparse

from edgekit.cli._common import add_data_options, console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="load a dataset and describe its splits",
        description="Load a dataset exactly as training does (splits from --seed, optional "
        "resize and channel conversion) and print its splits, shape and classes. Use it to "
        "check a folder or file before a long run.",
    )
    add_data_options(parser)
    parser.add_argument("--size", type=int, metavar="PX", help="resize images to PX x PX")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="convert to 1 or 3 channels")
    parser.set_defaults(func=_describe)


def _describe(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgekit.data import load_dataset

    splits = load_dataset(args.data, image_size=args.size, channels=args.channels, seed=args.seed)
    height, width, channels = splits.input_shape
    table = Table(title=f"{splits.name} ({splits.source})")
    table.add_column("split")
    table.add_column("images", justify="right")
    for name in ("train", "val", "test"):
        table.add_row(name, str(len(getattr(splits, name))))
    console.print(table)
    console.print(f"input shape: {height} x {width} x {channels} (H x W x C), float32 in [0, 1]")
    classes = ", ".join(splits.classes)
    console.print(f"{splits.num_classes} classes: {classes}")
    return 0
