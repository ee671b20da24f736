"""Config-based memory model vs the file-based one (and the real interpreter), and its speed.

For ``--count`` random configs from the ``--spaces`` (default tiny-cnn and tiny-vit; 1 or 3
input channels) the int8 model is exported exactly as ``edgekit.export`` ships it, compacted
(random supernet weights: memory does not depend on training) and compared:

* config-based arena (``estimate_config_bytes``, 64- and 32-bit builds) vs ``analyze_tflite``
  on the exported file: exact-match rate, max and mean absolute error;
* config-based flash vs the .tflite size: exact-match rate, max / mean absolute and relative
  error;
* the flash that ``compact_model`` saves by sharing per-channel zero-point and scale vectors
  (and by its layout), against the same file with only the names stripped;
* ``analyze_tflite`` vs the arena measured with the tflite-micro interpreter
  (``measure_tflm_arena``) on every model by default (``--measure-every N``: one pair of
  models, one per space, in N). The interpreter's bisection takes seconds per model, so
  measured arenas are kept in ``--cache-dir`` keyed by the model file's hash.

With ``--synthesis-check N``: the fast path (``fast_figures``, compiled code on from the
first config) against the full graph synthesis (``estimate_config``) on N new random configs
per family, a random pointer width each: arena, head, tail and flash must all be equal (no
export: the synthesis equals the exported files, see above and the tests).

Then the fast path's throughput on one core: configs/s with cold caches, in steady state (new
configs, piece caches warm) and for repeated configs, per family (tiny-cnn whole-image, tiny-cnn
patched, tiny-vit). Prints markdown tables. tiny-cnn configs are planned as in a search, by the
compiled flat planner (``edgekit.estimate._flat_plan``) when numba is installed.

Run: PYTHONPATH=. .venv/bin/python benchmarks/memory_config_accuracy.py [--count 200]
     [--measure-every 1] [--synthesis-check 0] [--speed-configs 20000] [--speed-repeats 1]
     [--cache-dir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError
from edgekit.estimate import analyze_tflite, measure_tflm_arena
from edgekit.estimate.from_config import estimate_config_bytes, trained_like_weights
from edgekit.spaces import get_space


def sample_configs(
    count: int, seed: int, spaces: tuple[str, ...] = ("tiny-cnn", "tiny-vit")
) -> list[tuple[Any, Any]]:
    """(space, config) pairs alternating between the spaces, random input channels."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        space = get_space(spaces[len(out) % len(spaces)], 10, rng.choice([1, 3]))
        cfg = space.sample(rng)
        try:
            estimate_config_bytes(cfg)
        except ConfigError:
            continue
        out.append((space, cfg))
    return out


def export(space: Any, cfg: Any, cache_dir: Path, supernets: dict) -> tuple[bytes, int]:
    """The int8 .tflite the exporter makes from ``cfg``, compacted as in a bundle (the
    converter's output is cached in ``cache_dir``), and the size it would have with only the
    names stripped (no vector shared), for the savings column."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgekit.export import compact_model

    path = cache_dir / f"{space.name}_c{cfg.in_channels}_{space.encode(cfg)}.tflite"
    if not path.exists():
        import numpy as np

        from edgekit.export import build_tf_graph, convert_int8

        key = (space.name, cfg.in_channels)
        if key not in supernets:
            supernets[key] = trained_like_weights(space.build_supernet())
        module = space.extract(supernets[key], cfg).eval()
        images = np.random.default_rng(0).random(
            (8, cfg.resolution, cfg.resolution, cfg.in_channels), np.float32
        )
        path.write_bytes(convert_int8(build_tf_graph(space, module, cfg), images))
    unpacked = flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))
    flatbuffer_utils.strip_strings(unpacked)
    names_only = len(flatbuffer_utils.convert_object_to_bytearray(unpacked))
    return compact_model(path.read_bytes()), names_only


def measured_arena(model: bytes, cache_dir: Path) -> int:
    """``measure_tflm_arena(model)``, kept in ``cache_dir`` by the file's hash."""
    path = cache_dir / "measured_arenas.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    digest = hashlib.sha256(model).hexdigest()
    if digest not in known:
        known[digest] = measure_tflm_arena(model)
        path.write_text(json.dumps(known, indent=0, sort_keys=True))
    return known[digest]


