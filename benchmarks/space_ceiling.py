"""What a search space can reach under ResNet-8's budgets, trained from scratch (issue #6).

The search benchmark (``search_vs_baselines.py``) trains only a handful of architectures from
scratch. This script trains many: ResNet-8 (several seeds, for the seed noise) and configs that
fit ResNet-8's measured arena and flash on the MLPerf Tiny board, each exactly like ResNet-8
(``search_vs_baselines._train``: same recipe, data subset and epochs), and reports how many
beat ResNet-8, what the best look like and how well cheap proxies (MACs, parameters) rank them.

Run from the repository root, in three steps that each resume:

    PYTHONPATH=. .venv/bin/python benchmarks/space_ceiling.py plan --out runs/ceiling
    PYTHONPATH=. .venv/bin/python benchmarks/space_ceiling.py train --out runs/ceiling \\
        [--device cuda --workers 12]
    PYTHONPATH=. .venv/bin/python benchmarks/space_ceiling.py report --out runs/ceiling

``plan`` (CPU, needs the memory model and CIFAR-10 at ``../shared/datasets/cifar10-jpeg75``)
draws ``--samples`` random configs, keeps those that fit, and writes ``plan.json``: ResNet-8
with ``--resnet8-seeds`` seeds, the ``--top`` fitting configs with the most MACs, ``--random``
other fitting configs and any ``--genome`` given (configs that differ in patches only compute
the same function: each counts once, with the smallest patch grid that fits, and its MACs
are the whole-image network's, without recomputed halos). It also writes ``splits.npz``: the
training and test images the search benchmark uses (its stratified 10,000-image subset, as the
original JPEG bytes, ~19 MB), so that the folder alone can be trained elsewhere (a GPU machine).
Configs train from PyTorch's default initialisation, as ResNet-8 does.
``plan --space tiny-resnet`` plans configs of another space (default: tiny-cnn).
``plan --from-results EARLIER --best N --top M --epochs E`` plans instead the N most accurate
configs of an earlier run and the M others with the most MACs (to train them longer, say).
``reseed --best N --seeds K`` (needs only the folder) adds seeds 1 .. K-1 of the N configs
that scored best with seed 0 to ``plan.json``, so that a further ``train`` measures them over
K seeds, as ResNet-8 is (one seed's spread is as large as the differences between the best).
``train`` needs only torch and the folder; it appends one line per trained model to
``results.jsonl`` (a killed run loses only the models in flight). ``rank --supernet PATH``
measures every trained config's accuracy inherited from a supernet checkpoint, as the search
measures it (BatchNorm recalibration, ``--eval-samples`` validation images; ``--device cuda``
on a GPU), into ``inherited-<checkpoint folder>.json``. ``report`` prints the markdown for
docs/BENCHMARKS.md and writes ``ceiling.png``: how many configs beat ResNet-8, the best ones,
and how well MACs, parameters and each ranked supernet order the configs (Kendall tau, and
what the top config by each would have scored).

Patch-based configs are trained whole-image: patch execution computes the same outputs.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_name  # noqa: E402
from search_vs_baselines import (  # noqa: E402
    DEFAULT_CIFAR,
    _board_budget,
    _Resized,
    _resnet8_counts,
    _resnet8_module,
    _test_accuracy,
    _train,
)

logger = logging.getLogger("benchmarks.space_ceiling")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("plan", "train", "reseed", "rank", "report"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "space-ceiling")
    parser.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    parser.add_argument("--baseline", type=Path, default=REPO / "runs" / "search-vs-baselines",
                        help="the search benchmark's --out (its resnet8.json holds the budgets)")
    parser.add_argument("--max-per-split", type=int, default=10000,
                        help="the search benchmark's subset (same default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="tiny-cnn", help="plan: the space to draw from")
    parser.add_argument("--seeds", type=int, default=5, help="reseed: seeds per best config")
    parser.add_argument("--samples", type=int, default=30000, help="random configs drawn")
    parser.add_argument("--top", type=int, default=120, help="fitting configs with most MACs")
    parser.add_argument("--random", type=int, default=60, help="other random fitting configs")
    parser.add_argument("--resnet8-seeds", type=int, default=3)
    parser.add_argument("--genome", action="append", default=[], help="also train this config")
    parser.add_argument("--from-results", type=Path,
                        help="plan: instead of drawing configs, take the --best most accurate "
                             "and then the --top with most MACs of this earlier --out "
                             "(e.g. to train them for more --epochs)")  # fmt: skip
    parser.add_argument("--best", type=int, default=10, help="with --from-results; reseed")
    parser.add_argument("--epochs", type=int, default=8, help="the search benchmark's 6 + 2")
    parser.add_argument("--device", default="cpu", help="train, rank: cpu or cuda")
    parser.add_argument("--workers", type=int, default=1, help="models trained at once")
    parser.add_argument("--supernet", type=Path, action="append", default=[],
                        help="rank: a supernet checkpoint whose inherited accuracy to compare")
    parser.add_argument("--eval-samples", type=int, default=5000,
                        help="rank: validation images per config (the search's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.step == "plan":
        if not args.cifar.is_dir():
            print(f"CIFAR-10 not found at {args.cifar}; nothing to do.")
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        _plan(args)
    elif not (args.out / "plan.json").is_file():
        print(f"{args.out / 'plan.json'} not found: run the plan step first.")
        return 1
    elif args.step == "train":
        _train_all(args)
    elif args.step == "reseed":
        _reseed(args)
    elif args.step == "rank":
        for path in args.supernet:
            _rank(args, path)
    else:
        print(_report(args))
    return 0


# --- plan ----------------------------------------------------------------------------------------
def _plan(args: argparse.Namespace) -> None:
    from edgekit.data import load_dataset
    from edgekit.search.objectives import fits_budget
    from edgekit.spaces import get_space

    resnet8_json = args.baseline / "resnet8.json"
    if not resnet8_json.is_file():
        raise SystemExit(f"{resnet8_json} not found: run search_vs_baselines.py first "
                         "(its step 1 measures ResNet-8's budgets)")  # fmt: skip
    baseline = json.loads(resnet8_json.read_text())
    splits = load_dataset(args.cifar, seed=args.seed, max_per_split=args.max_per_split)
    _write_splits(args.cifar, splits, args.out / "splits.npz")
    space = get_space(args.space, num_classes=splits.num_classes,
                      in_channels=splits.input_shape[2])  # fmt: skip
    board, budget = _board_budget(baseline)
    fitting: dict[str, int] = {}
    if args.from_results:
        earlier = [json.loads(line) for line in _lines(args.from_results / "results.jsonl")]
        earlier = [r for r in earlier if r["kind"] == "config"]
        earlier.sort(key=lambda r: r["fp32_test_accuracy"], reverse=True)
        best = [r["genome"] for r in earlier[: args.best]]
        fitting = {r["genome"]: r["macs"] for r in earlier if r["genome"] not in best}
        args.genome = [*args.genome, *best]
        args.samples, args.random = len(earlier), 0
    else:
        rng = random.Random(args.seed + 2)
        # Configs that differ in patches only compute the same function: one entry per
        # whole-image network, with the smallest patch grid that fits, ranked by its MACs
        # without the patches' recomputed halos.
        chosen: dict[Any, Any] = {}
        for _ in range(args.samples):
            cfg = space.sample(rng)
            whole = space.whole_image(cfg)
            known = chosen.get(whole)
            if (known is None or _grid(cfg) < _grid(known)) and fits_budget(
                space, cfg, board, budget
            ):
                chosen[whole] = cfg
        fitting = {space.encode(cfg): space.count(whole).macs for whole, cfg in chosen.items()}
    by_macs = sorted(fitting, key=fitting.__getitem__, reverse=True)
    top = by_macs[: args.top]
    rest = by_macs[args.top :]
    others = random.Random(args.seed + 3).sample(rest, min(args.random, len(rest)))
    entries = [{"kind": "resnet8", "label": "ResNet-8", "seed": args.seed + i}
               for i in range(args.resnet8_seeds)]  # fmt: skip
    for genome in args.genome:
        if not fits_budget(space, space.decode(genome), board, budget):
            raise SystemExit(f"--genome {genome} does not fit ResNet-8's budgets")
        entries.append({"kind": "config", "label": "given", "genome": genome, "seed": args.seed})
    # Interleaved in proportion, so that a run cut short still holds both kinds.
    labelled = sorted([((i + 0.5) / len(top), "most MACs", g) for i, g in enumerate(top)]
                      + [((i + 0.5) / len(others), "random", g) for i, g in enumerate(others)])
    entries += [{"kind": "config", "label": label, "genome": g, "seed": args.seed}
                for _, label, g in labelled]  # fmt: skip
    source = (f"taken from {args.from_results}" if args.from_results else
              f"{len(fitting):,} of {args.samples:,} random configs fit")  # fmt: skip
    plan = {"space": args.space, "epochs": args.epochs, "source": source,
            "budget": {"arena": baseline["arena_board_bytes"], "flash": baseline["flash_bytes"]},
            "entries": entries}  # fmt: skip
    (args.out / "plan.json").write_text(json.dumps(plan, indent=1))
    logger.info("configs %s; %d models planned", source, len(entries))


def _grid(cfg: Any) -> int:
    """A config's patch grid; 1 for a space without one (tiny-vit)."""
    return getattr(cfg, "patch_grid", 1)


