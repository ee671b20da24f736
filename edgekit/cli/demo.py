"""`edgekit demo`: the main job, as far as it exists, on the bundled digits data.

It grows with the project: today it trains (or resumes) the tiny-CNN supernet, evaluates its
largest and smallest subnets and sets their size against the board's budgets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgekit.cli._common import add_profiles_option, console, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on the bundled digits data for one board",
        description="Train (or resume) the tiny-cnn supernet on the bundled digits data, "
        "evaluate its largest and smallest subnets after BatchNorm recalibration and set them "
        "against a board's budgets. A second run reuses the finished checkpoint.",
    )
    parser.add_argument(
        "--board", default="stm32f746g-disco", help="board profile (default: %(default)s)"
    )
    parser.add_argument("--space", default="tiny-cnn", help="search space (default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, help="supernet epochs (default: the space's tuned recipe)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="folder for the checkpoint (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_profiles_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgekit.data import load_dataset
    from edgekit.profiles import load_profile
    from edgekit.spaces import get_space
    from edgekit.training import evaluate, recipe, train_supernet
    from edgekit.units import format_size

    started = time.perf_counter()
    board = load_profile(args.board, args.profiles)
    splits = load_dataset("digits", seed=args.seed)
    space = get_space(args.space, num_classes=splits.num_classes, in_channels=1)
    settings = recipe(space.name)
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    checkpoint = args.out / f"{space.name}-supernet.pt"
    console.print(
        f"[bold]{space.name}[/] supernet on {splits.name} "
        f"({len(splits.train)} train images) for [bold]{board.name}[/]; "
        f"checkpoint {checkpoint}"
    )
    with progress(not args.quiet) as bar:
        task = bar.add_task("training", total=None, status="")

        def report(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = train_supernet(
            space,
            splits,
            checkpoint_path=checkpoint,
            resume=True,
            seed=args.seed,
            progress=report,
            **settings,
        )

    table = Table(title=f"{space.name} on {splits.name}, budgets of {board.name}")
    for column in ("subnet", "genome", "params", "MACs", "test acc"):
        table.add_column(column, justify="left" if column in ("subnet", "genome") else "right")
    for label, cfg in (("largest", space.largest()), ("smallest", space.smallest())):
        counts = space.count(cfg)
        accuracy = evaluate(
            space,
            result.supernet,
            cfg,
            splits.test,
            recalibrate_with=splits.train,
            seed=args.seed,
        )
        table.add_row(
            label,
            space.encode(cfg),
            f"{counts.params:,}",
            f"{counts.macs:,}",
            f"{accuracy:.1%}",
        )
    console.print(table)
    console.print(
        f"board {board.name}: {board.core} @ {board.clock_hz / 1e6:g} MHz, SRAM budget "
        f"{format_size(board.sram_budget_bytes)}, flash budget "
        f"{format_size(board.flash_budget_bytes)}"
    )
    console.print(
        f"supernet: {result.epochs_completed} epochs, checkpoint {result.checkpoint_path}; "
        f"demo took {time.perf_counter() - started:.0f} s"
    )
    return 0
