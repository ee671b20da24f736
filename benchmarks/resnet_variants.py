"""ResNet-8 variants within ResNet-8's own budgets, trained like it (issue #6).

The space ceiling (``space_ceiling.py``) found no tiny-cnn config within ResNet-8's arena and
flash that trains as well as ResNet-8. Before laying a search space out as ResNet-8 is, this
asks whether ResNet-8 itself is a local optimum of its budgets: variants with other widths and
other numbers of residual stacks per stage are exported to int8 (random weights: the arena and
flash do not depend on their values), measured with the memory model for a 32-bit board build, and
those within ResNet-8's arena and flash are trained exactly like it
(``search_vs_baselines._train``, the search benchmark's 10,000-image subset, ``--epochs``,
seeds 0 .. ``--seeds`` - 1) on the CPU.

Run from the repository root after ``space_ceiling.py plan`` (for its ``splits.npz``):

    PYTHONPATH=. .venv/bin/python benchmarks/resnet_variants.py --splits runs/ceiling/splits.npz \\
        --out runs/resnet-variants --workers 2

Trained models are appended to ``results.jsonl`` in ``--out`` (a rerun skips them).
CPU training here is deterministic: a seed gives the same accuracy on every run.
``--ablations`` also trains ResNet-8 with each of tiny-resnet's differences from it and with
tiny-cnn's supernet initialisation (``ABLATIONS``); ``--device cuda --workers 12`` trains on a
GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_name

logger = logging.getLogger("benchmarks.resnet_variants")
# name: (stem and stage widths, residual stacks per stage); the first is ResNet-8.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet8": ((16, 16, 32, 64), (1, 1, 1)),
    "deeper stage 1": ((16, 16, 32, 56), (2, 1, 1)),
    "deeper stage 2": ((16, 16, 32, 48), (1, 2, 1)),
    "deeper stage 3": ((16, 16, 32, 40), (1, 1, 2)),
    "wider stage 2": ((16, 16, 40, 56), (1, 1, 1)),
    "stages 2-3 at 48": ((16, 16, 48, 48), (1, 1, 1)),
    "narrow stem": ((8, 16, 32, 64), (1, 1, 1)),
}
# name: ``_resnet8_module`` keywords; ResNet-8's layout, one tiny-resnet difference at a time
# (``--ablations``; trained whether or not they fit, footprints not measured).
ABLATIONS: dict[str, dict[str, bool]] = {
    "no projection shortcuts": {"projection": False},
    "ReLU6": {"relu6": True},
    "activation before the add": {"relu_after_add": False},
    "tiny-resnet's block (all three)": {"projection": False, "relu6": True,
                                        "relu_after_add": False},
    "all three but the shortcuts": {"relu6": True, "relu_after_add": False},
    "all three but the activation": {"projection": False, "relu6": True},
    "tiny-cnn's supernet initialisation": {"supernet_init": True},
}


def _footprint(name: str, num_classes: int, representative: Any) -> dict[str, Any]:
    """Arena and flash of the variant's int8 export (32-bit board build), MACs, parameters."""
    import torch
    from search_vs_baselines import _resnet8_counts, _resnet8_graph, _resnet8_module

    from edgekit.estimate import analyze_tflite
    from edgekit.export.convert import compact_model, convert_int8

    widths, blocks = VARIANTS[name]
    shape = representative.shape[1:]
    macs, params = _resnet8_counts(num_classes, shape, widths, blocks)
    module = _resnet8_module(num_classes, shape[2], widths, blocks).eval()
    # As after training: untrained BatchNorms fold into all-zero biases, which the converter
    # stores once (less flash than the trained model).
    generator = torch.Generator().manual_seed(0)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for tensor in (bn.bias.data, bn.running_mean):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    model = compact_model(convert_int8(_resnet8_graph(module, shape, num_classes),
                                       representative))  # fmt: skip
    board = analyze_tflite(model, pointer_bytes=4)
    return {"name": name, "widths": widths, "blocks": blocks,
            "macs": macs, "params": params,
            "arena_board_bytes": board.arena_bytes, "flash_bytes": board.flash_bytes}  # fmt: skip


@functools.cache
def _splits(path: Path) -> Any:
    """The subset, decoded once per worker process (20,000 JPEGs)."""
    from space_ceiling import _read_splits

    return _read_splits(path)