def family(cfg: Any) -> str:
    if cfg.space != "tiny-cnn":
        return cfg.space
    return "tiny-cnn patched" if cfg.patch_grid > 1 else "tiny-cnn whole-image"


def accuracy(pairs: list, cache_dir: Path, measure_every: int) -> list[dict[str, Any]]:
    supernets: dict = {}
    rows = []
    for index, (space, cfg) in enumerate(pairs):
        started = time.perf_counter()
        model, names_only_bytes = export(space, cfg, cache_dir, supernets)
        export_seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            "space": space.name,
            "family": family(cfg),
            "genome": space.encode(cfg),
            "in_channels": cfg.in_channels,
            "file_bytes": len(model),
            "names_only_bytes": names_only_bytes,
            "export_s": export_seconds,
        }
        for pointer in (8, 4):
            from_file = analyze_tflite(model, pointer_bytes=pointer)
            arena, flash = estimate_config_bytes(cfg, pointer)
            row[f"file_arena_{pointer}"] = from_file.arena_bytes
            row[f"config_arena_{pointer}"] = arena
            row["config_flash"] = flash
        # Configs alternate between the spaces: measure one pair (one of each) in N.
        if measure_every and (index // 2) % measure_every == 0:
            row["measured_arena"] = measured_arena(model, cache_dir)
        rows.append(row)
        print(
            f"[{index + 1}/{len(pairs)}] {row['family']:21s} {row['genome']:48s} arena "
            f"{row['config_arena_8']} vs {row['file_arena_8']}, flash {row['config_flash']} vs "
            f"{row['file_bytes']}",
            flush=True,
        )
    return rows


def _new_configs(space: Any, keep: Any, rng: random.Random, seen: set, count: int) -> list:
    """``count`` random configs of ``space`` that pass ``keep`` and are not in ``seen``."""
    batch: list = []
    while len(batch) < count:
        cfg = space.sample(rng)
        if keep(cfg) and cfg not in seen:
            seen.add(cfg)
            batch.append(cfg)
    return batch


def _rate(batch: list, seconds: float = 30.0) -> tuple[float, float, int, float]:
    """(configs per CPU second, configs per wall-clock second, configs run, seconds in Python's
    garbage collector) over ``batch``, or over what of it ran in ``seconds``. CPU time is what
    one core gives when the machine is shared (wall-clock time then also counts the time other
    processes had the core). The collector's full passes walk every cached object (~0.2 s
    with the caches of ~20k configs): a run too short to amortise them swings by ~2x with
    whether one falls inside it."""
    collecting = [0.0, 0.0]  # seconds in the collector, start of the current pass

    def timed(phase: str, _: dict) -> None:
        if phase == "start":
            collecting[1] = time.perf_counter()
        else:
            collecting[0] += time.perf_counter() - collecting[1]

    gc.callbacks.append(timed)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for done, cfg in enumerate(batch, start=1):
            with contextlib.suppress(ConfigError):  # a patch grid too fine for the network
                estimate_config_bytes(cfg)
            if done % 100 == 0 and time.perf_counter() - wall > seconds:
                break
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.callbacks.remove(timed)
    return done / cpu, done / wall, done, collecting[0]


def _late_whole_patch(cfg: Any) -> bool:
    """Whether a patch that reads the whole image comes after one that reads a slice of it
    (the converter ran such a patch partly out of turn before the exporter chained them)."""
    from edgekit.spaces.tiny_cnn import patch_plan

    whole = (0, cfg.resolution, 0, cfg.resolution)
    sliced = False
    for steps in patch_plan(cfg).patches:
        sliced = sliced or steps[0].in_region != whole
        if sliced and steps[0].in_region == whole:
            return True
    return False


# The families the speed part and the synthesis check report on: (space, which configs).
FAMILIES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tiny-cnn whole-image": ("tiny-cnn", lambda c: c.patch_grid == 1),
    "tiny-cnn patched": ("tiny-cnn", lambda c: c.patch_grid > 1),
    "tiny-cnn patched, 1 stage": ("tiny-cnn", lambda c: c.patch_grid > 1 and c.patch_stages == 1),
    "tiny-cnn patched, 2 stages": ("tiny-cnn", lambda c: c.patch_grid > 1 and c.patch_stages == 2),
    "2 stages, a whole-image patch after sliced ones": (
        "tiny-cnn", lambda c: c.patch_grid > 1 and c.patch_stages == 2 and _late_whole_patch(c),
    ),
    "tiny-cnn (space mix)": ("tiny-cnn", lambda c: True),
    "tiny-vit": ("tiny-vit", lambda c: True),
}


