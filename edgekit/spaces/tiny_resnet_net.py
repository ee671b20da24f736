"""PyTorch side of tiny-resnet: the weight-shared supernet and extraction.

Both run :func:`~edgekit.spaces.tiny_resnet.layer_plan` through tiny-cnn's
:func:`~edgekit.spaces.tiny_cnn_net.run_layers` with tiny-cnn's elastic and plain conv units,
so whole-image and patch-based execution share one code path with tiny-cnn (patches in eval
mode only, see :mod:`edgekit.spaces.tiny_cnn_net`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from edgekit.spaces.tiny_cnn import CnnLayer
from edgekit.spaces.tiny_cnn_net import (
    ConvUnit,
    Pads,
    _ElasticConv,
    _ElasticLinear,
    check_supernet,
    copy_weights,
    run_config,
)
from edgekit.spaces.tiny_resnet import (
    DEPTHS,
    KERNEL,
    STAGE_WIDTHS,
    STEM_CHANNELS,
    TinyResnetConfig,
    TinyResnetSpace,
    layer_plan,
    patch_plan,
)

logger = logging.getLogger(__name__)
PARTS = ("conv1", "conv2")
PLANS = (layer_plan, patch_plan)


class TinyResnetSupernet(nn.Module):
    """Weight-shared tiny-resnet supernet; ``set_active(cfg)`` selects the subnet ``forward``
    runs. Module names match the extracted network's (``stem``,
    ``stages.<s>.<b>.conv1|conv2``, ``classifier``); a narrower subnet uses each conv's first
    output and input channels. New supernets start with the largest config active."""

    def __init__(self, space: TinyResnetSpace) -> None:
        super().__init__()
        self.space = space
        self.num_classes = space.num_classes
        self.in_channels = space.in_channels
        c_in = max(STEM_CHANNELS)
        self.stem = _ElasticConv(space.in_channels, c_in, KERNEL)
        self.stages = nn.ModuleList()
        for widths in STAGE_WIDTHS:
            c_out = max(widths)
            blocks = nn.ModuleList()
            for _ in range(max(DEPTHS)):
                blocks.append(nn.ModuleDict({
                    "conv1": _ElasticConv(c_in, c_out, KERNEL),
                    "conv2": _ElasticConv(c_out, c_out, KERNEL),
                }))  # fmt: skip
                c_in = c_out
            self.stages.append(blocks)
        # PyTorch's default initialisation (no Kaiming fan-out re-init as in tiny-cnn): under
        # AdamW with BatchNorm, tiny-cnn's initialisation cost ResNet-8 ~5 points of CIFAR-10
        # accuracy at 8 epochs (docs/BENCHMARKS.md).
        self.classifier = _ElasticLinear(c_in, space.num_classes)
        self._active = space.largest()

    @property
    def active(self) -> TinyResnetConfig:
        return self._active

    def set_active(self, cfg: TinyResnetConfig) -> None:
        self.space.validate(cfg)
        self._active = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_config(self._active, x, self._apply_layer, not self.training, PLANS)

    def _apply_layer(self, layer: CnnLayer, x: torch.Tensor, pads: Pads) -> torch.Tensor:
        return self.get_submodule(layer.name)(x, layer, pads)


class TinyResnetNet(nn.Module):
    """A standalone tiny-resnet network for ``cfg`` from plain torch.nn layers (module
    ``<layer.name>`` for every layer of the plan, so an exporter can copy weights by name).
    In eval mode a config with ``patch_grid > 1`` runs patch by patch."""

    def __init__(self, cfg: TinyResnetConfig) -> None:
        super().__init__()
        self.config = cfg
        layers = layer_plan(cfg)
        units = {layer.name: ConvUnit(layer) for layer in layers if layer.is_conv}
        self.stem = units["stem"]
        self.stages = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleDict({part: units[f"stages.{s}.{b}.{part}"] for part in PARTS})
                for b in range(depth)
            )
            for s, depth in enumerate(cfg.depths)
        )
        self.classifier = nn.Linear(layers[-1].in_shape[2], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_config(self.config, x, self._apply_layer, not self.training, PLANS)

    def _apply_layer(self, layer: CnnLayer, x: torch.Tensor, pads: Pads) -> torch.Tensor:
        module = self.get_submodule(layer.name)
        return module(x) if layer.op == "fully_connected" else module(x, pads)


@torch.no_grad()
def extract(supernet: nn.Module, cfg: TinyResnetConfig) -> TinyResnetNet:
    """A :class:`TinyResnetNet` for ``cfg`` with weights and BN statistics copied from
    ``supernet``; in the same train / eval mode as the supernet."""
    check_supernet(supernet, TinyResnetSupernet, cfg)  # type: ignore[arg-type]
    net = TinyResnetNet(cfg)
    copy_weights(supernet, net, layer_plan(cfg))
    net.train(supernet.training)
    logger.debug("extracted tiny-resnet subnet %s", cfg)
    return net


__all__ = ["TinyResnetNet", "TinyResnetSupernet", "extract"]
