"""`edgekit demo`: the main job on the bundled digits data for one board.

Trains (or resumes) the supernet, then runs the memory-budgeted search with the board's
budgets, fine-tunes and exports the chosen model and writes the report. A second run reuses
the finished supernet and search.
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
        description="Train (or reuse) the supernet on the bundled digits data, search for "
        "architectures that fit the board's budgets, fine-tune, export and verify the chosen "
        "one in TFLite Micro, and write the report. Reruns reuse finished work.",
    )
    parser.add_argument(
        "--board", default="stm32f746g-disco", help="board profile (default: %(default)s)"
    )
    parser.add_argument("--space", default="tiny-cnn", help="search space (default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, help="supernet epochs (default: the space's tuned recipe)"
    )
    parser.add_argument(
        "--evaluations", type=int, default=40, help="search evaluations (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="folder for the supernet and the search run (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_profiles_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edgekit.cli.search import print_result
    from edgekit.data import load_dataset
    from edgekit.errors import OutdatedCheckpointError
    from edgekit.profiles import load_profile
    from edgekit.search import run_search
    from edgekit.spaces import get_space
    from edgekit.training import recipe, train_supernet

    started = time.perf_counter()
    board = load_profile(args.board, args.profiles)
    splits = load_dataset("digits", seed=args.seed)
    space = get_space(args.space, num_classes=splits.num_classes, in_channels=1)
    settings = recipe(space.name)
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    checkpoint = args.out / f"{space.name}-supernet.pt"
    run_dir = args.out / f"search-{board.name}"
    console.print(
        f"[bold]{space.name}[/] on {splits.name} ({len(splits.train)} training images) for "
        f"[bold]{board.name}[/]; supernet {checkpoint}, search run {run_dir}"
    )
    with progress(not args.quiet) as bar:
        task = bar.add_task("supernet", total=None, status="")

        def report_training(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        def train() -> None:
            train_supernet(
                space, splits, checkpoint_path=checkpoint, resume=True, seed=args.seed,
                progress=report_training, **settings,
            )  # fmt: skip

        try:
            train()
        except OutdatedCheckpointError as e:
            # A demo folder from an older edgekit: keep it, and start afresh beside it.
            kept = args.out.with_name(f"{args.out.name}-old-{time.strftime('%Y%m%d-%H%M%S')}")
            args.out.rename(kept)
            console.print(f"[yellow]{e}[/]\nmoved the old demo folder to {kept}; starting afresh")
            train()
    trained = time.perf_counter()
    with progress(not args.quiet) as bar:
        task = bar.add_task("search", total=None, status="")

        def report_search(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = run_search(
            space.name, board.name, splits, run_dir, seed=args.seed,
            resume=run_dir.exists(), evaluations=args.evaluations, supernet=checkpoint,
            profiles=args.profiles, progress=report_search,
        )  # fmt: skip
    print_result(result)
    finished = time.perf_counter()
    console.print(
        f"demo took {finished - started:.0f} s: supernet {trained - started:.0f} s, "
        f"search + fine-tune + export {finished - trained:.0f} s"
    )
    return 0