_COLD_CONFIGS = 2000  # the cold start: the first configs of a search


def speed(count: int, warmup: int, seed: int) -> list[dict[str, Any]]:
    """configs/s of ``estimate_config_bytes`` (32-bit build) per family, on one core: a cold
    start (the first 2,000 configs or fewer, every cache empty), steady state (``count`` new
    configs after ``warmup`` other new configs of the family have filled the piece caches, as
    in a search) and the same configs again (answered from the config cache). Each run stops
    after 30 s (warm-up: 90 s)."""
    from edgekit.estimate import _config_fast, from_config

    rng = random.Random(seed)
    results = []
    for name in (
        "tiny-cnn whole-image", "tiny-cnn patched", "tiny-cnn patched, 1 stage",
        "tiny-cnn patched, 2 stages", "tiny-cnn (space mix)", "tiny-vit",
    ):  # fmt: skip
        space_name, keep = FAMILIES[name]
        space = get_space(space_name)
        seen: set = set()
        from_config.clear_estimates()
        _config_fast.clear_caches()
        cold, *_ = _rate(_new_configs(space, keep, rng, seen, min(count, _COLD_CONFIGS)))
        _rate(_new_configs(space, keep, rng, seen, warmup), seconds=90.0)
        steady_batch = _new_configs(space, keep, rng, seen, count)
        steady, steady_wall, ran, collecting = _rate(steady_batch)
        repeated, *_ = _rate(steady_batch[:ran])
        results.append({
            "family": name, "cold": cold, "steady": steady, "steady_wall": steady_wall,
            "repeated": repeated, "steady_configs": ran,
            "steady_gc_share": collecting * steady / ran,  # of the run's CPU seconds
        })  # fmt: skip
    return results


def synthesis_check(count: int, seed: int) -> list[dict[str, Any]]:
    """Fast path vs full synthesis on ``count`` new random configs per family."""
    from edgekit.estimate import _config_fast
    from edgekit.estimate.from_config import _runtime_for, estimate_config

    rng = random.Random(seed)
    results = []
    for name in (
        "tiny-cnn whole-image", "tiny-cnn patched, 1 stage", "tiny-cnn patched, 2 stages",
        "2 stages, a whole-image patch after sliced ones", "tiny-vit",
    ):  # fmt: skip
        space_name, keep = FAMILIES[name]
        space = get_space(space_name, rng.choice([2, 10]), rng.choice([1, 3]))
        checked, mismatches, seen = 0, [], set()
        while checked < count:
            cfg = space.sample(rng)
            try:
                if cfg in seen or not keep(cfg):
                    continue
                pointer = rng.choice([4, 8])
                figures, flash = _config_fast.fast_figures(cfg, _runtime_for(pointer, 16))
            except ConfigError:  # a patch grid too fine for the network
                continue
            seen.add(cfg)
            full = estimate_config(cfg, pointer_bytes=pointer)
            if (figures.arena_bytes, figures.head_bytes, figures.tail_bytes, flash) != (
                full.arena_bytes, full.head_bytes, full.tail_bytes, full.flash_bytes
            ):  # fmt: skip
                mismatches.append(f"{space.encode(cfg)} ({8 * pointer}-bit)")
                print(f"  mismatch: {mismatches[-1]}", flush=True)
            checked += 1
        print(f"synthesis check, {name}: {len(mismatches)} mismatches of {checked}", flush=True)
        results.append({"family": name, "n": checked, "mismatches": mismatches})
    return results


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in ("all", "tiny-cnn whole-image", "tiny-cnn patched", "tiny-resnet", "tiny-vit"):
        group = [r for r in rows if name == "all" or r["family"] == name]
        if not group:
            continue
        entry: dict[str, Any] = {"models": name, "n": len(group)}
        for pointer in (8, 4):
            errors = [
                abs(r[f"config_arena_{pointer}"] - r[f"file_arena_{pointer}"]) for r in group
            ]
            entry[f"arena_{pointer}_exact_pct"] = 100 * sum(e == 0 for e in errors) / len(group)
            entry[f"arena_{pointer}_max_err"] = max(errors)
            entry[f"arena_{pointer}_mean_err"] = statistics.fmean(errors)
        flash = [r["config_flash"] - r["file_bytes"] for r in group]
        relative = [100 * abs(e) / r["file_bytes"] for e, r in zip(flash, group, strict=True)]
        entry["flash_exact_pct"] = 100 * sum(e == 0 for e in flash) / len(group)
        entry["flash_max_err"] = max(abs(e) for e in flash)
        entry["flash_mean_err"] = statistics.fmean(abs(e) for e in flash)
        entry["flash_max_rel_pct"] = max(relative)
        entry["flash_mean_rel_pct"] = statistics.fmean(relative)
        # Below the file is the unsafe side: a config passed as fitting whose export does not.
        entry["flash_under_n"] = sum(e < 0 for e in flash)
        entry["flash_under_max"] = -min(min(flash), 0)
        saved = [100 * (1 - r["file_bytes"] / r["names_only_bytes"]) for r in group]
        entry["shared_vectors_saved_pct"] = (min(saved), statistics.fmean(saved), max(saved))
        measured = [r for r in group if "measured_arena" in r]
        if measured:
            errors = [abs(r["file_arena_8"] - r["measured_arena"]) for r in measured]
            entry["measured_n"] = len(measured)
            entry["file_vs_measured_exact_pct"] = 100 * sum(e == 0 for e in errors) / len(measured)
            entry["file_vs_measured_max_err"] = max(errors)
        out.append(entry)
    return out


