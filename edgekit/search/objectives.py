"""The search's one adapter to the rest of edgekit: footprint, accuracy, supernet, export.

Everything the search needs from the memory model, the latency model, the trainer and the
exporter goes through the functions here, so that wiring a different implementation is a change
in one place:

- :func:`memory_footprint` -> (arena, flash) bytes of a config on a board:
  :func:`edgekit.estimate.from_config.estimate_config_bytes`, exact for TFLite Micro.
- :func:`latency_ms` -> :func:`edgekit.estimate.latency.estimate_latency_ms`.
- :func:`evaluate_accuracy`, :func:`prepare_supernet`, :func:`finetune_subnet` -> training.
- :func:`export_subnet` -> :func:`edgekit.export.export_model`.

Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekit.data.splits import Split, Splits
    from edgekit.profiles import DeviceProfile
    from edgekit.search.budget import Budget
    from edgekit.spaces import ArchConfig, SearchSpace
    from edgekit.training.sampling import SubnetSampler

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Footprint:
    """What a config costs on a board, before any training: the search's constraint values."""

    arena_bytes: int
    flash_bytes: int
    latency_ms: float


def footprint(space: SearchSpace, cfg: ArchConfig, board: DeviceProfile) -> Footprint:
    """Tensor arena, flash and latency of ``cfg`` on ``board`` (cheap: no torch, no export)."""
    arena, flash = memory_footprint(space, cfg, board)
    return Footprint(arena, flash, latency_ms(space, cfg, board))


def memory_footprint(space: SearchSpace, cfg: ArchConfig, board: DeviceProfile) -> tuple[int, int]:
    """(tensor arena bytes, flash bytes) of ``cfg`` on ``board`` per the config-based memory
    model, for the board's pointer width and alignment (exact for TFLite Micro's reference
    kernels; see ``edgekit.estimate.from_config``)."""
    from edgekit.estimate.from_config import estimate_config_bytes

    return estimate_config_bytes(cfg, device=board)


def fits_budget(space: SearchSpace, cfg: ArchConfig, board: DeviceProfile, budget: Budget) -> bool:
    """Whether ``cfg`` fits ``budget`` on ``board``; a config the memory model cannot build
    (e.g. a patch grid finer than the network's feature maps) does not."""
    try:
        return budget.fits(footprint(space, cfg, board))
    except ConfigError:
        return False


def latency_ms(space: SearchSpace, cfg: ArchConfig, board: DeviceProfile) -> float:
    from edgekit.estimate.latency import estimate_latency_ms

    return estimate_latency_ms(space, cfg, board)


# --- accuracy --------------------------------------------------------------------------------
def same_function(space: SearchSpace, cfg: ArchConfig) -> ArchConfig:
    """The config computing the same function as ``cfg`` that is cheapest to evaluate in
    PyTorch (``space.whole_image``): patch-based execution (MCUNetV2) changes how a network
    runs, not its outputs (tested equal), so accuracy is measured whole-image, several times
    faster."""
    whole = space.whole_image(cfg)
    if whole is not cfg:
        space.validate(whole)
    return whole


def evaluate_accuracy(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    split: Split,
    *,
    recalibrate_with: Split | None,
    batches: int,
    max_samples: int | None,
    seed: int,
) -> float:
    """Top-1 accuracy of subnet ``cfg`` inherited from ``supernet`` after BatchNorm
    recalibration on ``recalibrate_with`` (None: with the statistics it holds); the supernet
    is left unchanged."""
    from edgekit.training import evaluate

    return evaluate(
        space,
        supernet,
        same_function(space, cfg),
        split,
        recalibrate_with=recalibrate_with,
        batches=batches,
        max_samples=max_samples,
        seed=seed,
    )


# --- supernet --------------------------------------------------------------------------------
SUPERNET_SUBNETS = ("fitting", "fitting-only", "space")