def _train_one(job: tuple[dict[str, Any], str, int, int, str]) -> dict[str, Any]:
    import torch
    from search_vs_baselines import _resnet8_module, _test_accuracy, _train

    row, splits_path, epochs, seed, device = job
    torch.set_num_threads(1)
    splits = _splits(Path(splits_path))
    torch.manual_seed(seed)
    module = _resnet8_module(splits.num_classes, splits.train.x.shape[3], tuple(row["widths"]),
                             tuple(row["blocks"]), **row.get("options", {}))  # fmt: skip
    module = module.to(device)
    started = time.perf_counter()
    _train(module, splits, epochs, seed, label=row["name"], device=device)
    seconds = round(time.perf_counter() - started, 1)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name()
    return {**row, "seed": seed, "epochs": epochs, "train_seconds": seconds, "device": where,
            "fp32_test_accuracy": _test_accuracy(module, splits, device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, required=True,
                        help="splits.npz written by `space_ceiling.py plan`")
    parser.add_argument("--out", type=Path, default=Path("runs/resnet-variants"))
    parser.add_argument("--epochs", type=int, default=8, help="the search benchmark's 6 + 2")
    parser.add_argument("--seeds", type=int, default=1, help="trainings per variant")
    parser.add_argument("--workers", type=int, default=1, help="models trained at once")
    parser.add_argument("--ablations", action="store_true",
                        help="also train ResNet-8 with tiny-resnet's differences (ABLATIONS)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not args.splits.is_file():
        print(f"{args.splits} not found: run `space_ceiling.py plan` first.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    footprints_path = args.out / "footprints.json"
    if footprints_path.is_file():
        footprints = json.loads(footprints_path.read_text())
    else:
        splits = _splits(args.splits)
        representative = splits.train.x[:200]
        footprints = [_footprint(name, splits.num_classes, representative) for name in VARIANTS]
        footprints_path.write_text(json.dumps(footprints, indent=1))
    reference = footprints[0]
    for row in footprints:
        row["fits"] = (row["arena_board_bytes"] <= reference["arena_board_bytes"]
                       and row["flash_bytes"] <= reference["flash_bytes"])  # fmt: skip
    results_path = args.out / "results.jsonl"
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[row["name"], row.get("seed", 0)] = row
    if args.ablations:
        widths, blocks = VARIANTS["resnet8"]
        footprints += [{"name": name, "widths": widths, "blocks": blocks, "options": options,
                        "fits": None} for name, options in ABLATIONS.items()]  # fmt: skip
    jobs = [(row, str(args.splits), args.epochs, seed, args.device)
            for seed in range(args.seeds) for row in footprints
            if row["fits"] is not False and (row["name"], seed) not in done]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool, results_path.open("a") as out:
        for row in pool.imap_unordered(_train_one, jobs):
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[row["name"], row["seed"]] = row
            logger.info("%s, seed %d: %.2f%% in %.0f s", row["name"], row["seed"],
                        100 * row["fp32_test_accuracy"], row["train_seconds"])  # fmt: skip
    print(f"\n{args.epochs} epochs on the search benchmark's subset, fp32 test accuracy on the "
          f"10,000 test images (each seed, and their mean); budgets: ResNet-8's board arena "
          f"{reference['arena_board_bytes']:,} B and flash {reference['flash_bytes']:,} B\n")
    print("| variant | widths (stem, stages) | stacks per stage | MACs | params | arena B | "
          "flash B | fits | fp32 test accuracy by seed | mean | train time |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in footprints:
        trained = sorted((seed, r) for (name, seed), r in done.items() if name == row["name"])
        scores = [100 * r["fp32_test_accuracy"] for _, r in trained]
        accuracy = ", ".join(f"{score:.2f}%" for score in scores) or "-"
        mean = f"{statistics.fmean(scores):.2f}%" if scores else "-"
        seconds = ", ".join(f"{r['train_seconds']:.0f} s" for _, r in trained) or "-"
        sizes = ("- | - | - | - | n/a" if row["fits"] is None else
                 f"{row['macs']:,} | {row['params']:,} | {row['arena_board_bytes']:,} | "
                 f"{row['flash_bytes']:,} | {'yes' if row['fits'] else 'no'}")  # fmt: skip
        print(f"| {row['name']} | {'/'.join(map(str, row['widths']))} | "
              f"{'/'.join(map(str, row['blocks']))} | {sizes} | {accuracy} | {mean} | "
              f"{seconds} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
