"""``edgekit train-supernet``: train a space's weight-shared supernet and checkpoint it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekit.cli._common import add_data_options, console, progress

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-supernet",
        help="train a search space's weight-shared supernet (resumable checkpoints)",
        description="Train one weight-shared supernet for a search space with the sandwich "
        "rule and in-place distillation, checkpointing after every epoch, then report the "
        "test accuracy of its largest and smallest subnets. Options left out come from the "
        "space's tuned recipe.",
    )
    parser.add_argument("--space", required=True, metavar="NAME", help="search space name")
    add_data_options(parser)
    parser.add_argument("--out", required=True, metavar="PATH.pt", help="checkpoint file")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue the checkpoint at --out (if any)"
    )
    again.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs (default: recipe)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="batch size (default: recipe)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: recipe)")
    parser.add_argument(
        "--max-per-split",
        type=int,
        metavar="N",
        help="use at most N images per split (quick runs)",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads (default: the cores available)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.errors import CheckpointError
    from edgekit.spaces import get_space

    out = Path(args.out)
    if out.exists() and not (args.resume or args.force):
        raise CheckpointError(
            f"{str(out)!r} already exists; pass --resume to continue it or --force to overwrite it"
        )
    if out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a directory; expected a file path")
    get_space(args.space)  # fail on a bad name before loading any data

    from edgekit.data import load_dataset
    from edgekit.training import evaluate, recipe, train_supernet

    splits = load_dataset(args.data, seed=args.seed, max_per_split=args.max_per_split)
    space = get_space(
        args.space, num_classes=splits.num_classes, in_channels=splits.input_shape[2]
    )
    settings = recipe(space.name)
    for key in ("epochs", "batch_size", "lr"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    quiet = getattr(args, "quiet", False)
    with progress(enabled=not quiet) as bar:
        task = bar.add_task(f"train {space.name}", total=None, status="")

        def report(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = train_supernet(
            space,
            splits,
            checkpoint_path=out,
            seed=args.seed,
            resume=args.resume,
            progress=report,
            num_threads=args.threads,
            **settings,
        )
    from rich.table import Table

    table = Table(
        title=f"{space.name} on {splits.name}: test accuracy ({len(splits.test)} images)",
        title_justify="left",
    )
    for column in ("subnet", "genome", "inherited BN", "recalibrated BN"):
        table.add_column(column, justify="right" if "BN" in column else "left")
    for label, cfg in (("largest", space.largest()), ("smallest", space.smallest())):
        inherited = evaluate(space, result.supernet, cfg, splits.test)
        recalibrated = evaluate(
            space, result.supernet, cfg, splits.test, recalibrate_with=splits.train
        )
        table.add_row(label, space.encode(cfg), f"{inherited:.2%}", f"{recalibrated:.2%}")
    console.print(table)
    resumed = (
        f", resumed from epoch {result.resumed_from_epoch}"
        if result.resumed_from_epoch is not None
        else ""
    )
    console.print(
        f"{result.epochs_completed} epoch(s){resumed} in {result.wall_seconds:.0f} s; "
        f"checkpoint: {out}"
    )
    return 0