def subnet_sampler(
    space: SearchSpace, board: DeviceProfile, budget: Budget, subnets: str, *, seed: int
) -> SubnetSampler:
    """The subnets a supernet trained for this search trains: ``"fitting"``, the space's
    largest as the teacher and otherwise only subnets that fit ``budget`` on ``board``
    (MCUNet's feasible space); ``"fitting-only"``, the teacher too is the largest that fits
    (several times faster on small budgets, and worse: docs/BENCHMARKS.md); ``"space"``, every
    subnet (BigNAS)."""
    from edgekit.training.sampling import FittingSampler, SpaceSampler

    if subnets == "space":
        return SpaceSampler(space)
    if subnets not in SUPERNET_SUBNETS:
        raise ConfigError(f"subnets={subnets!r}: expected one of {SUPERNET_SUBNETS}")

    constraint = {"board": board.name, **budget.to_dict()}
    teacher = space.largest() if subnets == "fitting" else None
    return FittingSampler(
        space, lambda cfg: fits_budget(space, cfg, board, budget), constraint, seed=seed,
        teacher=teacher,
    )  # fmt: skip


def prepare_supernet(
    space: SearchSpace,
    splits: Splits,
    source: str | os.PathLike[str] | nn.Module | None,
    checkpoint_path: Path,
    *,
    epochs: int | None,
    seed: int,
    progress: ProgressCallback | None = None,
    num_threads: int | None = None,
    sampler: Callable[[], SubnetSampler] | None = None,
    device: str = "cpu",
) -> tuple[nn.Module, str]:
    """The trained supernet to search: ``source`` itself (a module), a checkpoint to reuse
    (a path), or, for ``None``, one trained (or resumed) at ``checkpoint_path`` with the space's
    recipe, on the subnets ``sampler()`` returns (default: the whole space), on ``device``.
    Returns ``(supernet, where)``, the supernet on the CPU; ``where`` is the checkpoint path
    or "in-memory"."""
    from edgekit.training import load_supernet, recipe, train_supernet

    if source is not None and not isinstance(source, str | os.PathLike):
        source.eval()
        return source, "in-memory"
    if source is not None:
        loaded_space, supernet, meta = load_supernet(source)
        for key, mine in (("space", space.name), ("num_classes", space.num_classes),
                          ("in_channels", space.in_channels)):  # fmt: skip
            theirs = getattr(loaded_space, "name" if key == "space" else key)
            if theirs != mine:
                raise CheckpointError(
                    f"supernet checkpoint {str(source)!r} has {key}={theirs!r}, this search "
                    f"needs {mine!r}"
                )
        if meta.get("data", {}).get("name") not in (None, splits.name):
            logger.warning(
                "supernet %s was trained on %r, searching on %r",
                source, meta["data"]["name"], splits.name,
            )  # fmt: skip
        return supernet, str(source)
    settings = recipe(space.name)
    if epochs is not None:
        settings["epochs"] = epochs
    result = train_supernet(
        space,
        splits,
        checkpoint_path=checkpoint_path,
        resume=True,
        seed=seed,
        progress=progress,
        num_threads=num_threads,
        sampler=None if sampler is None else sampler(),
        device=device,
        **settings,
    )
    return result.supernet.cpu(), str(checkpoint_path)


def supernet_teacher(space: SearchSpace, where: str) -> ArchConfig:
    """The subnet the supernet at ``where`` (a checkpoint path, or "in-memory") was trained with
    as its teacher: the space's largest unless its checkpoint names another."""
    if where == "in-memory":
        return space.largest()
    from edgekit.training import read_checkpoint

    genome = read_checkpoint(where).get("subnets", {}).get("largest")
    return space.largest() if genome is None else space.decode(genome)


