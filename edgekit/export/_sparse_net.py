"""PyTorch side of the XNNPACK sparse export: the re-laid-out network and block pruning.

:class:`XnnpackCnn` is a tiny-cnn subnet rewritten the way XNNPACK's sparse (NCHW) path needs
it: every conv padded symmetrically by
``kernel // 2`` (XNNPACK's NCHW depthwise kernels take only that, not TensorFlow's asymmetric
"SAME"), and a stem with 3 input channels (a grey stem is repeated over 3 channels and divided by
3, so a grey image repeated 3 times gives the same output). Only the padding changes what the
network computes; the pruning fine-tune keeps BatchNorm (training statistics) so the network
adapts to it, and BatchNorm is folded into the convs afterwards for export.

Pruning is block-wise by magnitude on the 1x1 conv weights (the only ones XNNPACK runs sparse):
a block of ``(out, in)`` = ``(4, 1)`` is 4 consecutive output channels of one input channel,
the block XNNPACK's ``spmm`` 4-wide micro-kernels skip on 64-bit Arm; ``(1, 4)`` is the
transposed shape. Sparsity rises gradually (cubic schedule, Zhu & Gupta 2017) with the masks
re-applied after every optimizer step, then holds at the target for the rest of the fine-tune.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.export.errors import ExportError
from edgekit.spaces.tiny_cnn import BN_EPS, CnnLayer, TinyCnnConfig, layer_plan

logger = logging.getLogger(__name__)

BLOCK_SHAPES = ((4, 1), (1, 4), (1, 1))
Batches = Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]


class XnnpackCnn(nn.Module):
    """A tiny-cnn network with symmetric padding and a 3-channel stem.

    ``units[i]`` holds the conv(s) of ``layers[i]`` (two stacked 1x1 convs for a low-rank
    layer), then a BatchNorm2d while ``batchnorm`` is set (for fine-tuning: BatchNorm re-learns
    the statistics of the new padding), else the last conv has the folded bias (for export);
    ``classifier`` is the linear head. Input: (N, 3, r, r).
    """

    def __init__(self, cfg: TinyCnnConfig, batchnorm: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.batchnorm = batchnorm
        plan = layer_plan(cfg)
        self.layers = tuple(layer for layer in plan if layer.is_conv)
        self.units = nn.ModuleList(
            _unit(layer, index == 0, batchnorm) for index, layer in enumerate(self.layers)
        )
        self.classifier = nn.Linear(plan[-1].in_shape[2], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip_sources = {layer.residual_from for layer in self.layers if layer.residual_from}
        skips: dict[str, torch.Tensor] = {}
        for layer, unit in zip(self.layers, self.units, strict=True):
            if layer.name in skip_sources:
                skips[layer.name] = x
            y = unit(x)
            y = F.relu6(y) if layer.act else y
            x = y + skips.pop(layer.residual_from) if layer.residual_from else y
        return self.classifier(x.mean(dim=(2, 3)))

    def convs(self, index: int) -> list[nn.Conv2d]:
        """The conv(s) of ``layers[index]``."""
        return [m for m in self.units[index] if isinstance(m, nn.Conv2d)]

    def pointwise_weights(self) -> dict[str, nn.Parameter]:
        """The 1x1 conv weights (what XNNPACK runs sparse), by ``layer.name`` (``.conv1`` /
        ``.conv2`` appended for the factors of a low-rank layer)."""
        weights = {}
        for index, layer in enumerate(self.layers):
            if layer.op != "conv2d" or layer.kernel != 1:
                continue
            convs = self.convs(index)
            for number, conv in enumerate(convs):
                suffix = f".conv{number + 1}" if len(convs) > 1 else ""
                weights[layer.name + suffix] = conv.weight
        return weights


def _unit(layer: CnnLayer, is_stem: bool, batchnorm: bool) -> nn.Sequential:
    c_in, c_out = (3 if is_stem else layer.in_shape[2]), layer.out_shape[2]
    if layer.rank:
        convs = [nn.Conv2d(c_in, layer.rank, 1, bias=False),
                 nn.Conv2d(layer.rank, c_out, 1, bias=not batchnorm)]  # fmt: skip
    else:
        convs = [nn.Conv2d(c_in, c_out, layer.kernel, layer.stride, layer.kernel // 2,
                           groups=layer.groups, bias=not batchnorm)]  # fmt: skip
    return nn.Sequential(*convs, *([nn.BatchNorm2d(c_out, eps=BN_EPS)] if batchnorm else []))


@torch.no_grad()
def from_tiny_cnn(module: nn.Module, cfg: TinyCnnConfig) -> XnnpackCnn:
    """An :class:`XnnpackCnn` (with BatchNorm) holding the weights of an extracted tiny-cnn
    network; a 1-channel stem is spread over 3 channels (divided by 3)."""
    if cfg.in_channels not in (1, 3):
        raise ExportError(
            f"in_channels={cfg.in_channels}: XNNPACK's sparse path starts with a 3-channel "
            "stem; expected 1 (grey, repeated) or 3 channels"
        )
    net = XnnpackCnn(cfg, batchnorm=True)
    for index, layer in enumerate(net.layers):
        source = module.get_submodule(layer.name)
        weights = [source.conv1.weight, source.conv2.weight] if layer.rank else [
            source.conv.weight]  # fmt: skip
        if layer.name == "stem" and weights[0].shape[1] == 1:
            weights[0] = weights[0].repeat(1, 3, 1, 1) / 3
        for conv, weight in zip(net.convs(index), weights, strict=True):
            conv.weight.copy_(weight)
        net.units[index][-1].load_state_dict(source.bn.state_dict())
    classifier = module.get_submodule("classifier")
    net.classifier.weight.copy_(classifier.weight)
    net.classifier.bias.copy_(classifier.bias)
    return net.eval()


@torch.no_grad()
def fold_batchnorm(net: XnnpackCnn) -> XnnpackCnn:
    """A copy of ``net`` with every BatchNorm (eval statistics) folded into the conv before it,
    in float64; zero weights stay exactly zero."""
    if not net.batchnorm:
        return copy.deepcopy(net).eval()
    folded = XnnpackCnn(net.config, batchnorm=False)
    for index in range(len(net.layers)):
        bn = net.units[index][-1]
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        bias = bn.bias.double() - bn.running_mean.double() * scale
        sources, targets = net.convs(index), folded.convs(index)
        for number, (source, target) in enumerate(zip(sources, targets, strict=True)):
            weight = source.weight.double()
            if number == len(sources) - 1:
                weight = weight * scale[:, None, None, None]
                target.bias.copy_(bias.float())
            target.weight.copy_(weight.float())
    folded.classifier.load_state_dict(net.classifier.state_dict())
    return folded.eval()


def block_mask(weight: torch.Tensor, sparsity: float, block: tuple[int, int]) -> torch.Tensor:
    """0/1 mask of ``weight`` (out, in, 1, 1) zeroing the ``round(sparsity * blocks)`` blocks of
    shape ``block`` = (output channels, input channels) with the smallest L2 norm. Edge blocks
    of a dimension that ``block`` does not divide are smaller and count as blocks."""
    if block not in BLOCK_SHAPES:
        raise ExportError(f"block={block!r}: expected one of {BLOCK_SHAPES}")
    if not 0.0 <= sparsity < 1.0:
        raise ExportError(f"sparsity={sparsity!r}: expected a fraction in [0, 1)")
    rows, cols = block
    matrix = weight.detach().reshape(weight.shape[0], -1)
    out, inp = matrix.shape
    padded = F.pad(matrix.float().square(), (0, -inp % cols, 0, -out % rows))
    scores = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    scores = scores.sum(dim=(1, 3)).flatten()
    pruned = round(sparsity * scores.numel())
    keep = torch.ones_like(scores)
    keep[torch.argsort(scores, stable=True)[:pruned]] = 0.0
    keep = keep.reshape(-(-out // rows), -(-inp // cols))
    mask = keep.repeat_interleave(rows, 0).repeat_interleave(cols, 1)[:out, :inp]
    return mask.reshape(weight.shape).to(weight.dtype)


def cubic_sparsity(step: int, ramp_steps: int, target: float) -> float:
    """Sparsity at ``step`` of a cubic ramp from 0 to ``target`` over ``ramp_steps``."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return target
    return target * (1.0 - (1.0 - step / ramp_steps) ** 3)


