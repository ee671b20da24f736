"""``edgekit search``: data and a board in; searched, fine-tuned and exported models out."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from edgekit.cli._common import (
    add_budget_options,
    add_data_options,
    add_profiles_option,
    console,
    progress,
)

logger = logging.getLogger(__name__)

PARETO_ROWS_SHOWN = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search architectures that fit a board, then fine-tune and export the best",
        description="Memory-budgeted architecture search: every candidate is checked against "
        "the board's budgets (tensor arena, flash, latency) before any accuracy work; NSGA-II "
        "over accuracy (inherited from a weight-shared supernet, which is trained or reused), "
        "arena, flash and latency, with a gradient-boosted-tree accuracy predictor screening "
        "the offspring. The chosen model (highest validation accuracy) of each space is "
        "fine-tuned (or trained on its own: --scratch-epochs) and exported as an int8 TFLite "
        "Micro bundle, and a report is written. "
        "Every trial is stored as it finishes: --resume continues a crashed run.",
    )
    parser.add_argument(
        "--space",
        default="tiny-cnn",
        metavar="NAME",
        help="search space: a name from 'edgekit space list', or 'all' (default: %(default)s)",
    )
    add_budget_options(
        parser, board_help="board profile name or .toml path", board_required=True
    )
    add_data_options(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="run folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out (same settings)"
    )
    parser.add_argument(
        "--evaluations",
        type=int,
        default=60,
        metavar="N",
        help="accuracy evaluations per space (default: %(default)s)",
    )
    parser.add_argument(
        "--population", type=int, default=16, metavar="N", help="NSGA-II population (default: 16)"
    )
    parser.add_argument(
        "--strategy",
        choices=("nsga2", "random"),
        default="nsga2",
        help="search strategy (default: %(default)s; random is the baseline)",
    )
    parser.add_argument(
        "--no-predictor",
        action="store_true",
        help="evaluate NSGA-II offspring without the accuracy predictor's pre-screen",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        metavar="N",
        help="validation images per accuracy evaluation (default: all)",
    )
    parser.add_argument(
        "--supernet",
        action="append",
        type=Path,
        metavar="PATH.pt",
        help="reuse a trained supernet checkpoint (one per space; may repeat) instead of "
        "training one in --out",
    )
    parser.add_argument(
        "--supernet-epochs",
        type=int,
        metavar="N",
        help="epochs when training the supernet (default: the space's recipe)",
    )
    parser.add_argument(
        "--supernet-subnets",
        choices=("fitting", "fitting-only", "space"),
        default="fitting",
        help="subnets a supernet trained here trains: 'fitting', the space's largest as the "
        "teacher and otherwise only subnets that fit the budgets (MCUNet); 'fitting-only', the "
        "teacher fits too (faster, less accurate); 'space', every subnet (default: %(default)s)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=3,
        metavar="N",
        help="fine-tuning epochs of the chosen model, 0 to skip (default: %(default)s)",
    )
    parser.add_argument(
        "--scratch-epochs",
        type=int,
        default=0,
        metavar="N",
        help="instead of fine-tuning, train the chosen model on its own from fresh weights for "
        "N epochs with the supernet's recipe: slower, and more accurate on CIFAR-10 "
        "(default: 0, fine-tune)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="where the supernet and the chosen model train: cpu, cuda, cuda:1 ... (the search "
        "and the export run on the CPU; default: %(default)s)",
    )
    parser.add_argument("--no-export", action="store_true", help="search only; export nothing")
    parser.add_argument(
        "--qat",
        choices=("auto", "always", "never"),
        default="auto",
        help="quantization-aware fine-tuning at export (default: %(default)s)",
    )
    parser.add_argument(
        "--max-per-split", type=int, metavar="N", help="use at most N images per split"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads (default: the cores available)"
    )
    add_profiles_option(parser)
    parser.set_defaults(func=run)


def _supernets(paths: list[Path] | None) -> Any:
    """One checkpoint as is; several as {space: path} read from their headers."""
    if not paths:
        return None
    if len(paths) == 1:
        return paths[0]
    from edgekit.training import read_checkpoint

    return {read_checkpoint(path)["space"]: path for path in paths}


def run(args: argparse.Namespace) -> int:
    from edgekit.search import run_search

    quiet = getattr(args, "quiet", False)
    with progress(enabled=not quiet) as bar:
        task = bar.add_task("search", total=None, status="")

        def report(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = run_search(
            args.space,
            args.board,
            args.data,
            args.out,
            sram=args.sram,
            flash=args.flash,
            latency_ms=args.latency_ms,
            seed=args.seed,
            resume=args.resume,
            strategy=args.strategy,
            evaluations=args.evaluations,
            population=args.population,
            predictor=not args.no_predictor,
            eval_samples=args.eval_samples,
            supernet=_supernets(args.supernet),
            supernet_epochs=args.supernet_epochs,
            supernet_subnets=args.supernet_subnets,
            finetune_epochs=args.finetune_epochs,
            scratch_epochs=args.scratch_epochs,
            export=not args.no_export,
            qat=args.qat,
            max_per_split=args.max_per_split,
            profiles=args.profiles,
            num_threads=args.threads,
            device=args.device,
            progress=report,
        )
    print_result(result)
    return 0


def print_result(result: Any) -> None:
    """The Pareto table, the chosen model with its measured figures, and the report path."""
    from rich.table import Table

    from edgekit.units import format_size

    table = Table(
        title=f"Pareto set on {result.board} ({result.budget.describe()}): "
        f"{len(result.pareto)} of {len(result.trials)} evaluated",
        title_justify="left",
    )
    for column in ("#", "space", "genome", "val acc", "test acc", "arena", "flash", "ms"):
        table.add_column(column, justify="left" if column in ("space", "genome") else "right")
    for i, trial in enumerate(result.pareto[:PARETO_ROWS_SHOWN]):
        chosen = result.chosen is not None and trial.key == result.chosen.key
        test = "-" if trial.test_accuracy is None else f"{trial.test_accuracy:.1%}"
        table.add_row(
            str(i), trial.space, trial.genome, f"{trial.val_accuracy:.1%}", test,
            format_size(trial.arena_bytes), format_size(trial.flash_bytes),
            f"{trial.latency_ms:.1f}", style="bold yellow" if chosen else None,
        )  # fmt: skip
    console.print(table)
    if len(result.pareto) > PARETO_ROWS_SHOWN:
        console.print(f"... {len(result.pareto) - PARETO_ROWS_SHOWN} more in the report")
    chosen = result.chosen
    if chosen is not None:
        console.print(
            f"[bold]chosen:[/] {chosen.space} [bold]{chosen.genome}[/]  val acc "
            f"{chosen.val_accuracy:.1%}; estimated arena {format_size(chosen.arena_bytes)}, "
            f"flash {format_size(chosen.flash_bytes)}, latency {chosen.latency_ms:.1f} ms"
        )
    export = result.chosen_export
    if export is not None:
        firmware = export.get("arena_firmware_bytes")
        console.print(
            f"[bold]exported:[/] {export['bundle']}  int8 test acc "
            f"{export['int8_test_accuracy']:.1%}; TFLite Micro arena measured "
            f"{format_size(export['arena_measured_host_bytes'])} on the host"
            + (f" ({format_size(firmware)} for the board's 32-bit build)" if firmware else "")
            + f"; flash {format_size(export['flash_bytes'])}"
        )
    for space, stats in result.summaries.items():
        tau = stats.get("predictor_kendall_tau")
        console.print(
            f"{space}: {stats.get('evaluated', 0)} evaluated, {stats.get('rejected', 0)} over "
            f"budget, {stats.get('screened_out', 0)} screened out by the predictor"
            + ("" if tau is None else f" (Kendall tau {tau:.2f})")
        )
    console.print(f"report: {result.report.get('html')}")
