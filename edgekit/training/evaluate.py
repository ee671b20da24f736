"""Accuracy of one subnet of a supernet, and BatchNorm recalibration for a chosen subnet.

A weight-shared supernet's BatchNorm running statistics cannot be right for every subnet at
once (the trainer keeps them for the largest subnet). ``recalibrate_bn`` recomputes them for the
active subnet, in place; ``evaluate(..., recalibrate_with=split)`` does so on a snapshot that it
restores afterwards, so evaluating one subnet never changes the supernet (nor what a later
checkpoint saves). Use ``preserved_buffers`` to do the same around your own code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from edgekit.data.splits import Split
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)


def prepare_input(space: SearchSpace, x: torch.Tensor, cfg: ArchConfig) -> torch.Tensor:
    """Resize an NCHW batch in [0, 1] to ``cfg``'s input resolution (bilinear, as training),
    in channels-last memory layout."""
    own = getattr(space, "prepare_input", None)
    if callable(own):
        x = own(x, cfg)
    else:
        height, width, _ = space.input_shape(cfg)
        if tuple(x.shape[-2:]) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    # oneDNN's depthwise convolutions (forward and backward) run ~3x faster channels-last.
    return x.contiguous(memory_format=torch.channels_last)


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """A float32 NHWC numpy batch as a contiguous NCHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _device_of(module: nn.Module) -> torch.device:
    """Where ``module``'s parameters live: batches follow the network (CPU or a GPU)."""
    return next(module.parameters(), torch.empty(0)).device


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    """Every BatchNorm-like layer (anything with running stats it can reset)."""
    return [
        m
        for m in module.modules()
        if hasattr(m, "running_mean")
        and hasattr(m, "reset_running_stats")
        and hasattr(m, "momentum")
    ]


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running stats included), the BatchNorm momenta, the
    train/eval mode and the active config of ``module`` on exit."""
    saved = {name: buffer.clone() for name, buffer in module.named_buffers()}
    momenta = [(layer, layer.momentum) for layer in batchnorm_layers(module)]
    modes = [(m, m.training) for m in module.modules()]
    active = getattr(module, "active", None)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])
        for layer, momentum in momenta:
            layer.momentum = momentum
        for m, training in modes:
            m.training = training
        if active is not None:
            module.set_active(active)


def _sample_order(count: int, seed: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


def recalibrate_bn(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    split: Split,
    batches: int = 20,
    batch_size: int = 64,
    seed: int = 0,
) -> None:
    """Recompute the BatchNorm running statistics of subnet ``cfg``, in place.

    Resets every BatchNorm layer's running stats, runs ``batches`` batches of ``split`` (a
    seeded random subset, no augmentation) through the subnet in train mode without gradients
    with ``momentum=None`` (a cumulative average over the batches, as in BigNAS / OFA), then
    leaves the supernet in eval mode with ``cfg`` active.

    This overwrites the statistics other subnets (and the saved checkpoint) inherited; wrap the
    call in ``preserved_buffers(supernet)`` or use ``evaluate(..., recalibrate_with=split)`` to
    keep them.
    """
    layers = batchnorm_layers(supernet)
    supernet.set_active(cfg)
    if not layers:
        supernet.eval()
        return
    order = _sample_order(len(split), seed)[: batches * batch_size]
    images = split.x
    device = _device_of(supernet)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    supernet.train()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size].numpy()
                if len(index) < 2:  # BatchNorm cannot take train-mode statistics of one image
                    continue
                supernet(prepare_input(space, to_nchw(images[index]).to(device), cfg))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        supernet.eval()


def evaluate(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    split: Split,
    *,
    recalibrate_with: Split | None = None,
    batches: int = 20,
    batch_size: int = 256,
    recalibrate_batch_size: int = 64,
    max_samples: int | None = None,
    seed: int = 0,
) -> float:
    """Top-1 accuracy of subnet ``cfg`` on ``split`` (or its first ``max_samples`` images).

    With ``recalibrate_with``, the BatchNorm statistics are first recalibrated on ``batches``
    batches of that split (see ``recalibrate_bn``); the supernet's own buffers, mode and active
    config are restored afterwards either way.
    """
    count = len(split) if max_samples is None else min(len(split), max_samples)
    if count == 0:
        return float("nan")
    with preserved_buffers(supernet):
        if recalibrate_with is not None:
            recalibrate_bn(
                space,
                supernet,
                cfg,
                recalibrate_with,
                batches=batches,
                batch_size=recalibrate_batch_size,
                seed=seed,
            )
        supernet.set_active(cfg)
        supernet.eval()
        correct = 0
        device = _device_of(supernet)
        with torch.no_grad():
            for start in range(0, count, batch_size):
                stop = min(start + batch_size, count)
                x = prepare_input(space, to_nchw(split.x[start:stop]).to(device), cfg)
                predicted = supernet(x).argmax(dim=1).cpu()
                correct += int((predicted == torch.from_numpy(split.y[start:stop])).sum())
    return correct / count
