"""Export fidelity benchmark (issue #5): random configs of every space exported to int8 bundles.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python benchmarks/export_fidelity.py              # 30 per space
    PYTHONPATH=. .venv/bin/python benchmarks/export_fidelity.py --configs 3  # smoke run

Needs one trained supernet per space on digits: ``--checkpoint SPACE=PATH`` or, by default,
``runs/benchmarks/<space>-digits.pt``, trained there with the space's recipe when missing
(resumable; ~10 min per space on 2 cores). Each subnet is first fine-tuned for
``--finetune-epochs`` epochs exactly as ``edgekit search`` fine-tunes its chosen model
(distillation from the largest subnet; 0 exports the inherited weights), then exported with
``export_model`` (BatchNorm recalibration, PTQ with QAT when PTQ loses more than half a point,
TFLite Micro and LiteRT reference runs over the whole digits test split). Prints markdown
tables (stdout): per config and per space the fp32 and int8 test accuracy and drop, TFLite
Micro vs LiteRT agreement, conversion time, arena and flash; then the patch-based tiny-cnn
configs against the same configs without patches (measured TFLite Micro arena: head = planned
activations, tail = persistent per-op data). Raw results go to ``--out/export_fidelity.json``.
Targets: int8 drop <= 1 point (tiny-cnn) and <= 2 points (tiny-vit); every export runs in
TFLite Micro.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_lines

REPO = Path(__file__).resolve().parents[1]
TARGET_DROP_POINTS = {"tiny-cnn": 1.0, "tiny-vit": 2.0}
# Shows the arena trade-off at a size where patches pay off in TFLite Micro.
PATCH_SHOWCASE = "r40-w1-rk1-p2s2-k3.3.3.3-e6.3.3.3"

logger = logging.getLogger("benchmarks.export_fidelity")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=30, help="random configs per space")
    parser.add_argument("--spaces", nargs="*", default=["tiny-cnn", "tiny-vit"])
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="SPACE=PATH",
        help="trained supernet of a space (default: runs/benchmarks/<space>-digits.pt)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "export_fidelity")
    parser.add_argument("--qat", default="auto", choices=("auto", "always", "never"))
    parser.add_argument(
        "--finetune-epochs", type=int, default=3,
        help="fine-tune each subnet like the search does before export (0: inherited weights)",
    )  # fmt: skip
    parser.add_argument("--patch-configs", type=int, default=5, help="patched configs compared")
    parser.add_argument(
        "--compare-only", type=Path, metavar="JSON",
        help="skip the exports: compare patch-based and whole-image execution on the configs of "
        "an earlier run's export_fidelity.json",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py", "edgekit.export.bundle"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from edgekit.data import load_dataset
    from edgekit.training import limit_threads

    limit_threads(args.threads)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    splits = load_dataset("digits", seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    print("# Export fidelity benchmark\n")
    print(machine_lines(torch.get_num_threads(), tensorflow=True) + "\n")
    results: dict[str, Any] = {}
    passed = True
    earlier = json.loads(args.compare_only.read_text()) if args.compare_only else None
    for name in args.spaces:
        space, supernet, checkpoint = _supernet(name, checkpoints.get(name), splits, args)
        if earlier is not None:
            if name == "tiny-cnn":
                patch_rows = _patch_comparison(space, supernet, earlier[name], splits, args)
                results["tiny-cnn-patches"] = patch_rows
                print(_patch_table(patch_rows) + "\n")
            continue
        rows = _export_configs(space, supernet, checkpoint, splits, args)
        results[name] = rows
        print(_config_table(name, rows) + "\n")
        summary, ok = _summary(name, rows)
        print(summary + "\n")
        passed &= ok
        if name == "tiny-cnn":
            patch_rows = _patch_comparison(space, supernet, rows, splits, args)
            results["tiny-cnn-patches"] = patch_rows
            print(_patch_table(patch_rows) + "\n")
    (args.out / "export_fidelity.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0 if passed else 1


def _supernet(name: str, path: str | None, splits: Any, args: argparse.Namespace) -> tuple:
    from edgekit.training import load_supernet, recipe, train_supernet

    checkpoint = Path(path) if path else REPO / "runs" / "benchmarks" / f"{name}-digits.pt"
    if path is None:
        from edgekit.spaces import get_space

        space = get_space(name, num_classes=splits.num_classes, in_channels=1)
        logger.info("training (or resuming) the %s supernet into %s", name, checkpoint)
        train_supernet(
            space, splits, checkpoint_path=checkpoint, resume=True, seed=args.seed,
            **recipe(name),
        )  # fmt: skip
    space, supernet, _ = load_supernet(checkpoint)
    return space, supernet, checkpoint


def _export_configs(
    space: Any, supernet: Any, checkpoint: Path, splits: Any, args: argparse.Namespace
) -> list[dict[str, Any]]:
    from edgekit.errors import EdgekitError
    from edgekit.export import export_model
    from edgekit.search.objectives import finetune_subnet, save_module_state

    rng = random.Random(args.seed)
    configs = [space.sample(rng) for _ in range(args.configs)]
    rows = []
    for i, cfg in enumerate(configs):
        genome = space.encode(cfg)
        started = time.perf_counter()
        row: dict[str, Any] = {"genome": genome, "params": space.count(cfg).params}
        module, weights = supernet, checkpoint
        if args.finetune_epochs:
            module = finetune_subnet(space, supernet, cfg, splits, epochs=args.finetune_epochs,
                                     seed=args.seed)  # fmt: skip
            weights = args.out / space.name / f"{i:02d}-finetuned.pt"
            save_module_state(module, weights)
        row["finetune_s"] = time.perf_counter() - started
        try:
            result = export_model(
                space, module, cfg, splits, args.out / space.name / f"{i:02d}",
                checkpoint_path=weights, qat=args.qat, seed=args.seed,
            )  # fmt: skip
        except EdgekitError as e:
            logger.error("%s %s failed: %s", space.name, genome, e)
            rows.append({**row, "error": str(e)})
            continue
        row.update(
            fp32=result.fp32_accuracy,
            ptq=result.ptq_int8_accuracy,
            qat=result.qat_int8_accuracy,
            qat_fp32=result.qat_fp32_accuracy,
            int8=result.int8_accuracy,
            drop_points=100 * result.accuracy_drop,
            method=result.quantization,
            top1_agreement=result.agreement.top1_agreement,
            max_abs_diff=result.agreement.max_abs_diff,
            mean_abs_diff=result.agreement.mean_abs_diff,
            parity=result.fp32_parity_max_abs_diff,
            arena_measured=result.arena_measured_bytes,
            arena_estimated=result.arena_estimated_bytes,
            arena_head=result.manifest["arena"]["measured_host_head_bytes"],
            arena_tail=result.manifest["arena"]["measured_host_tail_bytes"],
            flash=result.flash_bytes,
            convert_s=result.timings["convert"],
            verify_s=result.timings["verify"],
            qat_s=result.timings["qat"],
            total_s=time.perf_counter() - started,
        )
        logger.info(
            "%s %d/%d %s: fp32 %.2f%% int8 %.2f%% (%s), agreement %.3f, %.1f s",
            space.name, i + 1, len(configs), genome, 100 * row["fp32"], 100 * row["int8"],
            row["method"], row["top1_agreement"], row["total_s"],
        )  # fmt: skip
        rows.append(row)
    return rows


def _config_table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"## {name}: {len(rows)} random configs\n",
        "| # | genome | params | fp32 | int8 PTQ | int8 final | drop (pts) | TFLM=LiteRT top-1 "
        "| max/mean diff (int8 steps) | arena (B) | flash (B) | convert (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, row in enumerate(rows):
        if "error" in row:
            lines.append(f"| {i} | `{row['genome']}` | {row['params']:,} | FAILED: {row['error']} "
                         "| | | | | | | | |")  # fmt: skip
            continue
        final = f"{row['int8']:.2%}"
        if row["method"] == "qat":
            final += f" (QAT; fp32 {row['qat_fp32']:.2%})"
        lines.append(
            f"| {i} | `{row['genome']}` | {row['params']:,} | {row['fp32']:.2%} | "
            f"{row['ptq']:.2%} | {final} | {row['drop_points']:+.2f} | "
            f"{row['top1_agreement']:.2%} | {row['max_abs_diff']} / {row['mean_abs_diff']:.3f} | "
            f"{row['arena_measured']:,} | {row['flash']:,} | {row['convert_s']:.1f} |"
        )
    return "\n".join(lines)


def _summary(name: str, rows: list[dict[str, Any]]) -> tuple[str, bool]:
    done = [row for row in rows if "error" not in row]
    target = TARGET_DROP_POINTS.get(name, 1.0)
    if not done:
        return f"**{name}: no config exported**", False
    drops = [row["drop_points"] for row in done]
    within = sum(drop <= target for drop in drops)
    qat_runs = [row for row in done if row["qat"] is not None]
    ptq_drops = [100 * (row["fp32"] - row["ptq"]) for row in done]
    estimated = [row for row in done if row["arena_estimated"] is not None]
    exact = sum(row["arena_estimated"] == row["arena_measured"] for row in estimated)
    lines = [
        f"**{name} summary** ({len(done)}/{len(rows)} exported and ran in TFLite Micro):",
        f"- int8 drop (final): mean {statistics.mean(drops):+.2f}, max {max(drops):+.2f} "
        f"points; {within}/{len(done)} within the {target:g}-point target",
        f"- PTQ alone: mean {statistics.mean(ptq_drops):+.2f}, max {max(ptq_drops):+.2f} points; "
        f"QAT ran for {len(qat_runs)} config(s)",
        f"- TFLite Micro vs LiteRT reference kernels: top-1 agreement min "
        f"{min(row['top1_agreement'] for row in done):.2%}, mean "
        f"{statistics.mean(row['top1_agreement'] for row in done):.2%}; max |diff| "
        f"{max(row['max_abs_diff'] for row in done)} int8 steps, mean |diff| "
        f"{statistics.mean(row['mean_abs_diff'] for row in done):.3f}",
        f"- fp32 parity TF vs PyTorch: max {max(row['parity'] for row in done):.2e}",
        f"- fine-tune before export: mean {statistics.mean(r['finetune_s'] for r in done):.1f} s",
        f"- conversion (build + parity + convert + op check): mean "
        f"{statistics.mean(row['convert_s'] for row in done):.1f} s, max "
        f"{max(row['convert_s'] for row in done):.1f} s; verification mean "
        f"{statistics.mean(row['verify_s'] for row in done):.1f} s; whole export mean "
        f"{statistics.mean(row['total_s'] for row in done):.1f} s",
        f"- memory model: estimated arena equals the measured one for {exact}/{len(estimated)}",
    ]
    ok = len(done) == len(rows) and within == len(done)
    return "\n".join(lines), ok


def _patch_comparison(
    space: Any, supernet: Any, rows: list[dict[str, Any]], splits: Any, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Patched configs from the run (and the showcase) against the same configs whole-image,
    and exported with each patch calibrated on its own (``per_patch``: how the exporter
    quantized patches before it gave each layer one range over all patches)."""
    from edgekit.export import graph as graph_module
    from edgekit.export.pipeline import (
        extract_subnet,
        model_inputs,
        quantize_and_verify,
        sample_images,
    )

    patched = [space.decode(row["genome"]) for row in rows if "error" not in row]
    patched = [cfg for cfg in patched if cfg.patch_grid > 1][: args.patch_configs]
    patched.append(space.decode(PATCH_SHOWCASE))
    out = []
    for cfg in patched:
        row: dict[str, Any] = {"genome": space.encode(cfg)}
        for label, variant in (("patched", cfg), ("per_patch", cfg), ("whole", _whole(cfg))):
            module = extract_subnet(space, supernet, variant, splits.train, args.seed)
            representative = model_inputs(
                space, variant, sample_images(splits.train, 200, args.seed)
            )
            test = model_inputs(space, variant, splits.test.x)
            build = graph_module.build_tf_graph
            if label == "per_patch":  # quantize_and_verify looks the builder up when called
                graph_module.build_tf_graph = _calibrated_apart(build)
            try:
                result = quantize_and_verify(
                    space, module, variant, representative, test, splits.test.y
                )
            finally:
                graph_module.build_tf_graph = build
            row[label] = {
                "arena": result.arena.arena_bytes,
                "head": result.arena.head_bytes,
                "tail": result.arena.tail_bytes,
                "ops": len(result.ops),
                "int8": result.tflm_accuracy,
                "macs": space.count(variant).macs,
                "flash": len(result.model),
            }
        out.append(row)
    return out