def _write_splits(cifar: Path, splits: Any, path: Path) -> None:
    """The subset's training and test images as their original JPEG bytes (found by decoding
    the dataset and matching pixels), in the dataset's own jpeg/offsets/y layout."""
    import numpy as np
    from PIL import Image

    arrays = {}
    for split, part, name in (("train", splits.train, "train_jpeg_bytes.npz"),
                              ("test", splits.test, "test_jpeg_bytes.npz")):  # fmt: skip
        source = np.load(cifar / name)
        blob, offsets = source["jpeg"], source["offsets"]
        first_index: dict[bytes, int] = {}
        for i in range(len(offsets) - 1):
            data = blob[offsets[i] : offsets[i + 1]].tobytes()
            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            first_index.setdefault(pixels.tobytes(), i)
        wanted = np.round(part.x * 255).astype(np.uint8)
        order = [first_index[image.tobytes()] for image in wanted]
        pieces = [blob[offsets[i] : offsets[i + 1]] for i in order]
        arrays[f"{split}_jpeg"] = np.concatenate(pieces)
        arrays[f"{split}_offsets"] = np.concatenate(
            [[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
        arrays[f"{split}_y"] = np.asarray(part.y)
    np.savez(path, **arrays)


def _read_splits(path: Path) -> SimpleNamespace:
    import numpy as np
    from PIL import Image

    arrays = np.load(path)
    parts = {}
    for split in ("train", "test"):
        blob, offsets = arrays[f"{split}_jpeg"], arrays[f"{split}_offsets"]
        images = np.stack([
            np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes()))
                       .convert("RGB"))
            for i in range(len(offsets) - 1)
        ]).astype(np.float32) / 255  # fmt: skip
        parts[split] = SimpleNamespace(x=images, y=arrays[f"{split}_y"].astype(np.int64))
    return SimpleNamespace(**parts, num_classes=int(parts["train"].y.max()) + 1)


