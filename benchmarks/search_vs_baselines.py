"""Searched int8 model vs ResNet-8 (MLPerf Tiny) and random search on CIFAR-10 (issue #6).

Run from the repository root:

    PYTHONPATH=. .venv/bin/python benchmarks/search_vs_baselines.py          # ~2 h on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/search_vs_baselines.py --quick  # smoke run

Steps (everything is kept in ``--out`` and resumes after an interruption):

1. ResNet-8, the MLPerf Tiny image-classification reference (3 residual stacks of 16/32/64
   channels, ~78 k parameters), trained with the same recipe as the supernet (AdamW, warm-up +
   cosine, label smoothing, flips and shifts) for ``--train-epochs`` epochs, exported to int8
   and measured: its tensor arena for a 32-bit board build (the memory model on the exported
   file) and its flash become the search's budgets ("budgets equal to the reference").
2. One supernet of ``--space`` trained for ``--epochs`` epochs on the same data: by default as
   ``edgekit search`` trains it (the space's largest subnet as the teacher, every other subnet
   one that fits the budgets); ``--supernet-subnets`` chooses otherwise.
3. Searches on that supernet with the same number of accuracy evaluations and the same
   budgets: NSGA-II with the GBDT predictor (the tool's default), NSGA-II without it, and random
   search (``--strategies``), each with ``--search-seeds`` seeds. The first seed's search
   fine-tunes its chosen model for ``--finetune-epochs`` epochs and exports it.
4. With ``--retrain`` (default): each search's chosen architecture trained exactly like
   ResNet-8 (same recipe and epochs), starting from its supernet weights, then exported.
5. ``scratch``: the same training for every model. ResNet-8 and every search's chosen
   architecture trained from PyTorch's default initialisation exactly like ResNet-8 with
   ``--scratch-seeds`` seeds; ResNet-8 and the first search seed's choices exported to int8
   (post-training quantization) and measured in TFLite Micro, the others' fp32 accuracy. The
   search's own cost (supernet, evaluations) comes on top and is stated apart.
6. A markdown table: int8 test accuracy (TFLite Micro, whole CIFAR-10 test split), arena,
   flash, whether each fits, epochs and wall time; plus the predictor's rank correlation.
7. What the space can reach under the budgets: MACs and parameters of the largest of
   ``--reach-samples`` random configs that fit (config-based memory model), against ResNet-8's,
   each trained from random initialisation exactly like ResNet-8 (with ``--retrain``); and where
   each exported model's flash goes (weights, biases, quantization parameters, flatbuffer
   overhead), read from the .tflite files.
8. How the supernet ranks what fits: the inherited validation accuracy (after BatchNorm
   recalibration, as the search measures it) of the smallest and largest subnets, of the
   configs trained in steps 4 and 7, and of ``--ranking-samples`` other random configs that
   fit, next to their accuracy when trained like ResNet-8 (with ``--retrain``, the random ones
   and the smallest are trained from scratch for this; ``ranking-trained.json`` does not depend
   on the supernet and may be copied between output folders), and the rank correlation.

``--steps`` picks steps. ``--device cuda`` trains on a GPU; a run of only the ``supernet`` and
``scratch-train`` steps needs neither TensorFlow nor the search's libraries, so these can run
on a GPU machine and the rest here, on the same ``--out`` folder::

    # on the GPU machine (the folder holds resnet8.json and, for scratch-train, search-*.json)
    python benchmarks/search_vs_baselines.py --device cuda --steps supernet --epochs 29 ...
    python benchmarks/search_vs_baselines.py --device cuda --steps scratch-train --workers 8 ...

Training budget: every architecture compared is trained for ``--train-epochs`` passes over
the training data with the same recipe (the supernet's passes cost more: the sandwich rule
trains four subnets per step). To fit about two hours on 2 CPU cores the default uses 10 000
training images (stratified; 5 000 validation, the 10 000 test images), a 6-epoch supernet and
8 training epochs. CIFAR-10 is read from ``../shared/datasets/cifar10-jpeg75`` (``--cifar``);
the script exits with a message without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CIFAR = REPO.parent / "shared" / "datasets" / "cifar10-jpeg75"
BOARD = "nucleo-l4r5zi"  # the MLPerf Tiny reference board
# What MLPerf Tiny states for its reference ResNet-8 (for comparison with our measurement).
REFERENCE_ARENA_KB, REFERENCE_WEIGHTS_KB = 56, 79
RECIPE = {"lr": 2e-3, "batch_size": 64, "weight_decay": 0.05, "warmup_epochs": 1.0,
          "min_lr_ratio": 0.01, "label_smoothing": 0.1, "grad_clip": 5.0, "shift": 2,
          "hflip": True}  # fmt: skip
STEPS = ("supernet", "search", "retrain", "scratch-train", "scratch", "reach", "ranking")
STRATEGIES = {
    "nsga2-gbdt": {"strategy": "nsga2", "predictor": True},
    "nsga2": {"strategy": "nsga2", "predictor": False},
    "random": {"strategy": "random", "predictor": False},
}

logger = logging.getLogger("benchmarks.search_vs_baselines")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of every step")
    parser.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-search")
    parser.add_argument("--space", default="tiny-cnn")
    parser.add_argument("--epochs", type=int, default=6, help="supernet epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2,
                        help="each search's fine-tune of its chosen model")
    parser.add_argument("--train-epochs", type=int, default=8,
                        help="every architecture's own training (ResNet-8, --retrain, "
                             "--scratch-seeds, the reach and ranking steps): the training "
                             "budget each model gets (default: %(default)s)")  # fmt: skip
    parser.add_argument("--scratch-seeds", type=int, default=3,
                        help="train ResNet-8 and each search's chosen architecture from "
                             "PyTorch's default initialisation with this many seeds, export "
                             "each to int8 (post-training quantization, as ResNet-8) and "
                             "measure it (0: skip; default: %(default)s)")  # fmt: skip
    parser.add_argument("--repeat-seeds", type=int, default=3,
                        help="training seeds of the later search seeds' choices (default: "
                             "%(default)s)")  # fmt: skip
    parser.add_argument("--scratch-export", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="export the scratch step's ResNet-8 and the choices of the first "
                             "--export-search-seeds search seeds to int8 and measure them in "
                             "TFLite Micro (default: on; off: fp32 only)")
    parser.add_argument("--export-search-seeds", type=int, default=1,
                        help="search seeds whose choices the scratch step exports, every "
                             "training seed of each (default: %(default)s)")
    parser.add_argument("--search-seeds", type=int, default=1,
                        help="run each search with this many seeds (seed, seed+1, ...) on the "
                             "same supernet; only the first one fine-tunes and exports its "
                             "choice (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1,
                        help="networks the scratch step trains or exports at once (default: "
                             "%(default)s)")  # fmt: skip
    parser.add_argument("--device", default="cpu",
                        help="where networks train: cpu or cuda (exports always run on the "
                             "CPU; TensorFlow is not needed for training-only steps)")
    parser.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS),
                        help="the steps to run (default: all). Only 'supernet' and/or "
                             "'scratch-train' (the scratch step's training, without exports): "
                             "a training-only run, which needs neither TensorFlow nor the "
                             "search's libraries (a GPU machine, say); otherwise the supernet "
                             "and the searches always run (or are read back from --out)")
    parser.add_argument(
        "--smallest-weight",
        type=float,
        default=1.0,
        help="supernet loss weight of the smallest subnet; 0 trains it only when a random "
        "draw picks it (default: %(default)s)",
    )
    parser.add_argument(
        "--supernet-subnets",
        choices=("fitting", "fitting-only", "space"),
        default="fitting",
        help="the supernet's subnets, as edgekit search --supernet-subnets "
        "(default: %(default)s)",
    )
    parser.add_argument("--evaluations", type=int, default=100, help="per search")
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=5000,
        help="validation images per accuracy evaluation (default: %(default)s, all of them at "
        "the default --max-per-split; 1000 made the supernet's ranking far noisier)",
    )
    parser.add_argument(
        "--max-per-split",
        type=int,
        default=10000,
        help="cap every split: 10000 training images keep the run within ~2 h on 2 cores "
        "(0: all 45000)",
    )
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument(
        "--retrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train each chosen architecture exactly like ResNet-8 (its recipe and "
        "epochs, starting from the supernet's weights) and export it (default: on)",
    )
    parser.add_argument("--reach-samples", type=int, default=3000,
                        help="random configs sampled to find the largest that fit the budgets")
    parser.add_argument("--ranking-samples", type=int, default=8,
                        help="random fitting configs whose inherited accuracy is listed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.finetune_epochs, args.evaluations = 1, 1, 8
        args.train_epochs, args.scratch_seeds = 2, 1
        args.population, args.eval_samples = 4, 200
        args.max_per_split = 400
        args.out = args.out.with_name(args.out.name + "-quick")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not args.cifar.is_dir():
        print(f"CIFAR-10 not found at {args.cifar}; nothing to do.")
        return 0

    import torch

    from edgekit.data import load_dataset
    from edgekit.training import limit_threads

    limit_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = load_dataset(args.cifar, seed=args.seed, max_per_split=args.max_per_split or None)
    logger.info("CIFAR-10: %d train, %d val, %d test images", len(splits.train),
                len(splits.val), len(splits.test))  # fmt: skip

    baseline = _cached(args.out / "resnet8.json", lambda: _resnet8(splits, args))
    steps = set(args.steps) | ({"scratch-train"} if "scratch" in args.steps else set())
    training_only = steps <= {"supernet", "scratch-train"}  # e.g. on a GPU machine
    if "supernet" in steps or not training_only:
        supernet_path, supernet_seconds = _supernet(splits, baseline, args)
    if training_only:
        if "scratch-train" in steps:
            _scratch(splits, baseline, _search_repeats(args), args, export=False)
        return 0
    repeats = _search_repeats(args, lambda name, number: _search(
        name, splits, supernet_path, baseline, args, number))  # fmt: skip
    results = {name: found[0] for name, found in repeats.items()}
    retrained = {}
    if args.retrain and "retrain" in steps:
        retrained = _cached_steps(args, "retrain", lambda name: _retrain(
            name, splits, supernet_path, baseline, args))  # fmt: skip
    print(_table(baseline, results, supernet_seconds, args, torch.get_num_threads(),
                 time.perf_counter() - started, retrained))  # fmt: skip
    if "scratch" in steps and args.scratch_seeds:
        rows = _scratch(splits, baseline, repeats, args)
        print("\n" + _scratch_table(rows, len(splits.test), args))
    if "reach" not in steps:
        return 0
    reach = _cached(args.out / "reach.json", lambda: _reach(splits, baseline, args))
    print("\n" + _reach_table(reach, baseline, args))
    print("\n" + _flash_table(results, retrained, args))
    if "ranking" not in steps:
        return 0
    ranking = _cached(args.out / "ranking.json",
                      lambda: _ranking(splits, supernet_path, baseline, reach, retrained, args))
    from_scratch = {}
    if args.retrain:
        from_scratch = _cached(args.out / "ranking-trained.json",
                               lambda: _ranking_trained(splits, baseline, args))
    print("\n" + _ranking_table(ranking, from_scratch, args))
    return 0


def _cached_steps(args: argparse.Namespace, step: str,
                  compute: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each strategy's result of ``step``, computed once and kept in ``<step>-<strategy>.json``."""
    return {name: _cached(args.out / f"{step}-{name}.json", partial(compute, name))
            for name in args.strategies}  # fmt: skip


