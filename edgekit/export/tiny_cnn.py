"""TensorFlow builder for ``tiny-cnn`` networks (whole-image and patch-based).

The graph follows :func:`edgekit.spaces.tiny_cnn.layer_plan` layer by layer. Whole-image convs
use ``padding="SAME"``, which the space's padding equals by construction, so the model has no
PAD ops. BatchNorm is folded (in float64) into the conv before it; a low-rank 1x1 layer stays
two stacked 1x1 convs (the first without bias), the BatchNorm folded into the second.

With ``patch_grid > 1`` the first layers run patch by patch exactly as
:func:`edgekit.spaces.tiny_cnn.patch_plan` schedules them: STRIDED_SLICE of the input region,
PAD only where the region leaves the feature map, VALID convs, the residual's skip cropped with
STRIDED_SLICE, and CONCATENATION of the patch outputs (each row along the width, then the rows
along the height). Patches run one after another in row-major order (each waits on the
previous one's output), so no patch's maps stay alive while another patch runs. Every op is
plain TFLite, so TFLite Micro runs it unchanged. Each layer gets one int8 range over all its
patches (``shared_range_scopes``), as in the whole-image network.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import torch.nn as nn

from edgekit.export.errors import ExportError
from edgekit.export.graph import TfGraph
from edgekit.spaces.tiny_cnn import CnnLayer, PatchPlan, TinyCnnConfig, layer_plan, patch_plan
from edgekit.spaces.tiny_resnet import TinyResnetConfig

# A patch's name scope: the converter gives each layer one int8 range over all patches.
PATCH_SCOPE = r"patch\d+_\d+/"


@dataclass(frozen=True)
class _ConvWeights:
    """NHWC weights of one conv layer: ``kernels`` run in sequence (two for low rank)."""

    kernels: tuple[tf.Tensor, ...]
    bias: tf.Tensor


def _fold(module: nn.Module, layer: CnnLayer) -> _ConvWeights:
    """Conv weight(s) of ``module`` with its eval-mode BatchNorm folded into the last one."""
    bn = module.bn
    scale = bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()
    bias = bn.bias.detach().double() - bn.running_mean.double() * scale
    weights = [module.conv1.weight, module.conv2.weight] if layer.rank else [module.conv.weight]
    weights = [w.detach().double() for w in weights]
    weights[-1] = weights[-1] * scale[:, None, None, None]
    kernels = []
    for weight in weights:
        if layer.op == "depthwise_conv2d":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            nhwc = weight.permute(2, 3, 0, 1)
        else:  # (out, in, kh, kw) -> (kh, kw, in, out)
            nhwc = weight.permute(2, 3, 1, 0)
        kernels.append(tf.constant(nhwc.float().numpy()))
    return _ConvWeights(tuple(kernels), tf.constant(bias.float().numpy()))


def _conv(x: tf.Tensor, layer: CnnLayer, weights: _ConvWeights, padding: str) -> tf.Tensor:
    if layer.op == "depthwise_conv2d":
        stride = [1, layer.stride, layer.stride, 1]
        x = tf.nn.depthwise_conv2d(x, weights.kernels[0], stride, padding)
    else:
        for kernel in weights.kernels:
            x = tf.nn.conv2d(x, kernel, layer.stride, padding)
    x = x + weights.bias
    return tf.nn.relu6(x) if layer.act else x


def _crop(x: tf.Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> tf.Tensor:
    if (rows[0], cols[0]) == (0, 0) and (rows[1], cols[1]) == tuple(x.shape[1:3]):
        return x
    return x[:, rows[0] : rows[1], cols[0] : cols[1], :]


def _run_patches(
    image: tf.Tensor,
    layers: tuple[CnnLayer, ...],
    plan: PatchPlan,
    weights: dict[str, _ConvWeights],
) -> tf.Tensor:
    skip_sources = {layer.residual_from for layer in layers if layer.residual_from}
    rows = []
    previous: tf.Tensor | None = None
    for i in range(plan.grid):
        row = []
        for j in range(plan.grid):
            steps = plan.patches[i * plan.grid + j]
            with tf.name_scope(f"patch{i}_{j}"):  # see PATCH_SCOPE
                y0, y1, x0, x1 = steps[0].in_region
                with tf.name_scope("input"):
                    x = image
                    if previous is not None:
                        # The converter orders ops by name otherwise: a patch that reads the
                        # whole image (no slice of its own) would start with the first
                        # patch, whose names its shared weights carry, and hold its maps
                        # while the patches between run. The Identity is folded away.
                        with tf.control_dependencies([previous]):
                            x = tf.identity(image)
                    x = _crop(x, (y0, y1), (x0, x1))
                skips: dict[str, tuple[tf.Tensor, tuple[int, int, int, int]]] = {}
                for layer, step in zip(layers, steps, strict=True):
                    with tf.name_scope(layer.name):
                        if layer.name in skip_sources:
                            skips[layer.name] = (x, step.in_region)
                        top, bottom, left, right = step.pads
                        if any(step.pads):
                            x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
                        y = _conv(x, layer, weights[layer.name], "VALID")
                        if layer.residual_from:
                            skip, (sy, _, sx, _) = skips.pop(layer.residual_from)
                            oy0, oy1, ox0, ox1 = step.out_region
                            y = y + _crop(skip, (oy0 - sy, oy1 - sy), (ox0 - sx, ox1 - sx))
                        x = y
                row.append(x)
                previous = x
        with tf.name_scope(f"patch_row{i}"):
            rows.append(tf.concat(row, axis=2) if len(row) > 1 else row[0])
    with tf.name_scope("patch_merge"):
        return tf.concat(rows, axis=1)


def build(module: nn.Module, cfg: TinyCnnConfig) -> TfGraph:
    """The TensorFlow graph of the extracted tiny-cnn network ``module`` for ``cfg``."""
    return build_layers(module, cfg, layer_plan(cfg), patch_plan(cfg))


def build_layers(
    module: nn.Module,
    cfg: TinyCnnConfig | TinyResnetConfig,
    layers: tuple[CnnLayer, ...],
    plan: PatchPlan | None,
) -> TfGraph:
    """The TensorFlow graph of an extracted network of tiny-cnn layers (``module`` holds
    one unit per conv layer, by name, and ``classifier``) run as ``plan`` says; ``cfg`` gives
    the input resolution, channels and classes."""
    if module.training:
        raise ExportError(f"the {cfg.space} network must be in eval mode to fold its BatchNorm")
    weights = {
        layer.name: _fold(module.get_submodule(layer.name), layer)
        for layer in layers
        if layer.is_conv
    }
    classifier = module.get_submodule("classifier")
    fc_weight = tf.constant(classifier.weight.detach().numpy().T.copy())
    fc_bias = tf.constant(classifier.bias.detach().numpy().copy())

    def forward(image: tf.Tensor) -> tf.Tensor:
        x, start = image, 0
        if plan is not None:
            x, start = (
                _run_patches(image, layers[: plan.num_layers], plan, weights),
                plan.num_layers,
            )
        skip_sources = {layer.residual_from for layer in layers if layer.residual_from}
        skips: dict[str, tf.Tensor] = {}
        for layer in layers[start:]:
            with tf.name_scope(layer.name):
                if layer.op == "mean":
                    x = tf.reduce_mean(x, axis=[1, 2])
                elif layer.op == "fully_connected":
                    x = tf.matmul(x, fc_weight) + fc_bias
                else:
                    if layer.name in skip_sources:
                        skips[layer.name] = x
                    x = _conv(x, layer, weights[layer.name], "SAME")
                    if layer.residual_from:
                        x = x + skips.pop(layer.residual_from)
        return x

    return TfGraph(
        forward=forward,
        input_shape=(cfg.resolution, cfg.resolution, cfg.in_channels),
        num_classes=cfg.num_classes,
        layers=tuple(layer.name for layer in layers),
        shared_range_scopes=None if plan is None else PATCH_SCOPE,
    )