def print_tables(
    summary: list[dict[str, Any]], speeds: list[dict[str, Any]], checks: list[dict[str, Any]]
) -> None:
    if summary:
        _print_accuracy(summary)
    if checks:
        print("\n### Fast path vs full synthesis (arena, head, tail, flash)\n")
        print("| family | configs | mismatches |")
        print("|---|---:|---|")
        for c in checks:
            shown = ", ".join(f"`{m}`" for m in c["mismatches"][:3]) or "0"
            more = f" and {len(c['mismatches']) - 3} more" if len(c["mismatches"]) > 3 else ""
            print(f"| {c['family']} | {c['n']} | {shown}{more} |")
    if speeds:
        _print_speeds(speeds)


def _print_accuracy(summary: list[dict[str, Any]]) -> None:
    print("\n### Config-based vs file-based arena and flash\n")
    print("| models | n | arena exact (64-bit) | max / mean err B | arena exact (32-bit) | "
          "max / mean err B | flash exact | flash max / mean err B | flash max / mean rel % | "
          "flash below the file: models (max B) | file vs measured (TFLM) | "
          "shared vectors save: min / mean / max % |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        measured = (
            f"{s['file_vs_measured_exact_pct']:.0f}% exact of {s['measured_n']} "
            f"(max {s['file_vs_measured_max_err']} B)"
            if "measured_n" in s
            else "-"
        )
        saved = " / ".join(f"{pct:.1f}" for pct in s["shared_vectors_saved_pct"])
        print(
            f"| {s['models']} | {s['n']} | {s['arena_8_exact_pct']:.1f}% | "
            f"{s['arena_8_max_err']} / {s['arena_8_mean_err']:.1f} | "
            f"{s['arena_4_exact_pct']:.1f}% | {s['arena_4_max_err']} / "
            f"{s['arena_4_mean_err']:.1f} | {s['flash_exact_pct']:.1f}% | {s['flash_max_err']} / "
            f"{s['flash_mean_err']:.0f} | {s['flash_max_rel_pct']:.2f} / "
            f"{s['flash_mean_rel_pct']:.2f} | {s['flash_under_n']} ({s['flash_under_max']}) | "
            f"{measured} | {saved} |"
        )


