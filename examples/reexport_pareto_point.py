"""Export another point of a finished search's Pareto set (e.g. a smaller, faster model).

    python examples/reexport_pareto_point.py runs/mine            # list the Pareto set
    python examples/reexport_pareto_point.py runs/mine --rank 2   # fine-tune + export point 2
    python examples/reexport_pareto_point.py runs/mine --genome r24-w0.35-... --out bundles/small

The point is fine-tuned like the chosen model, exported as an int8 TFLite Micro bundle
(``model.tflite``, ``model_data.cc/.h``, ``manifest.json``), recorded in the run and shown in
its re-rendered report.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekit.search import export_point, load_result
from edgekit.units import format_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="search run folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, help="row of the Pareto table (0 = chosen model)")
    which.add_argument("--genome", help="genome string of a Pareto point")
    parser.add_argument("--out", type=Path, help="bundle folder (default: RUN/models/...)")
    parser.add_argument("--finetune-epochs", type=int, help="default: the run's setting")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    result = load_result(args.run)
    for rank, trial in enumerate(result.pareto):
        arena, flash = format_size(trial.arena_bytes), format_size(trial.flash_bytes)
        print(f"{rank:3d}  {trial.space:9s} {trial.genome:45s} val {trial.val_accuracy:6.1%}  "
              f"arena {arena:>10s}  flash {flash:>10s}  {trial.latency_ms:7.1f} ms")  # fmt: skip
    if args.rank is None and args.genome is None:
        return
    export = export_point(args.run, args.genome, rank=args.rank, out_dir=args.out,
                          finetune_epochs=args.finetune_epochs)  # fmt: skip
    firmware = export.get("arena_firmware_bytes")
    print(f"exported {export['genome']} to {export['bundle']}: int8 test accuracy "
          f"{export['int8_test_accuracy']:.1%}; arena measured "
          f"{format_size(export['arena_measured_host_bytes'])} on the host"
          + (f", {format_size(firmware)} on the board" if firmware else "")
          + f"; flash {format_size(export['flash_bytes'])}")  # fmt: skip


if __name__ == "__main__":
    main()