# --- train ---------------------------------------------------------------------------------------
_SPLITS: SimpleNamespace | None = None


def _train_all(args: argparse.Namespace) -> None:
    import multiprocessing

    plan = json.loads((args.out / "plan.json").read_text())
    results_path = args.out / "results.jsonl"
    done = {_key(json.loads(line)) for line in _lines(results_path)}
    todo = [e for e in plan["entries"] if _key(e) not in done]
    logger.info("%d of %d models left to train on %s", len(todo), len(plan["entries"]),
                args.device)  # fmt: skip
    jobs = [(e, plan["epochs"], str(args.out / "splits.npz"), args.device, plan["space"])
            for e in todo]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool, results_path.open("a") as out:
        for finished, row in enumerate(pool.imap_unordered(_train_one, jobs), 1):
            out.write(json.dumps(row) + "\n")
            out.flush()
            logger.info("[%d/%d] %s: %.2f%% in %.0f s", finished, len(jobs),
                        row.get("genome", row["label"]), 100 * row["fp32_test_accuracy"],
                        row["train_seconds"])  # fmt: skip


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return entry["kind"], entry.get("genome"), entry["seed"]


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def _reseed(args: argparse.Namespace) -> None:
    plan = json.loads((args.out / "plan.json").read_text())
    rows = [json.loads(line) for line in _lines(args.out / "results.jsonl")]
    first = sorted((r for r in rows if r["kind"] == "config" and r["seed"] == args.seed),
                   key=lambda r: r["fp32_test_accuracy"], reverse=True)  # fmt: skip
    planned = {_key(e) for e in plan["entries"]}
    added = [{**{k: r[k] for k in ("kind", "label", "genome")}, "seed": args.seed + i}
             for r in first[: args.best] for i in range(1, args.seeds)]  # fmt: skip
    added = [e for e in added if _key(e) not in planned]
    plan["entries"] += added
    (args.out / "plan.json").write_text(json.dumps(plan, indent=1))
    logger.info("%d models added: seeds %d-%d of the %d best configs", len(added), args.seed + 1,
                args.seed + args.seeds - 1, min(args.best, len(first)))  # fmt: skip


