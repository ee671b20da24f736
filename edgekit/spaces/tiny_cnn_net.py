"""PyTorch side of tiny-cnn: the weight-shared supernet, extraction and patch execution.

Both the supernet and an extracted network run the same :func:`~edgekit.spaces.tiny_cnn.
layer_plan` through :func:`run_layers`, so whole-image and patch-based execution share one code
path. Patches are used in eval mode only: in training mode BatchNorm normalises with batch
statistics, which differ per patch, so training (and BN recalibration) always runs whole-image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.errors import ConfigError
from edgekit.spaces.tiny_cnn import (
    BN_EPS,
    DEPTHS,
    EXPAND_RATIOS,
    FUSED_KERNEL,
    FUSED_STAGES,
    KERNEL_SIZES,
    CnnLayer,
    PatchPlan,
    TinyCnnConfig,
    TinyCnnSpace,
    layer_plan,
    make_divisible,
    patch_plan,
    stage_channels,
)

logger = logging.getLogger(__name__)

Pads = tuple[int, int, int, int]
Apply = Callable[[CnnLayer, torch.Tensor, Pads], torch.Tensor]


def prepare_input(x: torch.Tensor, cfg: TinyCnnConfig) -> torch.Tensor:
    """Resize an NCHW batch to ``cfg.resolution`` (bilinear, align_corners=False)."""
    size = (cfg.resolution, cfg.resolution)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int, pads: Pads
) -> torch.Tensor:
    """Convolution after zero-padding ``x`` by ``pads`` (top, bottom, left, right)."""
    top, bottom, left, right = pads
    # conv2d's own (symmetric) padding is much faster than F.pad; pad only the asymmetric rest.
    rows, cols = min(top, bottom), min(left, right)
    if top != bottom or left != right:
        x = F.pad(x, (left - cols, right - cols, top - rows, bottom - rows))
    return F.conv2d(x, weight, None, stride, (rows, cols), 1, groups)


def run_layers(
    layers: Sequence[CnnLayer], plan: PatchPlan | None, apply: Apply, x: torch.Tensor
) -> torch.Tensor:
    """Run ``layers`` on NCHW ``x``; ``apply(layer, x, pads)`` runs one layer (its convs
    zero-pad ``x`` by ``pads`` first).

    With a ``plan`` its leading layers run patch by patch (see :class:`PatchPlan`).
    """
    skip_sources = {layer.residual_from for layer in layers if layer.residual_from}
    start = 0
    if plan is not None:
        x = _run_patches(layers[: plan.num_layers], plan, apply, x, skip_sources)
        start = plan.num_layers
    skips: dict[str, torch.Tensor] = {}
    for layer in layers[start:]:
        if layer.op == "mean":
            x = x.mean(dim=(2, 3))
        elif layer.op == "fully_connected":
            x = apply(layer, x, (0, 0, 0, 0))
        else:
            if layer.name in skip_sources:
                skips[layer.name] = x
            y = apply(layer, x, layer.pads)
            x = y + skips.pop(layer.residual_from) if layer.residual_from else y
    return x


def _run_patches(
    layers: Sequence[CnnLayer],
    plan: PatchPlan,
    apply: Apply,
    image: torch.Tensor,
    skip_sources: set[str],
) -> torch.Tensor:
    rows = []
    for i in range(plan.grid):
        row = []
        for steps in plan.patches[i * plan.grid : (i + 1) * plan.grid]:
            y0, y1, x0, x1 = steps[0].in_region
            x = image[:, :, y0:y1, x0:x1]
            skips: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}
            for layer, step in zip(layers, steps, strict=True):
                if layer.name in skip_sources:
                    skips[layer.name] = (x, step.in_region)
                y = apply(layer, x, step.pads)
                if layer.residual_from:
                    skip, (sy, _, sx, _) = skips.pop(layer.residual_from)
                    oy0, oy1, ox0, ox1 = step.out_region
                    y = y + skip[:, :, oy0 - sy : oy1 - sy, ox0 - sx : ox1 - sx]
                x = y
            row.append(x)
        rows.append(torch.cat(row, dim=3))
    return torch.cat(rows, dim=2)


PlanOf = Callable[..., tuple[CnnLayer, ...]]
PatchPlanOf = Callable[..., PatchPlan | None]


def run_config(
    cfg: TinyCnnConfig,
    x: torch.Tensor,
    apply: Apply,
    patches: bool,
    plans: tuple[PlanOf, PatchPlanOf] = (layer_plan, patch_plan),
) -> torch.Tensor:
    """Run ``cfg``'s network on NCHW ``x`` (its actual size) through :func:`run_layers`, patch
    by patch where ``patches`` and the config say so. ``plans``: the space's ``layer_plan``
    and ``patch_plan`` functions (tiny-resnet passes its own)."""
    if x.dim() != 4 or x.shape[1] != cfg.in_channels:
        raise ConfigError(
            f"input of shape {tuple(x.shape)}: expected (N, {cfg.in_channels}, H, W)"
        )
    hw = (int(x.shape[2]), int(x.shape[3]))
    layer_plan_of, patch_plan_of = plans
    plan = patch_plan_of(cfg, hw) if patches else None
    return run_layers(layer_plan_of(cfg, hw), plan, apply, x)


def check_supernet(supernet: nn.Module, expected: type, cfg: TinyCnnConfig) -> None:
    """Raise ConfigError unless ``supernet`` is an ``expected`` supernet for ``cfg``'s data."""
    if not isinstance(supernet, expected):
        raise ConfigError(f"expected a {cfg.space} supernet, got {type(supernet).__name__}")
    if (supernet.num_classes, supernet.in_channels) != (cfg.num_classes, cfg.in_channels):
        raise ConfigError(
            f"config has num_classes={cfg.num_classes}, in_channels={cfg.in_channels}; the "
            f"supernet has {supernet.num_classes}, {supernet.in_channels}"
        )


