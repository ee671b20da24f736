"""One network trained on its own, from fresh weights: a searched architecture's final
training (``edgekit search --scratch-epochs``) and the benchmarks' baselines.

Weight sharing costs accuracy: on CIFAR-10 a chosen tiny-resnet subnet fine-tuned for 2 epochs
from a 29-epoch supernet scored ~3 points below the same architecture trained 31 epochs on its
own (docs/BENCHMARKS.md). The recipe is the supernet's (``TrainSettings``: optimizer, warm-up
and cosine schedule, label smoothing, gradient clipping, flips and shifts), without the
sandwich rule and distillation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.training.evaluate import prepare_input, to_nchw
from edgekit.training.supernet import (
    ProgressCallback,
    TrainSettings,
    check_data,
    lr_factor,
    make_optimizer,
    training_device,
)

if TYPE_CHECKING:
    from edgekit.data.splits import Splits
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)


def torch_default_init(module: nn.Module) -> nn.Module:
    """``module`` with every conv, linear and BatchNorm layer reset to PyTorch's default
    initialisation. The supernets initialise their own way (Kaiming normal fan-out, a 0.01
    classifier), which suits weight sharing but cost a standalone ResNet-8 ~5 points of
    CIFAR-10 accuracy at 8 epochs (docs/BENCHMARKS.md)."""
    for unit in module.modules():
        if isinstance(unit, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            unit.reset_parameters()
    return module


def train_network(
    network: nn.Module,
    splits: Splits,
    settings: TrainSettings,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    label: str = "network",
) -> nn.Module:
    """Train ``network`` (already on ``device``) on ``splits.train`` with ``settings``' recipe
    for ``settings.epochs``; ``transform`` maps a batch of NCHW images to the network's input
    (a subnet's resolution, say). Returns it in eval mode.

    The batch order and augmentation draws come from a CPU generator seeded with
    ``settings.seed``, so a GPU run sees the same batches as a CPU run. The whole batch shares
    one random shift; each image flips on its own."""
    s, device = settings, training_device(device)
    torch.manual_seed(s.seed)
    images = to_nchw(splits.train.x).to(device)
    labels = torch.from_numpy(splits.train.y).to(device)
    optimizer = make_optimizer(network, s)
    steps = len(images) // s.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, s, steps)
    )
    generator = torch.Generator().manual_seed(s.seed)
    batch, shift = s.batch_size, s.shift
    for epoch in range(s.epochs):
        network.train()
        # An epoch's draws up front, in the order a step-by-step loop would make them: the
        # batches stay the same, and a GPU run copies them once instead of syncing every step.
        order = torch.randperm(len(images), generator=generator)
        flips, shifts = [], []
        for _ in range(steps):
            if s.hflip:
                flips.append(torch.rand(batch, generator=generator) < 0.5)
            if shift:
                shifts.append(torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist())
        order = order.to(device)
        flipped = torch.stack(flips).to(device) if flips else None
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            x = images[index]
            if flipped is not None:
                x = torch.where(flipped[step][:, None, None, None], x.flip(3), x)
            if shift:
                padded = F.pad(x, (shift, shift, shift, shift))
                dy, dx = shifts[step]
                x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
            logits = network(x if transform is None else transform(x))
            loss = F.cross_entropy(logits, labels[index], label_smoothing=s.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip:
                nn.utils.clip_grad_norm_(network.parameters(), s.grad_clip)
            optimizer.step()
            scheduler.step()
            if progress is not None:
                progress(epoch * steps + step + 1, s.epochs * steps,
                         f"training alone, epoch {epoch + 1}/{s.epochs}")  # fmt: skip
        logger.info("%s epoch %d/%d: loss %.3f", label, epoch + 1, s.epochs, float(loss.detach()))
    return network.eval()


def train_subnet(
    space: SearchSpace,
    cfg: ArchConfig,
    splits: Splits,
    settings: TrainSettings,
    *,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
) -> nn.Module:
    """``cfg`` trained on its own from PyTorch's default initialisation (seeded with
    ``settings.seed``) with :func:`train_network`. Returns a supernet of ``space`` on the CPU
    with ``cfg`` active, whose ``cfg`` weights (and BatchNorm statistics) are the trained
    network's: what the exporter takes."""
    check_data(space, splits)
    device = training_device(device)
    torch.manual_seed(settings.seed)
    supernet = torch_default_init(space.build_supernet()).to(device)
    # Patch-based execution computes the same function; whole-image trains faster.
    whole = space.whole_image(cfg)
    supernet.set_active(whole)
    train_network(
        supernet, splits, settings, transform=lambda x: prepare_input(space, x, whole),
        device=device, progress=progress, label=space.encode(cfg),
    )  # fmt: skip
    supernet.set_active(cfg)
    return supernet.cpu().eval()


__all__ = ["torch_default_init", "train_network", "train_subnet"]