def _train_one(job: tuple[dict[str, Any], int, str, str, str]) -> dict[str, Any]:
    from edgekit.spaces import get_space
    from edgekit.training import torch_default_init

    entry, epochs, splits_path, device, space_name = job
    global _SPLITS
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True  # one input shape per model
    if _SPLITS is None:
        _SPLITS = _read_splits(Path(splits_path))
    splits = _SPLITS
    in_channels = splits.train.x.shape[3]
    torch.manual_seed(entry["seed"])
    row = dict(entry)
    if entry["kind"] == "resnet8":
        module = _resnet8_module(splits.num_classes, in_channels).to(device)
    else:
        space = get_space(space_name, num_classes=splits.num_classes, in_channels=in_channels)
        cfg = space.decode(entry["genome"])
        # Patches compute the whole image's outputs; whole-image execution trains faster.
        whole = space.whole_image(cfg)
        counts = space.count(whole)  # MACs without the patches' recomputed halos
        row.update(macs=counts.macs, params=counts.params)
        network = torch_default_init(space.extract(space.build_supernet(), whole))
        row["init"] = "torch-default"
        module = _Resized(space, network.to(device), whole)
    started = time.perf_counter()
    _train(module, splits, epochs, entry["seed"], label=row.get("genome", "ResNet-8"),
           device=device)  # fmt: skip
    row["train_seconds"] = round(time.perf_counter() - started, 1)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name()
    row.update(epochs=epochs, device=where,
               fp32_test_accuracy=_test_accuracy(module, splits, device))  # fmt: skip
    return row


