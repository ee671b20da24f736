"""``edgekit train-supernet``: train a space's weight-shared supernet and checkpoint it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekit.cli._common import (
    add_budget_options,
    add_data_options,
    add_profiles_option,
    console,
    progress,
)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-supernet",
        help="train a search space's weight-shared supernet (resumable checkpoints)",
        description="Train one weight-shared supernet for a search space with the sandwich "
        "rule and in-place distillation, checkpointing after every epoch, then report the "
        "test accuracy of its largest and smallest subnets. Options left out come from the "
        "space's tuned recipe. With --board it trains only the subnets that fit the board's "
        "budgets, with the space's largest as the teacher (as 'edgekit search' does): the "
        "supernet then ranks those subnets better.",
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
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to train: cpu (default), cuda or cuda:N; the checkpoint loads anywhere "
        "(e.g. train on a GPU machine, then 'edgekit search --supernet PATH.pt' here)",
    )
    add_budget_options(
        parser,
        board_help="train only the subnets that fit this board's budgets (profile name or "
        ".toml path; default: every subnet of the space)",
    )
    add_profiles_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.errors import CheckpointError, ConfigError
    from edgekit.spaces import get_space
    from edgekit.training.supernet import training_device

    out = Path(args.out)
    if out.exists() and not (args.resume or args.force):
        raise CheckpointError(
            f"{str(out)!r} already exists; pass --resume to continue it or --force to overwrite it"
        )
    if out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a directory; expected a file path")
    get_space(args.space)  # fail on a bad name or device before loading any data
    training_device(args.device)
    budget_given = [f"--{k.replace('_', '-')}" for k in ("sram", "flash", "latency_ms")
                    if getattr(args, k) is not None]  # fmt: skip
    if budget_given and args.board is None:
        raise ConfigError(f"{', '.join(budget_given)} needs --board")
    board = None
    if args.board is not None:
        from edgekit.profiles import load_profile
        from edgekit.search import Budget

        board = load_profile(args.board, args.profiles)
        budget = Budget.for_board(
            board, sram=args.sram, flash=args.flash, latency_ms=args.latency_ms
        )

    from edgekit.data import load_dataset
    from edgekit.training import SpaceSampler, SubnetSampler, evaluate, recipe, train_supernet

    splits = load_dataset(args.data, seed=args.seed, max_per_split=args.max_per_split)
    space = get_space(
        args.space, num_classes=splits.num_classes, in_channels=splits.input_shape[2]
    )
    sampler: SubnetSampler = SpaceSampler(space)
    if board is not None:
        from edgekit.search.objectives import subnet_sampler

        sampler = subnet_sampler(space, board, budget, "fitting", seed=args.seed)
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
            sampler=sampler,
            device=args.device,
            **settings,
        )
    from rich.table import Table

    table = Table(
        title=f"{space.name} on {splits.name}: test accuracy ({len(splits.test)} images)",
        title_justify="left",
    )
    for column in ("subnet", "genome", "inherited BN", "recalibrated BN"):
        table.add_column(column, justify="right" if "BN" in column else "left")
    fitting = "" if board is None else " that fits"
    for label, cfg in (("largest", sampler.largest), (f"smallest{fitting}", sampler.smallest)):
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