def median_speeds(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per family, the median of each rate over repeated :func:`speed` runs, and every
    run's steady-state rate (``steady_runs``): one run on a shared or virtual machine can be
    off by a large factor."""
    out = []
    for family_runs in zip(*runs, strict=True):
        entry: dict[str, Any] = {"family": family_runs[0]["family"]}
        for key in ("cold", "steady", "steady_wall", "repeated", "steady_gc_share"):
            entry[key] = statistics.median(run[key] for run in family_runs)
        entry["steady_runs"] = [run["steady"] for run in family_runs]
        entry["steady_configs"] = family_runs[0]["steady_configs"]
        out.append(entry)
    return out


def _print_speeds(speeds: list[dict[str, Any]]) -> None:
    runs = len(speeds[0]["steady_runs"])
    print("\n### estimate_config_bytes throughput (configs per CPU second, one core, 32-bit "
          f"build{f'; medians of {runs} runs' if runs > 1 else ''})\n")  # fmt: skip
    each = " | steady state, each run" if runs > 1 else ""
    print("| family | cold caches | steady state (new configs, warm piece caches) | "
          "(same, per wall-clock second) | of its CPU time in the garbage collector | "
          f"repeated configs{each} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if runs > 1 else ""))
    for s in speeds:
        every = " / ".join(f"{rate:.0f}" for rate in s["steady_runs"])
        print(f"| {s['family']} | {s['cold']:.0f} | {s['steady']:.0f} ({s['steady_configs']} "
              f"configs) | {s['steady_wall']:.0f} | {100 * s['steady_gc_share']:.0f}% | "
              f"{s['repeated']:.0f} |" + (f" {every} |" if runs > 1 else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="random configs to export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", nargs="+", default=["tiny-cnn", "tiny-vit"],
                        help="spaces the configs alternate between (default: %(default)s)")
    parser.add_argument(
        "--measure-every", type=int, default=1,
        help="measure with the TFLM interpreter one pair of models in N (1: all, 0: never)",
    )  # fmt: skip
    parser.add_argument(
        "--synthesis-check", type=int, default=0, metavar="N",
        help="also check the fast path against the full synthesis on N configs per family",
    )  # fmt: skip
    parser.add_argument(
        "--speed-warmup", type=int, default=10_000,
        help="new configs run before the steady-state speed run (fills the piece caches)",
    )  # fmt: skip
    parser.add_argument(
        "--speed-configs", type=int, default=20_000,
        help="configs per speed run (0: skip the speed part); long enough to carry its share "
        "of the garbage collector's full passes",
    )  # fmt: skip
    parser.add_argument(
        "--speed-repeats", type=int, default=1, metavar="R",
        help="run the speed part R times (same configs) and report medians and every run",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path,
        # Renamed whenever the exporter's output changes (last: patches run one after
        # another, each waiting on the previous one's output), so that no run reuses models
        # exported the old way.
        default=Path(tempfile.gettempdir()) / "edgekit_memory_config_models_4",
        help="where exported models are kept between runs",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write rows and summaries here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    torch.set_num_threads(1)
    from edgekit.estimate import _config_fast

    # What a search runs: tiny-cnn chains planned by the compiled flat planner, here from the
    # first config on (the tests check the chain planner on the same kinds of configs).
    _config_fast._FLAT_AFTER = -1
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pairs = sample_configs(args.count, args.seed, tuple(args.spaces))
    rows = accuracy(pairs, args.cache_dir, args.measure_every)
    accuracy_seconds = time.perf_counter() - started
    checks = synthesis_check(args.synthesis_check, args.seed + 2) if args.synthesis_check else []
    speeds = median_speeds([
        speed(args.speed_configs, args.speed_warmup, args.seed + 1)
        for _ in range(args.speed_repeats)
    ]) if args.speed_configs else []  # fmt: skip
    summary = summarize(rows)
    print_tables(summary, speeds, checks)
    total = time.perf_counter() - started
    print(f"\naccuracy part {accuracy_seconds:.0f} s (exports cached in {args.cache_dir}), "
          f"total {total:.0f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(
            {"summary": summary, "speed": speeds, "synthesis_check": checks, "rows": rows,
             "seconds": total}, indent=2,
            default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o),
        ))  # fmt: skip


if __name__ == "__main__":
    main()