def zero_fraction(weights: dict[str, torch.Tensor]) -> float:
    """Fraction of exact zeros over all ``weights``."""
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / total if total else 0.0


def prune_finetune(
    net: XnnpackCnn,
    batches: Batches,
    *,
    sparsity: float,
    block: tuple[int, int] = (4, 1),
    epochs: int = 8,
    steps_per_epoch: int,
    lr: float = 1e-3,
    ramp_fraction: float = 0.6,
    prune_every: int = 10,
    seed: int = 0,
) -> XnnpackCnn:
    """A copy of ``net`` fine-tuned on ``batches`` while its 1x1 conv weights are pruned to
    ``sparsity`` in blocks of ``block`` (cubic ramp over the first ``ramp_fraction`` of the
    steps, masks updated every ``prune_every`` steps and re-applied after every step).
    ``sparsity=0`` fine-tunes densely (the baseline). BatchNorm layers train with batch
    statistics. Returned in eval mode."""
    tuned = copy.deepcopy(net).train()
    weights = tuned.pointwise_weights()
    if not weights:
        raise ExportError("the network has no 1x1 convs to prune")
    total_steps = max(1, epochs * steps_per_epoch)
    ramp_steps = int(ramp_fraction * total_steps)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    generator = torch.Generator().manual_seed(seed)
    masks: dict[str, torch.Tensor] = {}
    step, loss = 0, torch.zeros(())
    for _ in range(epochs):
        for images, labels in batches(generator):
            if sparsity > 0 and (step % prune_every == 0 or step == ramp_steps):
                level = cubic_sparsity(step, ramp_steps, sparsity)
                masks = {name: block_mask(w, level, block) for name, w in weights.items()}
            _apply(weights, masks)
            loss = F.cross_entropy(tuned(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
    if sparsity > 0:
        masks = {name: block_mask(w, sparsity, block) for name, w in weights.items()}
    _apply(weights, masks)
    logger.info(
        "pruned fine-tune: %d steps, last loss %.4f, 1x1 zeros %.1f%%",
        step,
        loss.item(),
        100 * zero_fraction({k: v.detach() for k, v in weights.items()}),
    )
    return tuned.eval()


@torch.no_grad()
def _apply(weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        weights[name].mul_(mask)


def block_structure_ok(weight: torch.Tensor, block: tuple[int, int]) -> bool:
    """Whether each block of ``block`` shape in ``weight`` (out, in, 1, 1) is all zero or all
    non-zero (edge blocks clipped)."""
    rows, cols = block
    matrix = weight.detach().reshape(weight.shape[0], -1)
    out, inp = matrix.shape
    pads = (0, -inp % cols, 0, -out % rows)
    shape = ((out + pads[3]) // rows, rows, (inp + pads[1]) // cols, cols)
    nonzero = F.pad((matrix != 0).float(), pads).reshape(shape).sum(dim=(1, 3))
    size = F.pad(torch.ones_like(matrix, dtype=torch.float32), pads).reshape(shape).sum((1, 3))
    return bool(((nonzero == 0) | (nonzero == size)).all())


def accuracy(net: nn.Module, images: torch.Tensor, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of ``net`` on an NCHW batch (eval mode, no gradients)."""
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            logits = net(images[start : start + batch])
            correct += int((logits.argmax(1).numpy() == labels[start : start + batch]).sum())
    return correct / max(1, len(labels))


__all__ = [
    "BLOCK_SHAPES",
    "XnnpackCnn",
    "accuracy",
    "block_mask",
    "block_structure_ok",
    "cubic_sparsity",
    "fold_batchnorm",
    "from_tiny_cnn",
    "prune_finetune",
    "zero_fraction",
]