# --- rank ----------------------------------------------------------------------------------------
def _rank(args: argparse.Namespace, checkpoint: Path) -> None:
    from edgekit.data import load_dataset
    from edgekit.search.objectives import evaluate_accuracy
    from edgekit.training import limit_threads, load_supernet

    limit_threads()
    path = args.out / f"inherited-{checkpoint.absolute().parent.name}.json"
    inherited = json.loads(path.read_text()) if path.is_file() else {}
    rows = [json.loads(line) for line in _lines(args.out / "results.jsonl")]
    genomes = dict.fromkeys(r["genome"] for r in rows if r["kind"] == "config")  # seeds once
    todo = [g for g in genomes if g not in inherited]
    if not todo:
        return
    splits = load_dataset(args.cifar, seed=args.seed, max_per_split=args.max_per_split)
    space, supernet, _ = load_supernet(checkpoint)
    supernet.to(args.device)  # evaluation follows the network
    for number, genome in enumerate(todo, 1):
        inherited[genome] = evaluate_accuracy(
            space, supernet, space.decode(genome), splits.val, recalibrate_with=splits.train,
            batches=10, max_samples=args.eval_samples, seed=args.seed)  # fmt: skip
        path.write_text(json.dumps(inherited, indent=1))  # after each: a kill loses one config
        logger.info("[%d/%d] %s inherits %.2f%%", number, len(todo), genome,
                    100 * inherited[genome])  # fmt: skip