def _search_repeats(args: argparse.Namespace,
                    compute: Any = None) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Each strategy's searches with seeds ``seed`` .. ``seed + search_seeds - 1`` (the first
    is ``search-<strategy>.json``, the others ``search-<strategy>-seed<k>.json``): computed
    where missing, or, without ``compute``, those already there, up to the first missing."""
    repeats: dict[str, list[dict[str, Any]]] = {}
    for name in args.strategies:
        found = repeats.setdefault(name, [])
        for number in range(args.search_seeds):
            path = args.out / f"search-{_search_folder(name, number)}.json"
            if compute is not None:
                found.append(_cached(path, partial(compute, name, number)))
            elif path.is_file():
                found.append(json.loads(path.read_text()))
            else:
                break
    return repeats


def _search_folder(name: str, number: int) -> str:
    return name if number == 0 else f"{name}-seed{number}"


def _cached(path: Path, compute: Any) -> dict[str, Any]:
    """A step's result, computed once and kept in ``path`` (so reruns skip finished steps)."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    unfinished = path.with_suffix(f".{os.getpid()}.partial")
    unfinished.write_text(json.dumps(result, indent=2))
    unfinished.replace(path)  # a kill mid-write leaves no damaged file behind
    return result


# --- ResNet-8 ------------------------------------------------------------------------------------
def _same_pad(x: Any, kernel: int, stride: int) -> Any:
    """TensorFlow "SAME" padding (what the Keras reference and the TFLite graph use)."""
    import torch.nn.functional as F

    size = x.shape[-1]
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def _resnet8_module(
    num_classes: int, in_channels: int, widths: tuple[int, ...] = (16, 16, 32, 64),
    blocks: tuple[int, ...] = (1, 1, 1), *, projection: bool = True, relu6: bool = False,
    relu_after_add: bool = True, supernet_init: bool = False,
) -> Any:
    """ResNet-8 (the defaults), or a variant: stem width, then each stage's width and number
    of residual stacks (the first of stages 2 and 3 halves the resolution). The keywords are
    ablations towards tiny-resnet's blocks: ``projection=False`` drops the 1x1 shortcuts (those
    stacks then have no skip), ``relu6`` replaces ReLU, ``relu_after_add=False`` applies the
    second conv's activation before the add instead of after it, and ``supernet_init`` uses
    tiny-cnn's supernet initialisation (Kaiming normal fan-out, a 0.01 classifier)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    activation = F.relu6 if relu6 else torch.relu

    class ConvBn(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int, act: bool) -> None:
            super().__init__()
            self.stride, self.act = stride, act
            self.conv = nn.Conv2d(c_in, c_out, 3, stride, bias=False)
            self.bn = nn.BatchNorm2d(c_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.bn(self.conv(_same_pad(x, 3, self.stride)))
            return activation(x) if self.act else x

    class Stack(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = ConvBn(c_in, c_out, stride, act=True)
            self.conv2 = ConvBn(c_out, c_out, 1, act=not relu_after_add)
            reshaped = stride > 1 or c_in != c_out
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if reshaped and projection else None
            self.skip = projection or not reshaped

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv2(self.conv1(x))
            if self.skip:
                y = y + (x if self.shortcut is None else self.shortcut(x))
            return activation(y) if relu_after_add else y

    class ResNet8(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ConvBn(in_channels, widths[0], 1, act=True)
            stacks, c_in = [], widths[0]
            for stage, (c_out, count) in enumerate(zip(widths[1:], blocks, strict=True)):
                for block in range(count):
                    stacks.append(Stack(c_in, c_out, 2 if stage and not block else 1))
                    c_in = c_out
            self.stacks = nn.Sequential(*stacks)
            self.fc = nn.Linear(c_in, num_classes)
            for module in self.modules() if supernet_init else ():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out")
                elif isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, 0.01)
                    nn.init.zeros_(module.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.stacks(self.stem(x)).mean(dim=(2, 3)))

    return ResNet8()


def _train(module: Any, splits: Any, epochs: int, seed: int, label: str = "ResNet-8",
           device: str = "cpu") -> None:
    """The supernet's recipe (``RECIPE``) on one network (already on ``device``), as
    ``edgekit search --scratch-epochs`` trains a chosen architecture."""
    from edgekit.training import TrainSettings, train_network

    train_network(module, splits, TrainSettings(epochs=epochs, seed=seed, **RECIPE),
                  device=device, label=label)  # fmt: skip


def _resnet8_graph(module: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """ResNet-8 as a TfGraph (BatchNorm folded, "SAME" convs, AVERAGE_POOL_2D), like the
    exporter's builders."""
    import tensorflow as tf

    from edgekit.export.graph import TfGraph

    def folded(unit: Any) -> tuple[Any, Any]:
        bn = unit.bn
        scale = bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()
        bias = bn.bias.detach().double() - bn.running_mean.double() * scale
        weight = unit.conv.weight.detach().double() * scale[:, None, None, None]
        return (tf.constant(weight.permute(2, 3, 1, 0).float().numpy()),
                tf.constant(bias.float().numpy()))  # fmt: skip

    def plain(conv: Any) -> tuple[Any, Any]:
        return (tf.constant(conv.weight.detach().permute(2, 3, 1, 0).numpy().copy()),
                tf.constant(conv.bias.detach().numpy().copy()))  # fmt: skip

    stem = folded(module.stem)
    stacks = [(folded(s.conv1), folded(s.conv2), None if s.shortcut is None else plain(s.shortcut),
               s.conv1.stride) for s in module.stacks]  # fmt: skip
    fc = (tf.constant(module.fc.weight.detach().numpy().T.copy()),
          tf.constant(module.fc.bias.detach().numpy().copy()))  # fmt: skip

    def conv(x: Any, weights: tuple[Any, Any], stride: int) -> Any:
        return tf.nn.conv2d(x, weights[0], stride, "SAME") + weights[1]

    def forward(image: Any) -> Any:
        x = tf.nn.relu(conv(image, stem, 1))
        for i, (first, second, shortcut, stride) in enumerate(stacks):
            with tf.name_scope(f"stack{i}"):
                y = conv(tf.nn.relu(conv(x, first, stride)), second, 1)
                skip = x if shortcut is None else conv(x, shortcut, stride)
                x = tf.nn.relu(y + skip)
        size = int(x.shape[1])
        x = tf.reshape(tf.nn.avg_pool2d(x, size, size, "VALID"), (1, -1))
        return tf.matmul(x, fc[0]) + fc[1]

    return TfGraph(forward=forward, input_shape=input_shape, num_classes=num_classes,
                   layers=tuple(f"stack{i}" for i in range(len(stacks))))  # fmt: skip


