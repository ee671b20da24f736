"""TensorFlow builder for ``tiny-vit`` networks, with only ops TFLite Micro runs in int8.

Tokens are ``(1, T, e)`` tensors, so every projection is a FULLY_CONNECTED (keeping the token
dimension) and both attention products are BATCH_MATMULs. LayerNorm is written out as MEAN /
SUB / MUL / ADD / RSQRT (TFLite has no int8 LayerNorm kernel), hard-swish as
``x * relu6(x + 3) / 6`` (the converter fuses it into HARD_SWISH). Attention runs head by head
with no TRANSPOSE: each head has its own q / k / v projection (the rows of the extracted
projection that belong to it; a low-rank projection shares its first factor between the
heads), ``q @ k^T`` is a BATCH_MATMUL with ``adj_y``, ``softmax(scores) @ v`` a plain one, and
the heads are joined with CONCATENATION before the output projection. (With 2-D tokens the
converter turns ``q @ k^T`` into a FULLY_CONNECTED with ``k`` as weights, which int8 kernels
compute wrongly: they ignore a weights zero point.)
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import torch.nn as nn

from edgekit.export.errors import ExportError
from edgekit.export.graph import TfGraph
from edgekit.spaces.tiny_vit import HEAD_DIM, LAYER_NORM_EPS, TinyVitConfig

Layer = Callable[[tf.Tensor], tf.Tensor]


def _const(tensor: object) -> tf.Tensor:
    return tf.constant(tensor.detach().float().numpy().copy())


def _linear(linear: nn.Linear, rows: slice = slice(None)) -> Layer:
    """``x @ W[rows].T + b[rows]`` for an ``nn.Linear`` (no bias when it has none)."""
    weight = _const(linear.weight[rows].T)
    bias = None if linear.bias is None else _const(linear.bias[rows])

    def apply(x: tf.Tensor) -> tf.Tensor:
        y = tf.matmul(x, weight)
        return y if bias is None else y + bias

    return apply


def _projection(module: nn.Module, rows: slice = slice(None)) -> tuple[Layer | None, Layer]:
    """(shared first factor or None, output part) of a projection, restricted to ``rows`` of
    its output."""
    if isinstance(module, nn.Linear):
        return None, _linear(module, rows)
    first, second = module[0], module[1]
    return _linear(first), _linear(second, rows)


def _layer_norm(norm: nn.LayerNorm) -> Layer:
    gamma, beta = _const(norm.weight), _const(norm.bias)

    def apply(x: tf.Tensor) -> tf.Tensor:
        centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(centred * centred, axis=-1, keepdims=True)
        return centred * tf.math.rsqrt(variance + LAYER_NORM_EPS) * gamma + beta

    return apply


def _hard_swish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


def _run(name: str, layer: Layer, x: tf.Tensor) -> tf.Tensor:
    with tf.name_scope(name):
        return layer(x)


def _projection_layer(name: str, module: nn.Module) -> Layer:
    first, second = _projection(module)

    def apply(x: tf.Tensor) -> tf.Tensor:
        if first is not None:
            x = _run(f"{name}.0", first, x)
            return _run(f"{name}.1", second, x)
        return _run(name, second, x)

    return apply


def _attention(prefix: str, attn: nn.Module) -> Layer:
    heads = attn.heads
    per_head = {
        which: [_projection(getattr(attn, which), slice(h * HEAD_DIM, (h + 1) * HEAD_DIM))
                for h in range(heads)]
        for which in ("q", "k", "v")
    }  # fmt: skip
    proj = _projection_layer(f"{prefix}.proj", attn.proj)

    def apply(x: tf.Tensor) -> tf.Tensor:
        shared = {}
        for which, parts in per_head.items():
            first = parts[0][0]
            if first is not None:
                shared[which] = _run(f"{prefix}.{which}.0", first, x)
        contexts = []
        for h in range(heads):
            q, k, v = (
                _run(
                    f"{prefix}.{which}" + (".1" if which in shared else "") + f".head{h}",
                    per_head[which][h][1],
                    shared.get(which, x),
                )
                for which in ("q", "k", "v")
            )
            with tf.name_scope(f"{prefix}.head{h}"):
                scores = tf.matmul(q, k, transpose_b=True)
                contexts.append(tf.matmul(tf.nn.softmax(scores, axis=-1), v))
        with tf.name_scope(f"{prefix}.merge"):
            context = tf.concat(contexts, axis=-1) if heads > 1 else contexts[0]
        return proj(context)

    return apply


def build(module: nn.Module, cfg: TinyVitConfig) -> TfGraph:
    """The TensorFlow graph of the extracted tiny-vit network ``module`` for ``cfg``."""
    if module.training:
        raise ExportError("the tiny-vit network must be in eval mode")
    t, e, p = cfg.num_tokens, cfg.embed_dim, cfg.patch_size
    kernel = _const(module.patch_embed.weight.permute(2, 3, 1, 0))
    kernel_bias = _const(module.patch_embed.bias)
    position = _const(module.pos_embed[0])
    blocks = []
    for i, block in enumerate(module.blocks):
        b = f"blocks.{i}"
        blocks.append((
            (f"{b}.norm1", _layer_norm(block.norm1)),
            _attention(f"{b}.attn", block.attn),
            (f"{b}.norm2", _layer_norm(block.norm2)),
            _projection_layer(f"{b}.mlp.fc1", block.mlp.fc1),
            _projection_layer(f"{b}.mlp.fc2", block.mlp.fc2),
        ))  # fmt: skip
    final_norm, head = _layer_norm(module.norm), _linear(module.head)
    layers = ["patch_embed", "pos_embed"]
    for i in range(cfg.depth):
        layers += [f"blocks.{i}.{part}" for part in ("norm1", "attn", "norm2", "mlp")]
    layers += ["pool", "norm", "head"]

    def forward(image: tf.Tensor) -> tf.Tensor:
        with tf.name_scope("patch_embed"):
            x = tf.nn.conv2d(image, kernel, p, "VALID") + kernel_bias
            x = tf.reshape(x, (1, t, e))
        with tf.name_scope("pos_embed"):
            x = x + position
        for i, (norm1, attention, norm2, fc1, fc2) in enumerate(blocks):
            attended = attention(_run(*norm1, x))
            with tf.name_scope(f"blocks.{i}.add1"):
                x = x + attended
            h = _run(f"blocks.{i}.mlp.act", _hard_swish, fc1(_run(*norm2, x)))
            h = fc2(h)
            with tf.name_scope(f"blocks.{i}.add2"):
                x = x + h
        with tf.name_scope("pool"):
            x = tf.reduce_mean(x, axis=1)
        return _run("head", head, _run("norm", final_norm, x))

    return TfGraph(
        forward=forward,
        input_shape=(cfg.resolution, cfg.resolution, cfg.in_channels),
        num_classes=cfg.num_classes,
        layers=tuple(layers),
    )
