"""TensorFlow builder for ``tiny-resnet`` networks: tiny-cnn's builder on the space's layer plan
(whole-image and patch-based; see :mod:`edgekit.export.tiny_cnn`)."""

from __future__ import annotations

import torch.nn as nn

from edgekit.export.graph import TfGraph
from edgekit.export.tiny_cnn import build_layers
from edgekit.spaces.tiny_resnet import TinyResnetConfig, layer_plan, patch_plan


def build(module: nn.Module, cfg: TinyResnetConfig) -> TfGraph:
    """The TensorFlow graph of the extracted tiny-resnet network ``module`` for ``cfg``."""
    return build_layers(module, cfg, layer_plan(cfg), patch_plan(cfg))
