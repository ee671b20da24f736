"""Quantization-aware fine-tuning of an extracted subnet (used when post-training int8
quantization loses too much accuracy).

Simple straight-through fake quantization in PyTorch, no graph rewriting:

- weights of every ``nn.Conv2d`` / ``nn.Linear``: symmetric int8 per output channel (what the
  converter does; per-channel scaling commutes with the BatchNorm folded in later, so quantizing
  the unfolded conv weight rounds exactly like quantizing the folded one);
- activations at the tensors the int8 model stores: outputs of conv units (conv + BN + act),
  the first factor of low-rank 1x1 convs, the patch embedding, linears and hard-swish, and
  every step of a LayerNorm as the int8 graph decomposes it (so a token whose variance rounds
  to zero in int8 fails here as it does in the converted model), each with an asymmetric int8
  min/max range calibrated like the converter's at the start of every epoch. Residual sums
  and attention internals are not fake-quantized.

BatchNorm statistics stay frozen (eval mode) so that the folded weights match what was trained.
The fine-tuned weights then go through the ordinary export (calibration and conversion), so the
deployed model is still a post-training-quantized model, of weights that tolerate it.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

if TYPE_CHECKING:
    from edgekit.data.splits import Splits
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

_CALIBRATION_IMAGES = 256  # like the converter's representative set


class _WeightFakeQuant(nn.Module):
    """Symmetric per-output-channel int8 fake quantization (levels -127..127)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(weight.shape[0], -1)
        scale = (flat.abs().amax(dim=1) / 127.0).clamp(min=1e-12).float()
        zero_point = torch.zeros(weight.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -127, 127)


class _FakeQuant:
    """Int8 affine fake quantization of one tensor with a min/max range, observed like the
    converter calibrates (min and max over a few batches) and then held fixed."""

    def __init__(self) -> None:
        self.low: float | None = None
        self.high: float | None = None
        self.observing = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            low, high = float(x.detach().min()), float(x.detach().max())
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
            return x
        assert self.low is not None and self.high is not None
        low, high = min(self.low, 0.0), max(self.high, 0.0)  # zero must be representable
        scale = max((high - low) / 255.0, 1e-8)
        zero_point = round(-128 - low / scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -128, 127)


class _OutputHook:
    """Forward hook fake-quantizing a module's output."""

    def __init__(self) -> None:
        self.quantizers = [_FakeQuant()]

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.quantizers[0](output)


class _LayerNormHook(_OutputHook):
    """Forward hook replacing a LayerNorm's output by the int8 graph's decomposition
    (MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD), each intermediate fake-quantized.

    A token whose variance is below the int8 resolution of the squares rounds to zero there
    and saturates RSQRT, exactly as in the converted model; training can then adapt to it.
    """

    def __init__(self) -> None:
        self.quantizers = [_FakeQuant() for _ in range(9)]

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        steps = iter(self.quantizers)

        def fq(x: torch.Tensor) -> torch.Tensor:
            return next(steps)(x)

        x = inputs[0]
        centred = fq(x - fq(x.mean(dim=-1, keepdim=True)))
        variance = fq(fq(centred * centred).mean(dim=-1, keepdim=True))
        inverse = fq(torch.rsqrt(fq(variance + module.eps).clamp(min=1e-12)))
        return fq(fq(fq(centred * inverse) * module.weight) + module.bias)


def _activation_points(net: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are tensors of the int8 model (see the module docstring)."""
    points = []
    for name, module in net.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (
            hasattr(module, "bn")  # conv unit: conv(s) + BN + activation, fused when exported
            or (isinstance(module, nn.Conv2d) and leaf in ("conv1", "patch_embed"))
            or isinstance(module, nn.Linear | nn.LayerNorm | nn.Hardswish)
        ):
            points.append(module)
    return points


def finetune_qat(
    space: SearchSpace,
    module: nn.Module,
    cfg: ArchConfig,
    splits: Splits,
    *,
    epochs: int = 3,
    lr: float = 2e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """A copy of the extracted subnet ``module`` fine-tuned on ``splits.train`` with fake int8
    quantization; returned in eval mode with plain (float, quantization-friendly) weights."""
    from edgekit.training import prepare_input, to_nchw

    net = copy.deepcopy(module).eval()
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            parametrize.register_parametrization(layer, "weight", _WeightFakeQuant())
    points = _activation_points(net)
    hooks = [_LayerNormHook() if isinstance(p, nn.LayerNorm) else _OutputHook() for p in points]
    handles = [
        point.register_forward_hook(hook) for point, hook in zip(points, hooks, strict=True)
    ]
    generator = torch.Generator().manual_seed(seed)
    images, labels = splits.train.x, torch.from_numpy(splits.train.y)

    def batch(index: torch.Tensor) -> torch.Tensor:
        return prepare_input(space, to_nchw(images[index.numpy()]), cfg)

    quantizers = [quantizer for hook in hooks for quantizer in hook.quantizers]

    def calibrate() -> None:
        """Ranges for the current weights, as the converter will calibrate them."""
        net.eval()
        for quantizer in quantizers:
            quantizer.low = quantizer.high = None
            quantizer.observing = True
        order = torch.randperm(len(labels), generator=generator)[:_CALIBRATION_IMAGES]
        with torch.no_grad():
            for index in order.split(batch_size):
                net(batch(index))
        for quantizer in quantizers:
            quantizer.observing = False

    try:
        optimizer = torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
        )
        steps = 0
        for _ in range(epochs):
            calibrate()
            net.train()
            for layer in net.modules():  # frozen BatchNorm statistics
                if isinstance(layer, nn.BatchNorm2d):
                    layer.eval()
            order = torch.randperm(len(labels), generator=generator)
            for index in order.split(batch_size):
                if len(index) < 2:
                    continue
                loss = F.cross_entropy(net(batch(index)), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
        logger.info("QAT fine-tuning: %d steps, last loss %.4f", steps, loss.item())
    finally:
        for handle in handles:
            handle.remove()
    net.eval()
    for layer in net.modules():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    return net
