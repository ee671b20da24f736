"""XNNPACK sparse benchmark (issue #5): size, emulated speed-up and accuracy of block-pruned
float32 models at several sparsities.

Run from the repository root (about 10 minutes on one core):

    PYTHONPATH=. .venv/bin/python benchmarks/sparse_xnnpack.py
    PYTHONPATH=. .venv/bin/python benchmarks/sparse_xnnpack.py --train-epochs 2 --epochs 1 \\
        --runs 3   # smoke run

A MobileNet-like tiny-cnn config (``--config``; every depthwise kernel 3x3, no patches, dense
1x1 convs) is laid out for XNNPACK (:mod:`edgekit.export.sparse`) and trained densely from
scratch on digits (grey repeated to 3 channels), or, with ``--checkpoint``, starts from that
subnet of a trained supernet. From the dense weights, each sparsity gets a pruning fine-tune
(4x1 blocks of the 1x1 conv weights) and a float32 conversion with TFLite's sparse format.

XNNPACK turns its sparse kernels off on x86 CPUs with AVX, so speed is measured under
``qemu-x86_64 -cpu Nehalem`` (SSE4.2, no AVX): the figures are EMULATED and only their ratios
mean anything. Evidence that the sparse path ran comes from two controls at the middle
sparsity, timed in the same emulator: the same pruned weights stored dense (no DENSIFY, so
LiteRT's delegate gives XNNPACK no sparse-inference hint) and the same sparse weights with
TensorFlow "SAME" padding (an asymmetric stem pad that XNNPACK's NCHW rewrite rejects). Only the
compliant sparse model is faster; on the AVX host no model is. Accuracy is measured natively in
LiteRT on the digits test split. Prints markdown (stdout); raw results go to
``--out/sparse_xnnpack.json`` with the models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]
MOBILENET_LIKE = "r40-w1-rk1-p1-k333.333.333.333-e666.666.666.666"
EMULATED_CPU = "Nehalem"

logger = logging.getLogger("benchmarks.sparse_xnnpack")

# Runs inside the emulator: only numpy and the LiteRT interpreter (XNNPACK applied by default).
_TIMER = """
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter

runs, paths = int(sys.argv[1]), sys.argv[2:]
interpreters = []
for path in paths:
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).random(detail["shape"], dtype=np.float32)
    interpreter.set_tensor(detail["index"], image)
    interpreter.invoke()  # warm-up: XNNPACK packs the weights on the first run
    interpreters.append(interpreter)
times = {path: [] for path in paths}
for _ in range(runs):  # interleaved, so drift hits every model alike
    for path, interpreter in zip(paths, interpreters):
        started = time.perf_counter()
        interpreter.invoke()
        times[path].append(time.perf_counter() - started)
