"""The search's one adapter to the rest of edgekit: footprint, accuracy, supernet, export.

Everything the search needs from the memory model, the latency model, the trainer and the
exporter goes through the functions here, so that wiring a different implementation is a change
in one place:

- :func:`memory_footprint` -> (arena, flash) bytes of a config on a board. It currently calls
  :func:`provisional_memory`, a rough analytic stand-in (tensor liveness over the layer plan
  plus fixed overheads). PROVISIONAL: replace its body with the config-based memory model
  (``estimate_config(cfg, board)``) once that exists; nothing else in the search changes.
- :func:`latency_ms` -> :func:`edgekit.estimate.latency.estimate_latency_ms`.
- :func:`evaluate_accuracy`, :func:`prepare_supernet`, :func:`finetune_subnet` -> training.
- :func:`export_subnet` -> :func:`edgekit.export.export_model`.

Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import CheckpointError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekit.data.splits import Split, Splits
    from edgekit.profiles import DeviceProfile
    from edgekit.spaces import ArchConfig, SearchSpace

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
    """(tensor arena bytes, flash bytes) of ``cfg`` on ``board`` per the memory model."""
    return provisional_memory(space, cfg, board)


def latency_ms(space: SearchSpace, cfg: ArchConfig, board: DeviceProfile) -> float:
    from edgekit.estimate.latency import estimate_latency_ms

    return estimate_latency_ms(space, cfg, board)


# --- provisional memory model ---------------------------------------------------------------
# PROVISIONAL: a stand-in until the config-based memory model exists. Activations are int8
# tensors (one byte per element) planned by liveness (what is alive at each operator); the
# runtime's persistent structures and the flatbuffer's overhead are rough per-op / per-tensor
# constants. It is not exact and must not be reported as the final memory model.
_ALIGN = 16


def _aligned(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


def _elements(shape: Iterable[int]) -> int:
    return math.prod(shape)


def provisional_memory(
    space: SearchSpace, cfg: ArchConfig, board: DeviceProfile
) -> tuple[int, int]:
    """PROVISIONAL (arena bytes, flash bytes) of ``cfg``: int8 activation peak by tensor
    liveness over the layer plan, plus rough constants for the runtime's structures and the
    flatbuffer. To be replaced by the config-based memory model."""
    plan = list(space.layer_plan(cfg))  # type: ignore[attr-defined]
    if plan and hasattr(plan[0], "in_shape"):
        peak, ops, tensors, channels, weights = _cnn_memory(space, cfg, plan)
    else:
        peak, ops, tensors, channels, weights = _vit_memory(plan)
    scale = board.pointer_bytes / 4
    persistent = 2048 + round(ops * 96 * scale) + round(tensors * 48 * scale) + 8 * channels
    flash = 2048 + weights + 16 * channels + 200 * ops + 80 * tensors
    return _aligned(peak) + _aligned(persistent), flash


def _cnn_memory(
    space: SearchSpace, cfg: ArchConfig, layers: list[Any]
) -> tuple[int, int, int, int, int]:
    """(activation peak, ops, tensors, weighted output channels, weight bytes) of a tiny-cnn."""
    names = [layer.name for layer in layers]
    # The tensor a residual layer adds back is the input of its ``residual_from`` layer.
    held_until = {names.index(layer.residual_from): i for i, layer in enumerate(layers)
                  if layer.residual_from}  # fmt: skip
    sizes = [_elements(layers[0].in_shape)] + [_elements(layer.out_shape) for layer in layers]
    plan = space.patch_plan(cfg) if hasattr(space, "patch_plan") else None
    start, peak = 0, 0
    if plan is not None:
        start = plan.num_layers
        image = _aligned(sizes[0])
        done = 0
        for steps in plan.patches:
            for i, step in enumerate(steps):
                layer = layers[i]
                live = image + done
                live += _aligned(_area(step.in_region) * layer.in_shape[2])
                live += _aligned(_area(step.out_region) * layer.out_shape[2])
                if layer.rank:
                    live += _aligned(_area(step.out_region) * layer.rank)
                peak = max(peak, live)
            done += _aligned(_area(steps[-1].out_region) * layers[start - 1].out_shape[2])
        peak = max(peak, 2 * _aligned(sizes[start]))  # patch outputs + their concatenation
    for i in range(start, len(layers)):
        layer = layers[i]
        held = sum(_aligned(sizes[j]) for j, end in held_until.items() if j < i <= end)
        live = held + _aligned(sizes[i]) + _aligned(sizes[i + 1])
        if layer.rank:
            live += _aligned(layer.out_shape[0] * layer.out_shape[1] * layer.rank)
        peak = max(peak, live)
    ops = sum(2 if layer.rank else 1 for layer in layers) + len(held_until)
    channels, weights = 0, 0
    for layer in layers:
        c_out = layer.out_shape[2]
        if layer.op in ("conv2d", "depthwise_conv2d"):
            # BatchNorm folds into an int32 bias per output channel.
            weights += layer.params - 2 * c_out + 4 * c_out
            channels += c_out + layer.rank
        elif layer.op == "fully_connected":
            weights += layer.params + 3 * c_out
            channels += c_out
    if plan is not None:
        ops += (len(plan.patches) - 1) * 3 * plan.num_layers + plan.grid + 1
    return peak, ops, ops + 1, channels, weights


def _area(region: tuple[int, int, int, int]) -> int:
    return (region[1] - region[0]) * (region[3] - region[2])


def _vit_memory(ops: list[Any]) -> tuple[int, int, int, int, int]:
    """(activation peak, ops, tensors, weighted output channels, weight bytes) of a tiny-vit."""
    index = {op.name: i for i, op in enumerate(ops)}
    last_use = {op.name: i for i, op in enumerate(ops)}
    for i, op in enumerate(ops):
        for source in op.inputs:
            last_use[source] = max(last_use.get(source, i), i)
    sizes = {op.name: _aligned(_elements(op.out_shape)) for op in ops}
    embed = ops[0]  # the patch embedding reads the image: kernel p, stride p
    kernel, width = embed.attrs["kernel"], embed.out_shape[-1]
    channels_in = (embed.params - width) // (kernel * kernel * width)
    image = _aligned((embed.out_shape[0] * kernel) ** 2 * channels_in)
    peak = 0
    for i, op in enumerate(ops):
        live = sum(size for name, size in sizes.items() if index[name] <= i <= last_use[name])
        if i == 0:
            live += image
        if op.op == "layer_norm":  # the decomposed chain keeps two more tensors of its size
            live += 2 * sizes[op.name]
        peak = max(peak, live)
    channels = sum(op.out_shape[-1] for op in ops if op.op in ("conv2d", "fully_connected"))
    weights = sum(op.params for op in ops) + 3 * channels
    decomposed = sum(8 for op in ops if op.op == "layer_norm")
    return peak, len(ops) + decomposed, len(ops) + decomposed + 1, channels, weights


# --- accuracy --------------------------------------------------------------------------------
def same_function(space: SearchSpace, cfg: ArchConfig) -> ArchConfig:
    """The config computing the same function as ``cfg`` that is cheapest to evaluate in
    PyTorch: tiny-cnn's patch-based execution (MCUNetV2) changes how a network runs, not its
    outputs (tested equal), so accuracy is measured whole-image, several times faster."""
    if getattr(cfg, "patch_grid", 1) == 1:
        return cfg
    whole = dataclasses.replace(
        cfg, patch_grid=1, patch_stages=space.choices()["patch_stages"][0]
    )
    space.validate(whole)
    return whole


def evaluate_accuracy(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    split: Split,
    *,
    recalibrate_with: Split,
    batches: int,
    max_samples: int | None,
    seed: int,
) -> float:
    """Top-1 accuracy of subnet ``cfg`` inherited from ``supernet`` after BatchNorm
    recalibration on ``recalibrate_with`` (the supernet is left unchanged)."""
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
) -> tuple[nn.Module, str]:
    """The trained supernet to search: ``source`` itself (a module), a checkpoint to reuse
    (a path), or, for ``None``, one trained (or resumed) at ``checkpoint_path`` with the space's
    recipe. Returns ``(supernet, where)``; ``where`` is the checkpoint path or "in-memory"."""
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
        **settings,
    )
    return result.supernet, str(checkpoint_path)


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
    progress: ProgressCallback | None = None,
) -> nn.Module:
    """A copy of ``supernet`` whose subnet ``cfg`` was fine-tuned for ``epochs`` on the training
    split, distilling from the original supernet's largest subnet (soft targets computed once)
    mixed with the hard labels; AdamW with a cosine schedule. The original is left unchanged."""
    import torch
    import torch.nn.functional as F

    from edgekit.training import prepare_input, to_nchw

    images = to_nchw(splits.train.x)
    labels = torch.from_numpy(splits.train.y)
    teacher_cfg = space.largest()
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
) -> dict[str, Any]:
    """Export ``cfg`` as a verified int8 TFLite Micro bundle in ``out_dir``; returns the
    figures the search report needs (JSON-ready)."""
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
    "provisional_memory",
    "same_function",
    "save_module_state",
]