# --- supernet ----------------------------------------------------------------------------------
class SlicedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises the first k channels with the first k entries of its
    running statistics and affine parameters (k = the input's channels).

    It is an ``nn.BatchNorm2d``, so ``reset_running_stats()`` and ``momentum = None``
    (cumulative averages) work for BN recalibration of the active subnet.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        # Slices of 1-D buffers are views, so training updates the shared running stats.
        return F.batch_norm(
            x, self.running_mean[:k], self.running_var[:k], self.weight[:k], self.bias[:k],
            self.training, factor, self.eps,
        )  # fmt: skip


class _ElasticConv(nn.Module):
    """A conv + BN (+ ReLU6) unit at maximum size; runs the slice a :class:`CnnLayer` asks for.

    Dense kxk convs slice output / input channels, depthwise convs slice channels and centre-crop
    the kernel, 1x1 convs hold two factors (``conv1``: in -> rank, ``conv2``: rank -> out) at
    full rank ``min(in, out)`` and slice the rank; a dense 1x1 layer uses the product of the
    factors at rank ``min(in, out)``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        if kernel == 1 and not depthwise:
            rank = min(c_in, c_out)
            self.conv1 = nn.Conv2d(c_in, rank, 1, bias=False)
            self.conv2 = nn.Conv2d(rank, c_out, 1, bias=False)
        else:
            groups = c_out if depthwise else 1
            self.conv = nn.Conv2d(c_in, c_out, kernel, groups=groups, bias=False)
        self.bn = SlicedBatchNorm2d(c_out, eps=BN_EPS)

    def weights(self, layer: CnnLayer) -> list[torch.Tensor]:
        """The conv weight(s) of ``layer``: one tensor, or two stacked 1x1 factors."""
        c_in, c_out = layer.in_shape[2], layer.out_shape[2]
        if hasattr(self, "conv1"):
            rank = layer.rank or min(c_in, c_out)
            first = self.conv1.weight[:rank, :c_in]
            second = self.conv2.weight[:c_out, :rank]
            if layer.rank:
                return [first, second]
            return [(second.flatten(1) @ first.flatten(1))[:, :, None, None]]
        weight = self.conv.weight[:c_out, : c_in // layer.groups]
        crop = (weight.shape[-1] - layer.kernel) // 2
        if crop:
            weight = weight[:, :, crop:-crop, crop:-crop]
        return [weight]

    def forward(self, x: torch.Tensor, layer: CnnLayer, pads: Pads) -> torch.Tensor:
        weights = self.weights(layer)
        if len(weights) == 2:  # two 1x1 factors: no stride, groups or padding
            x = F.conv2d(F.conv2d(x, weights[0]), weights[1])
        else:
            x = conv2d(x, weights[0], layer.stride, layer.groups, pads)
        x = self.bn(x)
        return F.relu6(x) if layer.act else x


class _ElasticLinear(nn.Linear):
    def forward(self, x: torch.Tensor, layer: CnnLayer, pads: Pads) -> torch.Tensor:
        return F.linear(x, self.weight[:, : layer.in_shape[2]], self.bias)


class TinyCnnSupernet(nn.Module):
    """Weight-shared tiny-cnn supernet; ``set_active(cfg)`` selects the subnet ``forward`` runs.

    Module names match the extracted network's (``stem``, ``first.dw``, ``first.pw``,
    ``stages.<s>.<b>.expand|dw|project``, ``classifier``); blocks of the stages that can be
    fused also hold ``fused``, the dense 3x3 conv a fused block runs instead of expand and dw.
    New supernets start with the largest config active. In eval mode a config with
    ``patch_grid > 1`` runs patch by patch.
    """

    def __init__(self, space: TinyCnnSpace) -> None:
        super().__init__()
        self.space = space
        self.num_classes = space.num_classes
        self.in_channels = space.in_channels
        stem, first, stages = stage_channels(1.0)
        max_kernel, max_expand = max(KERNEL_SIZES), max(EXPAND_RATIOS)
        self.stem = _ElasticConv(space.in_channels, stem, 3)
        self.first = nn.ModuleDict(
            {"dw": _ElasticConv(stem, stem, 3, depthwise=True), "pw": _ElasticConv(stem, first)}
        )
        self.stages = nn.ModuleList()
        c_in = first
        for stage, c_out in enumerate(stages):
            blocks = nn.ModuleList()
            for _ in range(max(DEPTHS)):
                hidden = make_divisible(c_in * max_expand)
                block = nn.ModuleDict({
                    "expand": _ElasticConv(c_in, hidden),
                    "dw": _ElasticConv(hidden, hidden, max_kernel, depthwise=True),
                    "project": _ElasticConv(hidden, c_out),
                })  # fmt: skip
                if stage < max(FUSED_STAGES):
                    block["fused"] = _ElasticConv(c_in, hidden, FUSED_KERNEL)
                blocks.append(block)
                c_in = c_out
            self.stages.append(blocks)
        self.classifier = _ElasticLinear(c_in, space.num_classes)
        self._init_weights()
        self._active = space.largest()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    @property
    def active(self) -> TinyCnnConfig:
        return self._active

    def set_active(self, cfg: TinyCnnConfig) -> None:
        self.space.validate(cfg)
        self._active = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_config(self._active, x, self._apply_layer, not self.training)

    def _apply_layer(self, layer: CnnLayer, x: torch.Tensor, pads: Pads) -> torch.Tensor:
        return self.get_submodule(layer.name)(x, layer, pads)


# --- extracted network -------------------------------------------------------------------------
class ConvUnit(nn.Module):
    """Plain conv (or two stacked 1x1 convs ``conv1``, ``conv2``) + BatchNorm2d + activation.

    Convs have no padding attribute: ``forward`` takes explicit zero pads (SAME or patch halo).
    """

    def __init__(self, layer: CnnLayer) -> None:
        super().__init__()
        c_in, c_out = layer.in_shape[2], layer.out_shape[2]
        if layer.rank:
            self.conv1 = nn.Conv2d(c_in, layer.rank, 1, bias=False)
            self.conv2 = nn.Conv2d(layer.rank, c_out, 1, bias=False)
        else:
            self.conv = nn.Conv2d(c_in, c_out, layer.kernel, layer.stride, groups=layer.groups,
                                  bias=False)  # fmt: skip
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.ReLU6() if layer.act else nn.Identity()

    def forward(self, x: torch.Tensor, pads: Pads = (0, 0, 0, 0)) -> torch.Tensor:
        if hasattr(self, "conv1"):
            x = self.conv2(self.conv1(x))
        else:
            conv = self.conv
            x = conv2d(x, conv.weight, conv.stride[0], conv.groups, pads)
        return self.act(self.bn(x))


class TinyCnnNet(nn.Module):
    """A standalone tiny-cnn network for ``cfg``, built from plain torch.nn layers.

    Its structure depends only on the config (module ``<layer.name>`` for every layer of
    :func:`~edgekit.spaces.tiny_cnn.layer_plan`), so an exporter can rebuild the same graph
    and copy weights by name. In eval mode a config with ``patch_grid > 1`` runs patch by patch.
    """

    def __init__(self, cfg: TinyCnnConfig) -> None:
        super().__init__()
        self.config = cfg
        layers = layer_plan(cfg)
        self.stem = ConvUnit(layers[0])
        self.first = nn.ModuleDict({"dw": ConvUnit(layers[1]), "pw": ConvUnit(layers[2])})
        parts: dict[str, dict[str, ConvUnit]] = {}  # block -> its layers (by part name)
        for layer in layers[3:-2]:
            block, part = layer.name.rsplit(".", 1)
            parts.setdefault(block, {})[part] = ConvUnit(layer)
        self.stages = nn.ModuleList(
            nn.ModuleList(nn.ModuleDict(parts[f"stages.{s}.{b}"]) for b in range(depth))
            for s, depth in enumerate(cfg.depths)
        )
        c_in = layers[-1].in_shape[2]
        self.classifier = nn.Linear(c_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_config(self.config, x, self._apply_layer, not self.training)

    def _apply_layer(self, layer: CnnLayer, x: torch.Tensor, pads: Pads) -> torch.Tensor:
        module = self.get_submodule(layer.name)
        return module(x) if layer.op == "fully_connected" else module(x, pads)


@torch.no_grad()
def copy_weights(supernet: nn.Module, net: nn.Module, layers: Sequence[CnnLayer]) -> None:
    """Copy each of ``layers``' slice of the supernet's elastic units (weights and BatchNorm
    state) into ``net``'s plain module of the same name."""
    for layer in layers:
        if layer.op == "mean":
            continue
        source, target = supernet.get_submodule(layer.name), net.get_submodule(layer.name)
        if layer.op == "fully_connected":
            target.weight.copy_(source.weight[:, : layer.in_shape[2]])
            target.bias.copy_(source.bias)
            continue
        if layer.rank:
            first, second = source.weights(layer)
            target.conv1.weight.copy_(first)
            target.conv2.weight.copy_(second)
        elif hasattr(source, "conv1"):
            # Fold the factors in float64 so the dense weight is exact to float32 rounding.
            c_in, c_out = layer.in_shape[2], layer.out_shape[2]
            rank = min(c_in, c_out)
            product = source.conv2.weight[:c_out, :rank].double().flatten(1) @ (
                source.conv1.weight[:rank, :c_in].double().flatten(1)
            )
            target.conv.weight.copy_(product[:, :, None, None])
        else:
            (weight,) = source.weights(layer)
            target.conv.weight.copy_(weight)
        k = layer.out_shape[2]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target.bn, name).copy_(getattr(source.bn, name)[:k])
        target.bn.num_batches_tracked.copy_(source.bn.num_batches_tracked)
        target.bn.momentum = source.bn.momentum


@torch.no_grad()
def extract(supernet: nn.Module, cfg: TinyCnnConfig) -> TinyCnnNet:
    """A :class:`TinyCnnNet` for ``cfg`` with weights and BN statistics copied from
    ``supernet``; in the same train / eval mode as the supernet."""
    check_supernet(supernet, TinyCnnSupernet, cfg)
    net = TinyCnnNet(cfg)
    copy_weights(supernet, net, layer_plan(cfg))
    net.train(supernet.training)
    logger.debug("extracted tiny-cnn subnet %s", cfg)
    return net


__all__ = [
    "ConvUnit",
    "SlicedBatchNorm2d",
    "TinyCnnNet",
    "TinyCnnSupernet",
    "check_supernet",
    "copy_weights",
    "extract",
    "prepare_input",
    "run_config",
    "run_layers",
]
