"""TensorFlow / LiteRT side of the XNNPACK sparse export.

The graph is laid out for XNNPACK's sparse inference (its NCHW rewrite): every padded conv is an
explicit PAD (symmetric ``kernel // 2``) followed by a VALID conv, which XNNPACK fuses into the
conv's own padding; TensorFlow "SAME" padding would reach XNNPACK as a SAME flag, which its NCHW
depthwise kernels reject. The float32 conversion with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``
stores every weight with at least 30% zeros in TFLite's sparse format (CSR over the last axis of
the OHWI filter) behind a DENSIFY op. LiteRT's XNNPACK delegate densifies such weights once at
load and then creates its runtime with ``XNN_FLAG_HINT_SPARSE_INFERENCE``; only that hint lets
XNNPACK switch the 1x1 convs to its sparse kernels (and only without AVX on x86).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgekit.export.errors import ExportError
from edgekit.export.graph import TfGraph

if TYPE_CHECKING:
    from edgekit.export._sparse_net import XnnpackCnn

logger = logging.getLogger(__name__)

# What XNNPACK's NCHW cluster may hold (PAD fuses into the conv after it, RELU6 into the conv).
XNNPACK_SPARSE_OPS = frozenset(
    {
        "PAD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "MEAN",
        "FULLY_CONNECTED",
        "DENSIFY",
    }
)


def build_graph(net: XnnpackCnn, explicit_padding: bool = True) -> TfGraph:
    """The TensorFlow graph of ``net`` (eval mode): NHWC, explicit PAD + VALID convs.

    ``explicit_padding=False`` uses TensorFlow "SAME" padding instead (the int8 exporter's
    layout; asymmetric for stride 2, so not ``net``'s function): a control that XNNPACK's
    sparse path rejects, for benchmarks."""
    import tensorflow as tf

    if net.batchnorm:
        raise ExportError("fold the network's BatchNorm first (fold_batchnorm)")
    cfg = net.config
    constants = []
    for index, layer in enumerate(net.layers):
        kernels = []
        convs = net.convs(index)
        for conv in convs:
            weight = conv.weight.detach()
            # depthwise (C, 1, k, k) -> (k, k, C, 1); dense (out, in, k, k) -> (k, k, in, out)
            order = (2, 3, 0, 1) if layer.op == "depthwise_conv2d" else (2, 3, 1, 0)
            kernels.append(tf.constant(weight.permute(*order).contiguous().numpy()))
        constants.append((layer, kernels, tf.constant(convs[-1].bias.detach().numpy())))
    fc_weight = tf.constant(net.classifier.weight.detach().numpy().T.copy())
    fc_bias = tf.constant(net.classifier.bias.detach().numpy())

    def forward(image: tf.Tensor) -> tf.Tensor:
        x = image
        skip_sources = {layer.residual_from for layer in net.layers if layer.residual_from}
        skips: dict[str, tf.Tensor] = {}
        for layer, kernels, bias in constants:
            with tf.name_scope(layer.name):
                if layer.name in skip_sources:
                    skips[layer.name] = x
                pad = layer.kernel // 2
                if pad and explicit_padding:
                    x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
                padding = "VALID" if explicit_padding else "SAME"
                if layer.op == "depthwise_conv2d":
                    stride = [1, layer.stride, layer.stride, 1]
                    x = tf.nn.depthwise_conv2d(x, kernels[0], stride, padding)
                else:
                    for kernel in kernels:
                        x = tf.nn.conv2d(x, kernel, layer.stride, padding)
                x = x + bias
                if layer.act:
                    x = tf.nn.relu6(x)
                if layer.residual_from:
                    x = x + skips.pop(layer.residual_from)
        with tf.name_scope("pool"):
            x = tf.reduce_mean(x, axis=[1, 2])
        with tf.name_scope("classifier"):
            return tf.matmul(x, fc_weight) + fc_bias

    return TfGraph(
        forward=forward,
        input_shape=(cfg.resolution, cfg.resolution, 3),
        num_classes=cfg.num_classes,
        layers=(*(layer.name for layer in net.layers), "pool", "classifier"),
    )


def convert_float(graph: TfGraph, sparse: bool) -> bytes:
    """float32 .tflite of ``graph``; with ``sparse`` its weights with >= 30% zeros are stored
    in TFLite's sparse format behind DENSIFY ops."""
    import tensorflow as tf

    from edgekit.export.convert import _quiet_native_stderr

    holder = tf.Module()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.concrete_function], holder)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    with warnings.catch_warnings(), _quiet_native_stderr():
        warnings.simplefilter("ignore", UserWarning)
        try:
            model = converter.convert()
        except Exception as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise ExportError(
                f"float32 TFLite conversion failed: {type(e).__name__}: {first}"
            ) from e
    return bytes(model)


@dataclass(frozen=True)
class SparseTensorInfo:
    """One constant stored in TFLite's sparse format."""

    name: str
    shape: tuple[int, ...]
    stored_values: int  # non-zero values (or blocks x block size) kept
    dense_values: int
    block_map: tuple[int, ...]  # dimensions split into blocks (empty: element-wise CSR)
    block_size: tuple[int, ...]


@dataclass(frozen=True)
class ModelFacts:
    """What a float32 sparse (or dense) .tflite holds."""

    op_counts: dict[str, int]
    sparse_tensors: tuple[SparseTensorInfo, ...]
    densify_ops: int


def inspect_model(model: bytes) -> ModelFacts:
    """Op counts and the sparse-format tensors of ``model`` (read with TFLite's schema)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    if len(root.subgraphs) != 1:
        raise ExportError(f"the converted model has {len(root.subgraphs)} subgraphs, expected 1")
    names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in root.operatorCodes]
    graph = root.subgraphs[0]
    ops = Counter(names[codes[op.opcodeIndex]] for op in graph.operators)
    sparse = []
    for tensor in graph.tensors:
        if tensor.sparsity is None:
            continue
        values = root.buffers[tensor.buffer].data
        item = np.dtype(np.float32).itemsize
        sparse.append(
            SparseTensorInfo(
                name=tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name,
                shape=tuple(int(d) for d in tensor.shape),
                stored_values=0 if values is None else len(values) // item,
                dense_values=int(np.prod(tensor.shape)),
                block_map=tuple(
                    int(d)
                    for d in (
                        tensor.sparsity.blockMap if tensor.sparsity.blockMap is not None else ()
                    )
                ),
                block_size=tuple(
                    int(m.denseSize) for m in tensor.sparsity.dimMetadata[len(tensor.shape) :]
                ),
            )
        )
    return ModelFacts(dict(sorted(ops.items())), tuple(sparse), ops.get("DENSIFY", 0))


def check_sparse_ops(facts: ModelFacts) -> None:
    """Raise ExportError when the model holds an op outside XNNPACK's sparse (NCHW) path."""
    outside = sorted(set(facts.op_counts) - XNNPACK_SPARSE_OPS)
    if outside:
        raise ExportError(
            f"op(s) {outside} are outside XNNPACK's sparse-inference path; expected only "
            f"{sorted(XNNPACK_SPARSE_OPS)}"
        )


def litert_logits(model: bytes, images_nhwc: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Float logits of ``images_nhwc`` in LiteRT (XNNPACK delegate applied by default)."""
    from edgekit.export.verify import run_litert

    return run_litert(model, images_nhwc, num_threads=num_threads)