def _resnet8(splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    """ResNet-8 trained (the scratch step's seed ``seed``: the same weights serve both) and
    exported: the figures that set the budgets."""
    import torch

    weights = _scratch_weights(None, args.seed, args, splits)
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    result = _resnet8_export(_resnet8_loaded(saved, splits), splits, args.seed,
                             args.out / "resnet8.tflite")  # fmt: skip
    return {"epochs": saved["epochs"], "train_seconds": saved["train_seconds"], **result}


def _resnet8_loaded(saved: dict[str, Any], splits: Any) -> Any:
    """ResNet-8 with the weights ``_scratch_weights`` saved, in eval mode on the CPU."""
    module = _resnet8_module(splits.num_classes, splits.input_shape[2])
    module.load_state_dict(saved["state"])
    return module.eval()


def _resnet8_export(module: Any, splits: Any, seed: int, path: Path) -> dict[str, Any]:
    """A trained ResNet-8 (on the CPU) exported to int8 like the exporter ships a model,
    written to ``path`` and measured: test accuracies, arenas and flash."""
    import numpy as np
    import torch

    from edgekit.estimate import analyze_tflite, measure_tflm
    from edgekit.export.convert import check_ops, compact_model, convert_int8
    from edgekit.export.verify import accuracy, io_specs, run_arena_size, run_tflm
    from edgekit.training import to_nchw

    graph = _resnet8_graph(module, splits.input_shape, splits.num_classes)
    rng = np.random.default_rng(seed)
    representative = splits.train.x[np.sort(rng.permutation(len(splits.train))[:200])]
    model = convert_int8(graph, representative)
    check_ops(model, graph.layers)
    model = compact_model(model)  # as the exporter ships a model
    host_arena = measure_tflm(model).arena_bytes
    board = analyze_tflite(model, pointer_bytes=4)
    inputs = io_specs(model)[0].quantization.quantize(splits.test.x)
    logits = run_tflm(model, inputs, run_arena_size(host_arena))
    with torch.no_grad():
        fp32 = module(to_nchw(splits.test.x)).numpy()
    path.write_bytes(model)
    return {
        "params": sum(p.numel() for p in module.parameters()),
        "fp32_test_accuracy": accuracy(fp32, splits.test.y),
        "int8_test_accuracy": accuracy(logits, splits.test.y),
        "arena_host_bytes": host_arena,
        "arena_board_bytes": board.arena_bytes,
        "flash_bytes": board.flash_bytes,
    }


# --- supernet and searches ---------------------------------------------------------------------
def _supernet(splits: Any, baseline: dict[str, Any],
              args: argparse.Namespace) -> tuple[Path, float]:  # fmt: skip
    from edgekit.search.objectives import subnet_sampler
    from edgekit.spaces import get_space
    from edgekit.training import train_supernet

    space = get_space(args.space, num_classes=splits.num_classes,
                      in_channels=splits.input_shape[2])  # fmt: skip
    path = args.out / f"supernet-{args.space}.pt"
    board, budget = _board_budget(baseline)
    sampler = subnet_sampler(space, board, budget, args.supernet_subnets, seed=args.seed)
    options = {k: v for k, v in RECIPE.items() if k not in ("lr", "batch_size")}
    options["smallest_weight"] = args.smallest_weight
    result = train_supernet(space, splits, epochs=args.epochs, checkpoint_path=path,
                            batch_size=RECIPE["batch_size"], lr=RECIPE["lr"], seed=args.seed,
                            resume=True, val_samples=1000, sampler=sampler,
                            device=args.device, **options)  # fmt: skip
    seconds = sum(epoch["seconds"] for epoch in result.history)
    return path, seconds


def _search(name: str, splits: Any, supernet: Path, baseline: dict[str, Any],
            args: argparse.Namespace, number: int = 0) -> dict[str, Any]:  # fmt: skip
    """Search ``number`` (seed ``seed + number``) of strategy ``name``; only the first
    fine-tunes and exports its choice."""
    from edgekit.search import read_run, run_search

    out = args.out / f"search-{_search_folder(name, number)}"
    resume = (out / "run.json").is_file()
    if resume:
        read_run(out)
    started = time.perf_counter()
    result = run_search(
        args.space, BOARD, splits, out, sram=baseline["arena_board_bytes"],
        flash=baseline["flash_bytes"], seed=args.seed + number, resume=resume,
        evaluations=args.evaluations, population=args.population,
        eval_samples=args.eval_samples, supernet=supernet,
        finetune_epochs=args.finetune_epochs, export=number == 0, **STRATEGIES[name],
    )  # fmt: skip
    export = result.chosen_export or {}
    chosen = result.chosen
    stats = result.summaries.get(args.space, {})
    arena = export.get("arena_firmware_bytes")
    return {
        "genome": None if chosen is None else chosen.genome,
        "val_accuracy": None if chosen is None else chosen.val_accuracy,
        "best_val_accuracy": max((t.val_accuracy or 0.0) for t in result.trials),
        "estimated_arena_bytes": None if chosen is None else chosen.arena_bytes,
        "estimated_flash_bytes": None if chosen is None else chosen.flash_bytes,
        "latency_ms": None if chosen is None else chosen.latency_ms,
        "macs": None if chosen is None else chosen.macs,
        "int8_test_accuracy": export.get("int8_test_accuracy"),
        "fp32_test_accuracy": export.get("fp32_test_accuracy"),
        "arena_board_bytes": arena,
        "arena_host_bytes": export.get("arena_measured_host_bytes"),
        "flash_bytes": export.get("flash_bytes"),
        "fits": (
            arena is not None
            and arena <= baseline["arena_board_bytes"]
            and export["flash_bytes"] <= baseline["flash_bytes"]
        ),
        "evaluations": len(result.trials),
        "over_budget": stats.get("rejected"),
        "screened_out": stats.get("screened_out"),
        "predictor_kendall_tau": stats.get("predictor_kendall_tau"),
        "seconds": round(time.perf_counter() - started, 1),
        "report": str(result.report.get("html")),
    }


class _Resized:
    """A network fed the dataset's images resized to ``cfg``'s resolution, so that ``_train``
    can train it like any network: a supernet with ``cfg`` active, or ``space.extract``'s."""

    def __init__(self, space: Any, network: Any, cfg: Any) -> None:
        self.space, self.network, self.cfg = space, network, cfg

    def __call__(self, x: Any) -> Any:
        from edgekit.training import prepare_input

        return self.network(prepare_input(self.space, x, self.cfg))

    def __getattr__(self, name: str) -> Any:  # parameters(), train(), eval() ...
        return getattr(self.network, name)


def _retrain(name: str, splits: Any, supernet_path: Path, baseline: dict[str, Any],
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    from edgekit.profiles import load_profile
    from edgekit.search import load_result
    from edgekit.search.objectives import export_subnet
    from edgekit.training import load_supernet

    chosen = load_result(args.out / f"search-{name}").chosen
    if chosen is None:
        return {"genome": None}
    space, supernet, _ = load_supernet(supernet_path)
    cfg = space.from_dict(chosen.config)
    epochs = args.train_epochs
    started = time.perf_counter()
    supernet.set_active(cfg)
    _train(_Resized(space, supernet.to(args.device), cfg), splits, epochs, args.seed,
           label=chosen.genome, device=args.device)  # fmt: skip
    train_seconds = time.perf_counter() - started
    export = export_subnet(space, supernet.cpu(), cfg, splits, args.out / f"retrain-{name}",
                           board=load_profile(BOARD), seed=args.seed)  # fmt: skip
    arena = export.get("arena_firmware_bytes")
    return {
        "genome": chosen.genome,
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "int8_test_accuracy": export.get("int8_test_accuracy"),
        "fp32_test_accuracy": export.get("fp32_test_accuracy"),
        "arena_board_bytes": arena,
        "flash_bytes": export.get("flash_bytes"),
        "fits": (
            arena is not None
            and arena <= baseline["arena_board_bytes"]
            and export["flash_bytes"] <= baseline["flash_bytes"]
        ),
    }


# --- the chosen architectures and ResNet-8 from scratch, several seeds ---------------------------
def _scratch(splits: Any, baseline: dict[str, Any], results: dict[str, list[dict[str, Any]]],
             args: argparse.Namespace, export: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """ResNet-8 and each search's chosen architecture, each trained from PyTorch's default
    initialisation for ``--train-epochs`` (the same training for every model: the search's
    own cost is the supernet and the evaluations): ResNet-8 and the first search seed's
    choices with seeds 0 .. ``--scratch-seeds``-1, the other search seeds' choices with
    ``--repeat-seeds`` seeds, each with :func:`edgekit.training.train_subnet` (what
    ``edgekit search --scratch-epochs`` does with its choice). With ``export`` and
    ``--scratch-export``, ResNet-8 and the first ``--export-search-seeds`` search seeds'
    choices are then exported with post-training quantization and measured in TFLite Micro;
    the others keep their fp32 test accuracy. Weights and figures are kept per
    architecture and seed in ``scratch/``, so training and export may run on different
    machines."""
    entries = [("resnet8", 0, None)] + [
        (name, number, r["genome"])
        for name, repeats in results.items()
        for number, r in enumerate(repeats)
        if r.get("genome")
    ]
    # Memory figures where a model is not exported: the memory model's, which equal the
    # exported file's (ResNet-8's are its own measured ones).
    estimates = {None: (baseline["arena_board_bytes"], baseline["flash_bytes"])} | {
        r["genome"]: (r["estimated_arena_bytes"], r["estimated_flash_bytes"])
        for repeats in results.values() for r in repeats if r.get("genome")
    }

    def seeds(number: int) -> range:
        return range(args.scratch_seeds if number == 0 else args.repeat_seeds)

    pairs = dict.fromkeys((genome, seed) for _, number, genome in entries
                          for seed in seeds(number))  # fmt: skip
    jobs = [(genome, seed, args) for genome, seed in pairs]
    todo = [job for job in jobs if not _scratch_path(*job).is_file()]
    _in_workers(_scratch_job, todo, args, "trained")
    for job in todo:
        _scratch_weights(*job, splits)
    if not export:
        return []
    exports = {(genome, seed) for _, number, genome in entries
               if number < max(1, args.export_search_seeds)
               for seed in seeds(number)} if args.scratch_export else set()  # fmt: skip
    todo = [(genome, _scratch_path(genome, seed, args), baseline, args)
            for genome, seed in sorted(exports, key=str)
            if not _scratch_path(genome, seed, args).with_suffix(".json").is_file()]  # fmt: skip
    _in_workers(_export_job, todo, args, "exported")
    rows = []
    for label, number, genome in entries:
        for seed in seeds(number):
            weights = _scratch_path(genome, seed, args)
            figures = partial(_scratch_export, genome, weights, splits, baseline, args)
            if (genome, seed) in exports:
                row = _cached(weights.with_suffix(".json"), figures)
            else:
                arena, flash = estimates[genome]
                row = {**_scratch_saved(weights), "arena_board_bytes": arena,
                       "flash_bytes": flash, "fits": arena <= baseline["arena_board_bytes"]
                       and flash <= baseline["flash_bytes"]}  # fmt: skip
            if row["epochs"] != args.train_epochs:
                raise SystemExit(f"{weights} was trained for {row['epochs']} epochs, not "
                                 f"--train-epochs {args.train_epochs}: use another --out")
            rows.append({**row, "label": label, "search_seed": number})
    return rows


def _in_workers(function: Any, jobs: list[Any], args: argparse.Namespace, done: str) -> None:
    """``function`` over ``jobs`` in ``--workers`` processes (nothing with one worker: the
    caller then does them itself)."""
    if args.workers < 2 or len(jobs) < 2:
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for finished, path in enumerate(pool.imap_unordered(function, jobs), 1):
            logger.info("[%d/%d] %s %s", finished, len(jobs), done, path.name)


def _scratch_path(genome: str | None, seed: int, args: argparse.Namespace) -> Path:
    return args.out / "scratch" / f"{genome or 'resnet8'}-seed{seed}.pt"


_WORKER_SPLITS: Any = None


def _worker_splits(args: argparse.Namespace) -> Any:
    """The data in a worker process, loaded once per worker."""
    global _WORKER_SPLITS
    from edgekit.data import load_dataset
    from edgekit.training import limit_threads

    if _WORKER_SPLITS is None:
        limit_threads(1)
        _WORKER_SPLITS = load_dataset(args.cifar, seed=args.seed,
                                      max_per_split=args.max_per_split or None)  # fmt: skip
    return _WORKER_SPLITS


def _scratch_job(job: tuple[str | None, int, argparse.Namespace]) -> Path:
    genome, seed, args = job
    return _scratch_weights(genome, seed, args, _worker_splits(args))


def _export_job(job: tuple[str | None, Path, dict[str, Any], argparse.Namespace]) -> Path:
    genome, weights, baseline, args = job
    _cached(weights.with_suffix(".json"),
            partial(_scratch_export, genome, weights, _worker_splits(args), baseline, args))
    return weights


def _scratch_saved(weights: Path) -> dict[str, Any]:
    import torch

    saved = torch.load(weights, map_location="cpu", weights_only=True)
    return {k: v for k, v in saved.items() if k != "state"}


def _scratch_weights(genome: str | None, seed: int, args: argparse.Namespace,
                     splits: Any) -> Path:  # fmt: skip
    import torch

    path = _scratch_path(genome, seed, args)
    if path.is_file():
        return path
    started = time.perf_counter()
    if genome is None:
        torch.manual_seed(seed)
        module = _resnet8_module(splits.num_classes, splits.input_shape[2]).to(args.device)
        _train(module, splits, args.train_epochs, seed, label=f"ResNet-8 seed {seed}",
               device=args.device)  # fmt: skip
        network = module
    else:
        # What edgekit search --scratch-epochs does with the chosen architecture.
        from edgekit.training import TrainSettings, train_subnet

        space = _space(args, splits)
        cfg = space.decode(genome)
        settings = TrainSettings(epochs=args.train_epochs, seed=seed, **RECIPE)
        module = train_subnet(space, cfg, splits, settings, device=args.device).to(args.device)
        network = _Resized(space, module, cfg)
    seconds = time.perf_counter() - started
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    path.parent.mkdir(exist_ok=True)
    unfinished = path.with_suffix(f".{os.getpid()}.partial")
    torch.save({"genome": genome, "seed": seed, "epochs": args.train_epochs,
                "train_seconds": round(seconds, 1), "device": where,
                "fp32_test_accuracy": _test_accuracy(network, splits, args.device),
                "state": module.cpu().state_dict()}, unfinished)  # fmt: skip
    unfinished.replace(path)  # a killed run leaves no half-written weights
    return path


def _scratch_export(genome: str | None, weights: Path, splits: Any, baseline: dict[str, Any],
                    args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    import torch

    from edgekit.export import export_model
    from edgekit.profiles import load_profile

    saved = torch.load(weights, map_location="cpu", weights_only=True)
    if genome is None:
        figures = _resnet8_export(_resnet8_loaded(saved, splits), splits, saved["seed"],
                                  weights.with_suffix(".tflite"))  # fmt: skip
        arena = figures["arena_board_bytes"]
    else:
        space = _space(args, splits)
        supernet = space.build_supernet()
        supernet.load_state_dict(saved["state"])
        # As ResNet-8: post-training quantization, BatchNorm statistics kept from training.
        result = export_model(space, supernet.eval(), space.decode(genome), splits,
                              weights.with_suffix(""), board=load_profile(BOARD), qat="never",
                              recalibrate=False, seed=saved["seed"])  # fmt: skip
        figures = {"int8_test_accuracy": result.int8_accuracy,
                   "fp32_test_accuracy": result.fp32_accuracy, "flash_bytes": result.flash_bytes}
        arena = result.manifest["arena"]["estimated_firmware_bytes"]
    fits = (arena is not None and arena <= baseline["arena_board_bytes"]
            and figures["flash_bytes"] <= baseline["flash_bytes"])  # fmt: skip
    return {**{k: v for k, v in saved.items() if k != "state"},
            "int8_test_accuracy": figures["int8_test_accuracy"],
            "exported_fp32_test_accuracy": figures["fp32_test_accuracy"],
            "arena_board_bytes": arena, "flash_bytes": figures["flash_bytes"], "fits": fits}


_LABELS = {"resnet8": "ResNet-8", "nsga2-gbdt": "searched: NSGA-II + GBDT predictor",
           "nsga2": "NSGA-II, no predictor", "random": "random search"}  # fmt: skip


def _scratch_table(rows: list[dict[str, Any]], test_images: int,
                   args: argparse.Namespace) -> str:  # fmt: skip
    """ResNet-8 and every search seed's choice trained the same way: fp32 test accuracy by
    training seed, int8 where exported, memory, and how often each beats ResNet-8."""
    import statistics

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["label"], row["search_seed"]), []).append(row)
    resnet8 = {r["seed"]: r for r in groups.get(("resnet8", 0), [])}

    def spread(values: list[float]) -> str:
        mean = f"{100 * statistics.fmean(values):.2f}%"
        return f"{mean} ({100 * statistics.stdev(values):.2f})" if len(values) > 1 else mean

    def wins(group: list[dict[str, Any]], key: str) -> str:
        paired = [r for r in group if r.get(key) is not None
                  and resnet8.get(r["seed"], {}).get(key) is not None]  # fmt: skip
        won = sum(r[key] > resnet8[r["seed"]][key] for r in paired)
        return f"{won} of {len(paired)}" if paired else "-"

    devices = ", ".join(sorted({r["device"] for r in rows}))
    lines = [
        f"### Every architecture trained the same way: {args.train_epochs} epochs from scratch",
        "",
        "ResNet-8 and the architecture each search chose, each trained from PyTorch's default "
        f"initialisation with ResNet-8's recipe (on {devices}); test accuracy on the "
        f"{test_images:,} test images in PyTorch (fp32) and, where exported, in TFLite Micro "
        "(int8, post-training quantization). Memory: measured on the exported file, or the "
        "memory model's figures (equal to the file's) where not exported.",
        "",
        "| model | search seed | genome | fp32 test acc by training seed | fp32 mean (std) | "
        "int8 mean (std) | arena | flash | fits | beats ResNet-8 at (fp32; int8) |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---:|",
    ]
    means: dict[str, list[float]] = {}
    for (label, number), group in groups.items():
        group.sort(key=lambda r: r["seed"])
        fp32 = [r["fp32_test_accuracy"] for r in group]
        int8 = [r.get("int8_test_accuracy") for r in group]
        means.setdefault(label, []).append(statistics.fmean(fp32))
        lines.append(
            f"| {_LABELS.get(label, label)} | {'-' if label == 'resnet8' else args.seed + number}"
            f" | `{group[0]['genome'] or 'resnet8'}` | "
            f"{', '.join(f'{100 * a:.2f}' for a in fp32)} | {spread(fp32)} | "
            f"{'-' if None in int8 else spread(int8)} | "
            f"{_kb(group[0]['arena_board_bytes'])} | {_kb(group[0]['flash_bytes'])} | "
            f"{'yes' if all(r['fits'] for r in group) else 'NO'} | "
            + ("-" if label == "resnet8" else
               f"{wins(group, 'fp32_test_accuracy')}; {wins(group, 'int8_test_accuracy')}")
            + " |"
        )
    if any(len(found) > 1 for found in means.values()):
        lines += ["", "Mean over search seeds of each search's fp32 mean: " + ", ".join(
            f"{_LABELS.get(label, label)} {100 * statistics.fmean(found):.2f}%"
            for label, found in means.items())]  # fmt: skip
    return "\n".join(lines)


def _space(args: argparse.Namespace, splits: Any) -> Any:
    from edgekit.spaces import get_space

    return get_space(args.space, num_classes=splits.num_classes,
                     in_channels=splits.input_shape[2])  # fmt: skip


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f} KB"


def _table(baseline: dict[str, Any], results: dict[str, dict[str, Any]], supernet_seconds: float,
           args: argparse.Namespace, threads: int, seconds: float,
           retrained: dict[str, dict[str, Any]]) -> str:  # fmt: skip
    lines = [
        f"## Search vs baselines on CIFAR-10{' (--quick)' if args.quick else ''}",
        "",
        f"{dt.date.today().isoformat()}, {cpu_name()}, "
        f"{threads} torch threads; board {BOARD}; space {args.space}; seed {args.seed}",
        "",
        f"Budgets = our int8 ResNet-8: tensor arena {_kb(baseline['arena_board_bytes'])} "
        f"(32-bit build; MLPerf Tiny states ~{REFERENCE_ARENA_KB} KB), flash "
        f"{_kb(baseline['flash_bytes'])} ({baseline['params']:,} parameters; MLPerf Tiny "
        f"states ~{REFERENCE_WEIGHTS_KB} KB of weights).",
        "",
        "| model | training | int8 test acc | arena | flash | fits | wall time |",
        "|---|---|---|---|---|---|---|",
        f"| ResNet-8 (our recipe) | {baseline['epochs']} epochs | "
        f"{_percent(baseline['int8_test_accuracy'])} | {_kb(baseline['arena_board_bytes'])} | "
        f"{_kb(baseline['flash_bytes'])} | yes (defines the budget) | "
        f"{baseline['train_seconds']:.0f} s |",
    ]
    labels = _LABELS
    for name, r in results.items():
        lines.append(
            f"| {labels.get(name, name)} `{r['genome']}` | supernet {args.epochs} epochs "
            f"({supernet_seconds:.0f} s, shared) + {r['evaluations']} evaluations + fine-tune "
            f"{args.finetune_epochs} epochs | {_percent(r['int8_test_accuracy'])} | "
            f"{_kb(r['arena_board_bytes'])} | {_kb(r['flash_bytes'])} | "
            f"{'yes' if r['fits'] else 'NO'} | {r['seconds']:.0f} s search + export |"
        )
    for name, r in retrained.items():
        if r.get("genome") is None:
            continue
        lines.append(
            f"| {labels.get(name, name)}'s architecture trained like ResNet-8 `{r['genome']}` | "
            f"{r['epochs']} epochs from the supernet's weights, ResNet-8's recipe | "
            f"{_percent(r['int8_test_accuracy'])} | {_kb(r['arena_board_bytes'])} | "
            f"{_kb(r['flash_bytes'])} | {'yes' if r['fits'] else 'NO'} | "
            f"{r['train_seconds']:.0f} s training |"
        )
    lines += ["", "| search | best val acc (inherited) | chosen val acc | over budget | "
              "screened out | predictor Kendall tau |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        tau = r["predictor_kendall_tau"]
        lines.append(
            f"| {labels.get(name, name)} | {_percent(r['best_val_accuracy'])} | "
            f"{_percent(r['val_accuracy'])} | {r['over_budget']} | {r['screened_out']} | "
            f"{'-' if tau is None else f'{tau:.2f}'} |"
        )
    lines += ["", f"Total wall time {seconds / 60:.1f} min; results and reports in {args.out}."]
    return "\n".join(lines)


def _reach(splits: Any, baseline: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The largest of ``--reach-samples`` random configs that fit the budgets (by MACs and by
    parameters), each trained from random initialisation exactly like ResNet-8 (fp32 test
    accuracy): what the space can reach under the budgets whatever the supernet ranks first."""
    import random

    from edgekit.search.objectives import fits_budget
    from edgekit.spaces import get_space

    space = get_space(args.space, num_classes=splits.num_classes,
                      in_channels=splits.input_shape[2])  # fmt: skip
    board, budget = _board_budget(baseline)
    rng = random.Random(args.seed)
    fitting = []
    for _ in range(args.reach_samples):
        cfg = space.sample(rng)
        if fits_budget(space, cfg, board, budget):
            fitting.append((cfg, space.count(cfg)))
    result: dict[str, Any] = {
        "samples": args.reach_samples, "fitting": len(fitting),
        "resnet8_macs": _resnet8_counts(splits.num_classes, splits.input_shape)[0],
        "largest": [],
    }  # fmt: skip
    if not fitting:
        return result
    for label, field in (("most MACs", "macs"), ("most parameters", "params")):
        cfg, counts = max(fitting, key=lambda item: getattr(item[1], field))
        row = {"label": label, "genome": space.encode(cfg), "macs": counts.macs,
               "params": counts.params}  # fmt: skip
        if args.retrain:
            row.update(_from_scratch(space, cfg, splits, args))
        result["largest"].append(row)
    return result


def _from_scratch(space: Any, cfg: Any, splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``cfg`` trained from random initialisation exactly like ResNet-8 (the scratch step's
    training, seed ``seed``, kept in ``scratch/``): fp32 test accuracy."""
    saved = _scratch_saved(_scratch_weights(space.encode(cfg), args.seed, args, splits))
    return {key: saved[key] for key in ("epochs", "train_seconds", "fp32_test_accuracy")}


def _test_accuracy(network: Any, splits: Any, device: str = "cpu") -> float:
    """fp32 top-1 accuracy of a trained network (on ``device``) on the test split."""
    import torch

    from edgekit.export.verify import accuracy
    from edgekit.training import to_nchw

    images = to_nchw(splits.test.x).to(device)
    with torch.no_grad():
        logits = torch.cat([network(images[i : i + 500]).cpu()
                            for i in range(0, len(images), 500)])  # fmt: skip
    return accuracy(logits.numpy(), splits.test.y)


def _resnet8_counts(
    num_classes: int, input_shape: tuple[int, int, int],
    widths: tuple[int, ...] = (16, 16, 32, 64), blocks: tuple[int, ...] = (1, 1, 1),
) -> tuple[int, int]:
    """ResNet-8's (or a variant's, see _resnet8_module) MACs on one image (torch's FLOP
    counter / 2) and its parameters."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network = _resnet8_module(num_classes, input_shape[2], widths, blocks).eval()
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        network(torch.zeros(1, input_shape[2], *input_shape[:2]))
    return flops.get_total_flops() // 2, sum(p.numel() for p in network.parameters())


def _ranking_samples(space: Any, baseline: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """The ``--ranking-samples`` random fitting configs of step 7 (the same for every run)."""
    import random

    from edgekit.search.objectives import fits_budget

    board, budget = _board_budget(baseline)
    rng = random.Random(args.seed + 1)
    found: list[Any] = []
    while len(found) < args.ranking_samples:
        cfg = space.sample(rng)
        if fits_budget(space, cfg, board, budget):
            found.append(cfg)
    return found


def _ranking_trained(splits: Any, baseline: dict[str, Any],
                     args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Step 7's random fitting configs and the smallest, trained from scratch like ResNet-8
    (independent of the supernet: the cache file can be shared between output folders)."""
    from edgekit.spaces import get_space

    space = get_space(args.space, num_classes=splits.num_classes,
                      in_channels=splits.input_shape[2])  # fmt: skip
    trained = {}
    for cfg in [space.smallest(), *_ranking_samples(space, baseline, args)]:
        trained[space.encode(cfg)] = _from_scratch(space, cfg, splits, args)
    return trained


def _board_budget(baseline: dict[str, Any]) -> tuple[Any, Any]:
    """The board and ResNet-8's budgets on it: what every search here must fit."""
    from edgekit.profiles import load_profile
    from edgekit.search import Budget

    board = load_profile(BOARD)
    return board, Budget.for_board(board, sram=baseline["arena_board_bytes"],
                                   flash=baseline["flash_bytes"])  # fmt: skip


def _reach_table(reach: dict[str, Any], baseline: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"### What {args.space} can reach under these budgets",
        "",
        f"{reach['fitting']} of {reach['samples']} random configs fit (config-based memory "
        "model, 32-bit build). Trained from random initialisation exactly like ResNet-8 "
        "(same recipe and epochs; fp32 test accuracy):",
        "",
        "| network | MACs | parameters | fp32 test acc | training |",
        "|---|---:|---:|---:|---:|",
        f"| ResNet-8 | {reach['resnet8_macs']:,} | {baseline['params']:,} | "
        f"{_percent(baseline['fp32_test_accuracy'])} | {baseline['train_seconds']:.0f} s |",
    ]
    for row in reach["largest"]:
        seconds = row.get("train_seconds")
        lines.append(
            f"| fitting config with the {row['label']} `{row['genome']}` | {row['macs']:,} | "
            f"{row['params']:,} | {_percent(row.get('fp32_test_accuracy'))} | "
            f"{'-' if seconds is None else f'{seconds:.0f} s'} |"
        )
    return "\n".join(lines)


def _flash_table(results: dict[str, dict[str, Any]], retrained: dict[str, dict[str, Any]],
                 args: argparse.Namespace) -> str:  # fmt: skip
    """Where each exported model's flash goes, read from its .tflite file."""
    from edgekit.estimate.flash import flash_breakdown
    from edgekit.estimate.tflite_file import load_model

    files = {"ResNet-8": args.out / "resnet8.tflite"}
    for name in results:
        bundle = args.out / f"search-{name}" / "models" / args.space
        files[f"{name} search"] = bundle / "model.tflite"
    for name, r in retrained.items():
        if r.get("genome") is not None:
            files[f"{name} retrained"] = args.out / f"retrain-{name}" / "model.tflite"
    lines = [
        "### Where the flash goes (bytes of each exported .tflite)",
        "",
        "| model | total | weights | biases | quantization parameters | flatbuffer overhead |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, path in files.items():
        if not path.is_file():
            continue
        parts = flash_breakdown(load_model(path)[1])
        share = parts.weight_bytes / parts.total_bytes
        lines.append(
            f"| {label} | {parts.total_bytes:,} | {parts.weight_bytes:,} ({share:.0%}) | "
            f"{parts.bias_bytes:,} | {parts.quantization_bytes:,} | {parts.overhead_bytes:,} |"
        )
    return "\n".join(lines)


def _ranking(splits: Any, supernet_path: Path, baseline: dict[str, Any], reach: dict[str, Any],
             retrained: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Inherited validation accuracy (as the search measures it) of the subnets that step 4
    and 6 trained like ResNet-8, of the smallest and largest, and of random fitting configs."""

    from edgekit.search.objectives import evaluate_accuracy
    from edgekit.training import load_supernet

    space, supernet, _ = load_supernet(supernet_path)
    rows = [{"label": "smallest", "genome": space.encode(space.smallest())},
            {"label": "largest", "genome": space.encode(space.largest())}]  # fmt: skip
    for name, r in retrained.items():
        if r.get("genome") is not None:
            rows.append({"label": f"{name} search's choice", "genome": r["genome"],
                         "trained": r["int8_test_accuracy"]})  # fmt: skip
    for r in reach["largest"]:
        rows.append({"label": f"fitting config with the {r['label']}", "genome": r["genome"],
                     "trained": r.get("fp32_test_accuracy")})  # fmt: skip
    for number, cfg in enumerate(_ranking_samples(space, baseline, args), start=1):
        rows.append({"label": f"random fitting config {number}", "genome": space.encode(cfg)})
    for row in rows:
        row["inherited"] = evaluate_accuracy(
            space, supernet, space.decode(row["genome"]), splits.val,
            recalibrate_with=splits.train, batches=10, max_samples=args.eval_samples,
            seed=args.seed,
        )  # fmt: skip
    return {"rows": rows}


def _ranking_table(ranking: dict[str, Any], from_scratch: dict[str, Any],
                   args: argparse.Namespace) -> str:  # fmt: skip
    from scipy.stats import kendalltau

    lines = [
        "### How the supernet ranks what fits",
        "",
        f"Inherited validation accuracy ({args.eval_samples} images, BatchNorm recalibrated on "
        "10 batches, as the search measures it) against the test accuracy of the same "
        "architecture trained like ResNet-8 (int8 from the supernet's weights for the "
        "searches' choices, fp32 from random initialisation for the others):",
        "",
        "| subnet | genome | inherited val acc | trained like ResNet-8 |",
        "|---|---|---:|---:|",
    ]
    pairs = []
    for row in ranking["rows"]:
        trained = row.get("trained")
        if trained is None:
            trained = from_scratch.get(row["genome"], {}).get("fp32_test_accuracy")
        if trained is not None and "search's choice" not in row["label"]:
            pairs.append((row["inherited"], trained))
        lines.append(f"| {row['label']} | `{row['genome']}` | {_percent(row['inherited'])} | "
                     f"{_percent(trained)} |")  # fmt: skip
    if len(pairs) >= 3:
        tau = kendalltau(*zip(*pairs, strict=True)).statistic
        text = "undefined (ties)" if math.isnan(tau) else f"{tau:.2f}"
        lines += ["", f"Kendall tau, inherited vs trained from random initialisation, over "
                      f"{len(pairs)} configs: {text}."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
