"""Search a model for your own image folder and a named board, then export the best one.

    python examples/search_image_folder.py PATH/TO/IMAGES --board nucleo-l4r5zi --out runs/mine

PATH/TO/IMAGES holds one sub-folder of images per class (``cat/*.png``, ``dog/*.jpg``, ...),
optionally split into ``train/`` and ``test/``. No data at hand? ``--write-sample`` first fills
PATH/TO/IMAGES with the bundled 8x8 digits as PNG files:

    python examples/search_image_folder.py /tmp/digits-png --write-sample --board rpi-pico \
        --out runs/digits-png --evaluations 30

A run killed half-way continues with ``--resume`` (same arguments).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekit.search import run_search
from edgekit.units import format_size


def write_sample_folder(folder: Path) -> None:
    """The bundled scikit-learn digits as ``folder/<digit>/<n>.png`` (8x8 grey)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        target = folder / str(label)
        target.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255 / 16)).round().astype("uint8")
        Image.fromarray(pixels, mode="L").save(target / f"{n:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="image folder (one sub-folder per class)")
    parser.add_argument("--board", required=True, help="board profile, e.g. nucleo-l4r5zi")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--space", default="tiny-cnn", help="tiny-cnn, tiny-vit or all")
    parser.add_argument("--sram", help="arena budget, e.g. 128KiB (default: the board's)")
    parser.add_argument("--flash", help="flash budget, e.g. 512KiB (default: the board's)")
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--write-sample", action="store_true",
                        help="first write the bundled digits into the image folder")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.write_sample:
        write_sample_folder(args.images)
    result = run_search(
        args.space,
        args.board,
        f"folder:{args.images}",
        args.out,
        sram=args.sram,
        flash=args.flash,
        evaluations=args.evaluations,
        resume=args.resume,
    )
    print(f"Pareto set: {len(result.pareto)} of {len(result.trials)} evaluated configs")
    for rank, trial in enumerate(result.pareto[:5]):
        print(f"  {rank}: {trial.space} {trial.genome}  val {trial.val_accuracy:.1%}  "
              f"arena {format_size(trial.arena_bytes)}  flash {format_size(trial.flash_bytes)}  "
              f"{trial.latency_ms:.1f} ms")  # fmt: skip
    export = result.chosen_export
    if export is not None:
        print(f"chosen model bundle: {export['bundle']} (int8 test accuracy "
              f"{export['int8_test_accuracy']:.1%}, arena measured "
              f"{format_size(export['arena_measured_host_bytes'])}, flash "
              f"{format_size(export['flash_bytes'])})")  # fmt: skip
    print(f"report: {result.report['html']}")


if __name__ == "__main__":
    main()