# --- fine-tuning -----------------------------------------------------------------------------
def finetune_subnet(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    splits: Splits,
    *,
    epochs: int,
    seed: int,
    lr: float = 5e-4,
    batch_size: int = 64,
    distill_weight: float = 0.7,
    teacher: ArchConfig | None = None,
    progress: ProgressCallback | None = None,
) -> nn.Module:
    """A copy of ``supernet`` whose subnet ``cfg`` was fine-tuned for ``epochs`` on the training
    split, distilling from the original supernet's ``teacher`` subnet (default: the largest;
    soft targets computed once) mixed with the hard labels; AdamW with a cosine schedule. The
    original is left unchanged."""
    import torch
    import torch.nn.functional as F

    from edgekit.training import prepare_input, to_nchw

    images = to_nchw(splits.train.x)
    labels = torch.from_numpy(splits.train.y)
    teacher_cfg = space.largest() if teacher is None else teacher
    supernet.eval()
    supernet.set_active(teacher_cfg)
    with torch.no_grad():
        teacher = torch.cat([
            supernet(prepare_input(space, images[i : i + 256], teacher_cfg)).softmax(dim=1)
            for i in range(0, len(images), 256)
        ])  # fmt: skip
    student = copy.deepcopy(supernet)
    cfg = same_function(space, cfg)  # same weights and outputs, faster to train
    student.set_active(cfg)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(images) // batch_size)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        student.train()
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            index = order[start : start + batch_size]
            logits = student(prepare_input(space, images[index], cfg))
            soft = -(teacher[index] * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss = distill_weight * soft + (1 - distill_weight) * F.cross_entropy(
                logits, labels[index]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if progress is not None:
                progress(step, total, f"fine-tune epoch {epoch + 1}/{epochs}")
    student.eval()
    return student


def save_module_state(module: nn.Module, path: Path) -> None:
    """Atomically write ``module``'s state dict to ``path``."""
    from edgekit.training import save_checkpoint

    save_checkpoint({"state": module.state_dict()}, path)


def load_module_state(space: SearchSpace, path: Path) -> nn.Module:
    """A fresh supernet of ``space`` holding the state saved by :func:`save_module_state`."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        supernet = space.build_supernet()
        supernet.load_state_dict(payload["state"])
    except (OSError, RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot load fine-tuned weights {str(path)!r}: {e}") from e
    return supernet.eval()


# --- export ----------------------------------------------------------------------------------
def export_subnet(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    splits: Splits,
    out_dir: Path,
    *,
    board: DeviceProfile,
    seed: int,
    qat: str = "auto",
    checkpoint_path: str | None = None,
    progress: ProgressCallback | None = None,
    recalibrate: bool = True,
) -> dict[str, Any]:
    """Export ``cfg`` as a verified int8 TFLite Micro bundle in ``out_dir``; returns the
    figures the search report needs (JSON-ready). ``recalibrate=False`` keeps the BatchNorm
    statistics ``supernet`` holds (a network trained on its own)."""
    from edgekit.export import export_model

    result = export_model(
        space,
        supernet,
        cfg,
        splits,
        out_dir,
        board=board,
        checkpoint_path=checkpoint_path,
        qat=qat,
        recalibrate=recalibrate,
        seed=seed,
        progress=progress,
    )
    arena = result.manifest.get("arena", {})
    fit = (result.manifest.get("board") or {}).get("fits")
    return {
        "bundle": str(result.out_dir),
        "model": str(result.model_path),
        "files": {key: str(path) for key, path in result.files.items()},
        "fp32_test_accuracy": result.fp32_accuracy,
        "int8_test_accuracy": result.int8_accuracy,
        "quantization": result.quantization,
        "arena_measured_host_bytes": result.arena_measured_bytes,
        "arena_firmware_bytes": arena.get("estimated_firmware_bytes"),
        "flash_bytes": result.flash_bytes,
        "fits_board": fit,
        "export_seconds": result.timings.get("total"),
    }


__all__ = [
    "Footprint",
    "evaluate_accuracy",
    "export_subnet",
    "finetune_subnet",
    "footprint",
    "latency_ms",
    "load_module_state",
    "memory_footprint",
    "prepare_supernet",
    "same_function",
    "save_module_state",
]