print(json.dumps({path: float(np.median(t)) * 1000 for path, t in times.items()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=MOBILENET_LIKE, help="tiny-cnn genome")
    parser.add_argument("--checkpoint", type=Path, help="trained tiny-cnn supernet (optional)")
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.7, 0.8, 0.9])
    parser.add_argument("--block", default="4x1", choices=("4x1", "1x4", "1x1"))
    parser.add_argument("--train-epochs", type=int, default=15, help="subnet training epochs")
    parser.add_argument(
        "--epochs", type=int,
        help="pruning fine-tune epochs (default: what `edgekit export --sparse` runs: 8, and "
        "at least 1,000 steps)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=15, help="emulated invokes per model")
    parser.add_argument("--native-runs", type=int, default=200)
    parser.add_argument("--qemu", default="qemu-x86_64", help="qemu user-mode binary")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sparse_xnnpack")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import numpy as np
    import torch

    from edgekit.data import load_dataset
    from edgekit.export._sparse_net import accuracy, prune_finetune, zero_fraction
    from edgekit.export._sparse_tf import build_graph, convert_float, inspect_model
    from edgekit.export.pipeline import model_inputs
    from edgekit.export.sparse import SparseSettings, check_xnnpack_sparse
    from edgekit.spaces import get_space

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    qemu = shutil.which(args.qemu)
    if qemu is None:
        logger.error("%s not found (Debian: apt-get install qemu-user)", args.qemu)
        return 2
    block = tuple(int(v) for v in args.block.split("x"))
    splits = load_dataset("digits", seed=args.seed)
    space = get_space("tiny-cnn", num_classes=splits.num_classes, in_channels=1)
    cfg = space.decode(args.config)
    check_xnnpack_sparse(space, cfg)
    args.out.mkdir(parents=True, exist_ok=True)

    def nchw3(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(model_inputs(space, cfg, images)
                                                  .transpose(0, 3, 1, 2)))  # fmt: skip
        return x.repeat(1, 3, 1, 1)

    train_x, train_y = nchw3(splits.train.x), torch.from_numpy(splits.train.y)
    test_x, test_y = nchw3(splits.test.x), splits.test.y
    steps_per_epoch = -(-len(train_y) // 64)
    if args.epochs is None:
        args.epochs = SparseSettings(batch_size=64).epochs_for(len(train_y))

    def batches(generator: torch.Generator) -> Any:
        for index in torch.randperm(len(train_y), generator=generator).split(64):
            if len(index) > 1:
                yield train_x[index], train_y[index]

    started = time.perf_counter()
    from edgekit.export._sparse_net import fold_batchnorm, from_tiny_cnn
    from edgekit.export.pipeline import extract_subnet

    if args.checkpoint is not None:
        from edgekit.training import load_supernet

        space, supernet, _ = load_supernet(args.checkpoint)
        origin = f"subnet of {args.checkpoint}"
    else:
        supernet = space.build_supernet()
        _train_subnet(space, supernet, cfg, splits, args.train_epochs)
        origin = f"subnet trained alone for {args.train_epochs} epochs (BatchNorm, SAME padding)"
    module = extract_subnet(space, supernet, cfg, splits.train, args.seed)
    source_x = test_x[:, :1].contiguous()
    source_accuracy = accuracy(module, source_x, test_y)
    relaid = from_tiny_cnn(module, cfg)
    logger.info(
        "as trained %.2f%%, re-padded for XNNPACK %.2f%%", 100 * source_accuracy,
        100 * accuracy(relaid, test_x, test_y),
    )  # fmt: skip
    nets: dict[str, Any] = {}
    for sparsity in (0.0, *args.sparsities):
        name = "dense" if sparsity == 0 else f"sparse-{sparsity:g}"
        nets[name] = fold_batchnorm(prune_finetune(
            relaid, batches, sparsity=sparsity, block=block, epochs=args.epochs,
            steps_per_epoch=steps_per_epoch, seed=args.seed,
        ))  # fmt: skip
    train_seconds = time.perf_counter() - started

    rows: dict[str, dict[str, Any]] = {}
    for name, net in nets.items():
        graph = build_graph(net)
        model = convert_float(graph, sparse=name != "dense")
        facts = inspect_model(model)
        path = args.out / f"{name}.tflite"
        path.write_bytes(model)
        weights = {k: v.detach() for k, v in net.pointwise_weights().items()}
        rows[name] = {
            "path": path, "bytes": len(model), "densify_ops": facts.densify_ops,
            "zero_fraction": zero_fraction(weights), "torch_accuracy":
            accuracy(net, test_x, test_y), "litert_accuracy": _litert_accuracy(model, test_x,
                                                                                 test_y),
        }  # fmt: skip
        if name != "dense":
            rows[name]["dense_encoded_bytes"] = len(convert_float(graph, sparse=False))
    middle = f"sparse-{args.sparsities[len(args.sparsities) // 2]:g}"
    controls = {
        f"{middle} stored dense (no DENSIFY)": convert_float(build_graph(nets[middle]), False),
        f"{middle} with SAME padding": convert_float(build_graph(nets[middle], False), True),
    }
    for index, (name, model) in enumerate(controls.items()):
        path = args.out / f"control-{index}.tflite"
        path.write_bytes(model)
        rows[name] = {"path": path, "bytes": len(model),
                      "densify_ops": inspect_model(model).densify_ops}  # fmt: skip

    paths = [str(row["path"]) for row in rows.values()]
    timer = args.out / "time_models.py"
    timer.write_text(_TIMER)
    native = _time(
        [sys.executable, str(timer), str(args.native_runs), *paths], "native (AVX host)"
    )
    emulated = _time([qemu, "-cpu", EMULATED_CPU, sys.executable, str(timer), str(args.runs),
                      *paths], f"emulated ({EMULATED_CPU})")  # fmt: skip
    for row in rows.values():
        row["native_ms"] = native[str(row["path"])]
        row["emulated_ms"] = emulated[str(row["path"])]
        row["path"] = str(Path(row["path"]).relative_to(REPO) if Path(row["path"]).is_relative_to(
            REPO) else row["path"])  # fmt: skip

    machine = f"{cpu_name()}, Python {platform.python_version()}, {platform.platform()}"
    print("# XNNPACK sparse inference benchmark\n")
    print(f"- {machine}; timings with 1 thread, median of {args.runs} emulated / "
          f"{args.native_runs} native invokes")  # fmt: skip
    print(
        f"- config `{args.config}` (tiny-cnn, XNNPACK layout: symmetric padding, 3-channel "
        f"stem, BatchNorm folded); dense weights {origin}; pruning fine-tune {args.epochs} "
        f"epochs per sparsity, {args.block} blocks; digits test split ({len(test_y)} images)"
    )
    print(
        f"- accuracy of the subnet as trained (SAME padding, PyTorch): {source_accuracy:.2%}; "
        "dense = the re-padded subnet fine-tuned like the sparse ones, without pruning"
    )
    print(f"- training took {train_seconds:.0f} s\n")
    print(_table(rows, args.sparsities))
    result = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": args.config,
        "origin": origin,
        "source_accuracy": source_accuracy,
        "block": args.block,
        "epochs": args.epochs,
        "train_epochs": args.train_epochs,
        "runs": {"emulated": args.runs, "native": args.native_runs},
        "emulated_cpu": EMULATED_CPU,
        "models": rows,
    }
    (args.out / "sparse_xnnpack.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _train_subnet(space: Any, supernet: Any, cfg: Any, splits: Any, epochs: int) -> None:
    """Train subnet ``cfg`` of ``supernet`` alone (AdamW, cosine schedule), in place."""
    import torch
    import torch.nn.functional as F

    from edgekit.training import prepare_input, to_nchw

    supernet.set_active(cfg)
    supernet.train()
    x = prepare_input(space, to_nchw(splits.train.x), cfg)
    y = torch.from_numpy(splits.train.y)
    steps = max(1, epochs * -(-len(y) // 64))
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for index in torch.randperm(len(y), generator=generator).split(64):
            if len(index) < 2:
                continue
            loss = F.cross_entropy(supernet(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    supernet.eval()


def _litert_accuracy(model: bytes, test_x: Any, test_y: Any) -> float:
    from edgekit.export._sparse_tf import litert_logits

    logits = litert_logits(model, test_x.permute(0, 2, 3, 1).numpy())
    return float((logits.argmax(1) == test_y).mean())


def _time(command: list[str], label: str) -> dict[str, float]:
    logger.info("timing %s ...", label)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} timing failed ({done.returncode}): {done.stderr[-2000:]}")
    logger.info("%s timing took %.0f s", label, time.perf_counter() - started)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: dict[str, dict[str, Any]], sparsities: list[float]) -> str:
    dense = rows["dense"]
    lines = [
        "| model | 1x1 zeros | DENSIFY | file | vs dense file | LiteRT acc. | PyTorch acc. "
        "| emulated ms (Nehalem) | emulated speed-up | native ms (AVX) | native speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        zeros = f"{row['zero_fraction']:.1%}" if "zero_fraction" in row else ""
        litert = f"{row['litert_accuracy']:.2%}" if "litert_accuracy" in row else ""
        torch_acc = f"{row['torch_accuracy']:.2%}" if "torch_accuracy" in row else ""
        lines.append(
            f"| {name} | {zeros} | {row['densify_ops']} | {row['bytes'] / 1024:.0f} KiB | "
            f"{row['bytes'] / dense['bytes']:.2f}x | {litert} | {torch_acc} | "
            f"{row['emulated_ms']:.1f} | {dense['emulated_ms'] / row['emulated_ms']:.2f}x | "
            f"{row['native_ms']:.3f} | {dense['native_ms'] / row['native_ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
