"""`edgekit export`: one subnet of a trained supernet to a verified int8 deployment bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgekit.cli._common import add_profiles_option, console, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a subnet to an int8 TFLite Micro bundle and verify it",
        description="Build the subnet in Keras from its config, copy the supernet's weights, "
        "quantize to full int8 (quantization-aware fine-tuning when post-training loses more "
        "than half a point), run it in TFLite Micro and LiteRT, and write model.tflite, "
        "model_data.cc/.h, manifest.json and a report to --out.",
    )
    parser.add_argument(
        "source",
        metavar="CHECKPOINT_OR_CONFIG",
        help="a supernet checkpoint (.pt, with --config) or a config JSON file (with "
        "--checkpoint, or holding {'config': ..., 'checkpoint': ...})",
    )
    parser.add_argument("--config", help="genome string, config JSON text or a config .json file")
    parser.add_argument("--checkpoint", type=Path, help="supernet checkpoint for a config file")
    parser.add_argument("--board", help="check the bundle against this board's budgets")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle folder")
    parser.add_argument(
        "--data", default="digits", metavar="SPEC", help="dataset for calibration and checks"
    )
    parser.add_argument(
        "--qat",
        default="auto",
        choices=("auto", "always", "never"),
        help="quantization-aware fine-tuning: when post-training loses > 0.5 points of "
        "validation accuracy (auto)",
    )
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="instead: prune the 1x1 convs in blocks with fine-tuning and write a float32 "
        "model_sparse.tflite for LiteRT's XNNPACK sparse inference (Cortex-A class boards; "
        "TFLite Micro has no sparse kernels)",
    )
    parser.add_argument(
        "--sparsity",
        type=float,
        default=0.8,
        metavar="FRACTION",
        help="with --sparse: fraction of 1x1 conv weights zeroed, above 2/3 (default: 0.8)",
    )
    parser.add_argument(
        "--sparse-block",
        choices=("4x1", "1x4"),
        default="4x1",
        help="with --sparse: pruning block, output x input channels (default: 4x1, what "
        "XNNPACK's 64-bit Arm kernels use)",
    )
    add_profiles_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edgekit.export.from_path import export_from_path
    from edgekit.units import format_size

    with progress(not args.quiet) as bar:
        task = bar.add_task("export", total=None, status="")

        def report(done: int, total: int, status: str) -> None:
            bar.update(task, completed=done, total=total, status=status)

        result = export_from_path(
            args.source, args.board, args.out, config=args.config, checkpoint=args.checkpoint,
            data_spec=args.data, qat=args.qat, sparse=_sparse(args), profile_dirs=args.profiles,
            progress=report,
        )  # fmt: skip
    if args.sparse:
        console.print(
            f"[bold]{result.space}[/] exported to {result.out_dir} (XNNPACK sparse, float32): "
            f"{result.zero_fraction:.0%} zeros in the 1x1 convs, test accuracy "
            f"{result.accuracy:.1%} in LiteRT (as trained {result.source_accuracy:.1%}); "
            f"{format_size(result.model_bytes)} (dense {format_size(result.dense_bytes)})"
        )
        return 0
    console.print(
        f"[bold]{result.space}[/] exported to {result.out_dir}: int8 test accuracy "
        f"{result.int8_accuracy:.1%} in TFLite Micro (fp32 {result.fp32_accuracy:.1%}); "
        f"arena {format_size(result.arena_measured_bytes)} measured, flash "
        f"{format_size(result.flash_bytes)}"
    )
    return 0


def _sparse(args: argparse.Namespace) -> Any:
    if not args.sparse:
        return False
    from edgekit.export.sparse import SparseSettings

    outputs, inputs = (int(n) for n in args.sparse_block.split("x"))
    return SparseSettings(sparsity=args.sparsity, block=(outputs, inputs))