def _calibrated_apart(build: Any) -> Any:
    def builder(*args: Any) -> Any:
        return dataclasses.replace(build(*args), shared_range_scopes=None)

    return builder


def _whole(cfg: Any) -> Any:
    return dataclasses.replace(cfg, patch_grid=1, patch_stages=1)


def _patch_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## tiny-cnn: patch-based vs whole-image execution (measured TFLite Micro arena)\n",
        "| genome | arena patched / whole (B) | change | head (activations) patched / whole "
        "| tail (per-op data) patched / whole | ops | MACs | int8 acc patched / whole | "
        "int8 acc, flash (B): patches calibrated apart |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        p, w, apart = row["patched"], row["whole"], row["per_patch"]
        lines.append(
            f"| `{row['genome']}` | {p['arena']:,} / {w['arena']:,} | "
            f"{100 * (p['arena'] / w['arena'] - 1):+.1f}% | {p['head']:,} / {w['head']:,} "
            f"({100 * (p['head'] / w['head'] - 1):+.1f}%) | {p['tail']:,} / {w['tail']:,} | "
            f"{p['ops']} / {w['ops']} | {p['macs']:,} / {w['macs']:,} | "
            f"{p['int8']:.2%} / {w['int8']:.2%} | {apart['int8']:.2%}, "
            f"{apart['flash']:,} (one range: {p['flash']:,}) |"
        )
    if rows:
        one_range, apart = (
            [100 * abs(row[label]["int8"] - row["whole"]["int8"]) for row in rows]
            for label in ("patched", "per_patch")
        )
        lines.append(
            f"\n|int8 patched - whole-image|: max {max(one_range):.2f} / mean "
            f"{statistics.mean(one_range):.2f} points with one range per layer, max "
            f"{max(apart):.2f} / mean {statistics.mean(apart):.2f} with patches calibrated apart"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