# --- report --------------------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> str:
    from scipy.stats import kendalltau

    plan = json.loads((args.out / "plan.json").read_text())
    rows = [json.loads(line) for line in _lines(args.out / "results.jsonl")]
    resnet8 = [r["fp32_test_accuracy"] for r in rows if r["kind"] == "resnet8"]
    every_seed = [r for r in rows if r["kind"] == "config"]
    configs = sorted((r for r in every_seed if r["seed"] == args.seed),
                     key=lambda r: r["fp32_test_accuracy"], reverse=True)  # fmt: skip
    if not resnet8 or not configs:
        return "no results yet"
    mean = statistics.fmean(resnet8)
    seeds = ", ".join(f"{100 * a:.2f}" for a in resnet8)
    if len(resnet8) > 1:
        seeds = f"std {100 * statistics.stdev(resnet8):.2f}: {seeds}"
    beating = [r for r in configs if r["fp32_test_accuracy"] > mean]
    accs = [r["fp32_test_accuracy"] for r in configs]
    devices = sorted({r["device"] for r in rows})
    resnet8_macs, resnet8_params = _resnet8_counts(10, (32, 32, 3))  # CIFAR-10
    lines = [
        f"### What {plan['space']} reaches under ResNet-8's budgets, trained from scratch",
        "",
        f"- {len(configs)} configs that fit (arena <= {plan['budget']['arena']:,} B, flash <= "
        f"{plan['budget']['flash']:,} B; {_source(plan)}), each trained like ResNet-8 for "
        f"{plan['epochs']} epochs; fp32 test "
        f"accuracy on the 10,000 test images; trained on {', '.join(devices)}",
        f"- ResNet-8 ({resnet8_macs:,} MACs, {resnet8_params:,} parameters) over "
        f"{len(resnet8)} seed(s): {100 * mean:.2f}% ({seeds})",
        f"- configs above ResNet-8's mean: {len(beating)} of {len(configs)}; best "
        f"{100 * accs[0]:.2f}%, median {100 * statistics.median(accs):.2f}%",
    ]
    for label in ("most MACs", "random", "given"):
        group = [r["fp32_test_accuracy"] for r in configs if r["label"] == label]
        if group:
            lines.append(f"- {label}: {len(group)} configs, best {100 * max(group):.2f}%, "
                         f"median {100 * statistics.median(group):.2f}%")  # fmt: skip
    proxies = {"MACs": {r["genome"]: r["macs"] for r in configs},
               "parameters": {r["genome"]: r["params"] for r in configs}}  # fmt: skip
    for path in sorted(args.out.glob("inherited-*.json")):
        proxies[f"inherited from `{path.stem[len('inherited-'):]}`"] = json.loads(path.read_text())
    lines += ["", "| ranked by | configs | Kendall tau vs trained | the top config trained |",
              "|---|---:|---:|---:|"]  # fmt: skip
    trained = {r["genome"]: r["fp32_test_accuracy"] for r in configs}
    for name, proxy in proxies.items():
        common = [g for g in trained if g in proxy]
        tau = kendalltau([proxy[g] for g in common], [trained[g] for g in common]).statistic
        best = max(common, key=proxy.__getitem__)
        lines.append(f"| {name} | {len(common)} | {tau:.2f} | {100 * trained[best]:.2f}% |")
    lines += ["", "| rank | config | MACs | params | fp32 test accuracy | train time |",
              "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for rank, r in enumerate(configs[:10], 1):
        lines.append(f"| {rank} | `{r['genome']}` | {r['macs']:,} | {r['params']:,} | "
                     f"{100 * r['fp32_test_accuracy']:.2f}% | {r['train_seconds']:.0f} s |")
    lines += _seeds_table(every_seed, rows)
    _plot(configs, resnet8, resnet8_macs, args.out / "ceiling.png", plan["space"])
    lines += ["", f"Plot: `{args.out / 'ceiling.png'}`."]
    return "\n".join(lines)


def _source(plan: dict[str, Any]) -> str:
    if "source" in plan:
        return plan["source"]
    return f"{plan['fitting']:,} of {plan['samples']:,} random configs fit"  # older plans


def _seeds_table(every_seed: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """The configs trained with several seeds, next to ResNet-8 over the same seeds."""
    by_genome: dict[str, dict[int, float]] = {}
    for r in every_seed:
        by_genome.setdefault(r["genome"], {})[r["seed"]] = r["fp32_test_accuracy"]
    resnet8 = {r["seed"]: r["fp32_test_accuracy"] for r in rows if r["kind"] == "resnet8"}
    several = {g: accs for g, accs in by_genome.items() if len(accs) > 1}
    if not several:
        return []
    lines = ["", "| config | seeds | fp32 test accuracy by seed | mean (std) | ResNet-8 on the "
             "same seeds | better at |", "|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for genome, accs in sorted(several.items(), key=lambda x: -statistics.fmean(x[1].values())):
        seeds = sorted(accs)
        values = [accs[s] for s in seeds]
        paired = [s for s in seeds if s in resnet8]
        reference = (f"{100 * statistics.fmean(resnet8[s] for s in paired):.2f}%"
                     if paired else "-")  # fmt: skip
        better = sum(accs[s] > resnet8[s] for s in paired)
        by_seed = ", ".join(f"{100 * v:.2f}" for v in values)
        mean, std = 100 * statistics.fmean(values), 100 * statistics.stdev(values)
        lines.append(f"| `{genome}` | {seeds[0]}-{seeds[-1]} | {by_seed} | {mean:.2f}% ({std:.2f})"
                     f" | {reference} | {better} of {len(paired)} |")  # fmt: skip
    return lines


def _plot(configs: list[dict[str, Any]], resnet8: list[float], resnet8_macs: int,
          path: Path, space: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, marker in (("most MACs", "o"), ("random", "s"), ("given", "^")):
        group = [r for r in configs if r["label"] == label]
        if group:
            axis.scatter([r["macs"] / 1e6 for r in group],
                         [100 * r["fp32_test_accuracy"] for r in group], marker=marker, s=18,
                         alpha=0.7, label=f"{label} ({len(group)})")  # fmt: skip
    mean = 100 * statistics.fmean(resnet8)
    axis.axhline(mean, color="black", linestyle="--", linewidth=0.8)
    axis.scatter([resnet8_macs / 1e6] * len(resnet8), [100 * a for a in resnet8], marker="*",
                 s=80, color="black", label=f"ResNet-8, {len(resnet8)} seeds (mean {mean:.2f}%)")
    axis.set_xlabel("MACs (millions)")
    axis.set_ylabel("fp32 test accuracy (%)")
    axis.set_title(f"{space} configs within ResNet-8's arena and flash, trained from scratch")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
