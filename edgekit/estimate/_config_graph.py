"""The TFLite graph our exporter and TensorFlow's converter make from a config, synthesised.

Mirrors ``edgekit.export.tiny_cnn`` / ``edgekit.export.tiny_vit`` plus what the TFLite converter
does with their graphs (checked op for op, tensor for tensor against converted models):

* Operator order: the converter imports the TensorFlow graph in *reverse post-order* of a
  depth-first search from the graph's source node that visits children in descending
  node-name order (``GetReversePostOrder`` with a by-name comparator pushes children on a stack
  in ascending order). Fused ops then take the place of their last node. So the TensorFlow node
  names are rebuilt here; they only ever get compared.
* Fusions: conv + bias add + ReLU6 -> one CONV_2D / DEPTHWISE_CONV_2D; a PAD whose zeros are
  exactly the SAME padding of its input folds into the VALID conv after it; ``matmul + bias``
  -> FULLY_CONNECTED; ``x * relu6(x + 3) / 6`` -> HARD_SWISH; a LayerNorm's ``* gamma + beta``
  folds into the FULLY_CONNECTED layers reading it when all of them have a bias.
* Identical ops are merged (MLIR's CSE keeps the first): patches whose input regions coincide
  share their first layers.
* Constants: one tensor per weight (shared by the patches using it), one quantized bias per op
  (a bias-less conv gets a zero bias, a bias-less FULLY_CONNECTED none), integer constants
  (shapes, axes, paddings, slice bounds) merged by value. Tensors are numbered input,
  constants, then op outputs in op order.

Flash: the size of the file the exporter ships is exact, not fitted: ``compact_model`` packs it
so that its size is a sum of independent parts (see :mod:`edgekit.estimate._flatbuffer`), which
each tensor, buffer and operator of the synthesised graph adds up. A patched layer's biases
share one buffer: the exporter gives each layer one int8 range over all its patches, so their
biases agree.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgekit.estimate._flatbuffer import FlashTerms, model_bytes, option_fields, table_layout
from edgekit.estimate.tflite_file import ModelInfo, OperatorInfo, SubgraphInfo, TensorInfo

_BYTES = {"int8": 1, "int32": 4}
# The converter's names for constants it makes or merges ("arith.constant12") and for captured
# ones ("Const_46"): the synthesised graph reads like the converted one, though flash no longer
# counts names (the exporter strips them).
ARITH_CONSTANT = "arith.constant12"
CAPTURED_CONSTANT = "Const_NN"


@dataclass(eq=False)
class Tensor:
    """A tensor under construction (identity matters, not value)."""

    shape: tuple[int, ...]
    dtype: str = "int8"
    constant: bool = False
    quant_channels: int = 1  # 0: no quantization (int32 shapes, axes, paddings ...)
    quant_dimension: int = 0  # the axis of per-channel quantization (flash: a table field)
    role: str = "activation"  # activation | input | weight | bias | zero_bias | index | other
    name: str = ""
    index: int = -1
    # Identity before quantization, for merging identical ops: a layer's bias is one float
    # constant, quantized once per op that survives.
    merge_as: tuple | None = None
    # Constants merged by value across the whole graph (shapes, axes, the LayerNorm epsilon).
    merge_key: tuple | None = None
    # Constants with equal data share one flatbuffer buffer (the converter merges buffers by
    # content): those whose data the config decides (zero biases, integer constants: see
    # data_key), and a patched layer's biases (one input scale over all its patches).
    same_data_as: tuple | None = None
    # Tensors with equal keys have equal scale vectors, which the exporter stores once: a
    # patched layer's biases (zero biases too) in every patch.
    same_scales_as: tuple | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _BYTES[self.dtype]

    def describe(self) -> tuple[tuple[int, ...], str, int, bool]:
        """(shape, dtype, quantization channels, constant): what the kernels look at."""
        return self.shape, self.dtype, self.quant_channels, self.constant


@dataclass
class Op:
    opcode: str
    anchor: str  # the TensorFlow node whose position the fused op takes
    inputs: tuple[Tensor | None, ...]
    output: Tensor
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple:
        """The operator signature the arena depends on (see ``_config_arena.op_profile``)."""
        return (
            self.opcode,
            tuple(None if t is None else t.describe() for t in self.inputs),
            self.output.describe(),
            tuple(sorted(self.options.items())),
        )


class GraphBuilder:
    """Collects TensorFlow nodes (for the order) and the TFLite ops they become."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[str, ...]] = {}
        self.ops: list[Op] = []
        self.constants: list[Tensor] = []
        self._merged: dict[tuple, Tensor] = {}
        self.input: Tensor | None = None

    # --- TensorFlow side ----------------------------------------------------------------------
    def node(self, name: str, *inputs: str) -> str:
        assert name not in self.nodes, name
        self.nodes[name] = inputs
        return name

    def capture(self, name: str) -> str:
        """A captured constant (weights, biases), named as TensorFlow names it: after the op
        input that first reads it (``.../Conv2D/filter``, ``.../add/y``)."""
        return self.node(name)

    # --- TFLite side --------------------------------------------------------------------------
    def constant(
        self,
        shape: tuple[int, ...],
        dtype: str,
        quant_channels: int,
        role: str,
        name: str,
        *,
        merge_key: tuple | None = None,
        merge_as: tuple | None = None,
        same_data_as: tuple | None = None,
        quant_dimension: int = 0,
        same_scales_as: tuple | None = None,
    ) -> Tensor:
        if merge_key is not None and merge_key in self._merged:
            merged = self._merged[merge_key]
            merged.name = ARITH_CONSTANT  # a merged constant loses its TensorFlow name
            return merged
        tensor = Tensor(tuple(shape), dtype, True, quant_channels, quant_dimension, role, name)
        tensor.merge_as, tensor.merge_key, tensor.same_data_as = merge_as, merge_key, same_data_as
        tensor.same_scales_as = same_scales_as
        if role == "zero_bias":
            tensor.same_data_as = data_key((0,) * tensor.shape[0])
        self.constants.append(tensor)
        if merge_key is not None:
            self._merged[merge_key] = tensor
        return tensor

    def index_constant(
        self, values: tuple[int, ...], shape: tuple[int, ...], name: str = ARITH_CONSTANT
    ) -> Tensor:
        """An int32 constant (shape, axis, paddings, slice bounds), merged by value."""
        return self.constant(
            shape, "int32", 0, "index", name, merge_key=("int32", shape, values),
            same_data_as=data_key(values),
        )  # fmt: skip

    def op(
        self,
        opcode: str,
        anchor: str,
        inputs: tuple[Tensor | None, ...],
        shape: tuple[int, ...],
        name: str,
        **options: Any,
    ) -> Tensor:
        output = Tensor(tuple(shape), name=name)
        self.ops.append(Op(opcode, anchor, inputs, output, options))
        return output

    # --- the finished graph ---------------------------------------------------------------------
    def op_order(self) -> list[Op]:
        """The ops in converter order, identical ops merged (the first one is kept)."""
        order = reverse_post_order(self.nodes)
        position = {name: i for i, name in enumerate(order)}
        replaced: dict[int, Tensor] = {}
        first: dict[tuple, Op] = {}
        kept = []
        for op in sorted(self.ops, key=lambda op: position[op.anchor]):
            op.inputs = tuple(None if t is None else replaced.get(id(t), t) for t in op.inputs)
            key = (
                op.opcode,
                tuple(None if t is None else (t.merge_as or id(t)) for t in op.inputs),
                op.output.shape,
                tuple(sorted(op.options.items())),
            )
            if key in first:
                replaced[id(op.output)] = first[key].output
                continue
            first[key] = op
            kept.append(op)
        return kept

    def finish(self) -> tuple[list[Op], list[Tensor]]:
        """The ops in order and every tensor in index order (indices assigned)."""
        assert self.input is not None
        ops = self.op_order()
        used = {id(t) for op in ops for t in op.inputs if t is not None}
        constants = [t for t in self.constants if id(t) in used]
        tensors: list[Tensor] = [self.input, *constants, *(op.output for op in ops)]
        for i, tensor in enumerate(tensors):
            tensor.index = i
        return ops, tensors


def data_key(int32_values: tuple[int, ...]) -> tuple:
    """The key of a constant buffer holding these int32 values: equal bytes, equal keys (an
    int32 zero bias and a slice's begin of zeros share a buffer)."""
    return ("int32 data", int32_values)


def model_info(ops: list[Op], tensors: list[Tensor]) -> ModelInfo:
    """A :class:`ModelInfo` of a finished graph, for the file-based memory model's code."""
    infos = tuple(
        TensorInfo(
            index=t.index,
            name=t.name,
            shape=t.shape,
            dtype=t.dtype,
            nbytes=t.nbytes,
            data_bytes=t.nbytes if t.constant else 0,
            buffer=t.index + 1,
            is_variable=False,
            quant_channels=t.quant_channels,
            scale_count=t.quant_channels,
            zero_point_count=t.quant_channels,
        )
        for t in tensors
    )
    operators = tuple(
        OperatorInfo(
            index=i,
            opcode=op.opcode,
            inputs=tuple(-1 if t is None else t.index for t in op.inputs),
            outputs=(op.output.index,),
            options=op.options,
        )
        for i, op in enumerate(ops)
    )
    graph = SubgraphInfo(infos, operators, (0,), (ops[-1].output.index,))
    return ModelInfo(
        file_bytes=0, subgraphs=(graph,), offline_offsets=None, buffer_count=len(tensors) + 3
    )


def reverse_post_order(nodes: dict[str, tuple[str, ...]]) -> list[str]:
    """TensorFlow's ``GetReversePostOrder`` with a by-name comparator, from the source node."""
    children: dict[str, list[str]] = {name: [] for name in nodes}
    roots = []
    for name, inputs in nodes.items():
        if not inputs:
            roots.append(name)
        for source in inputs:
            children[source].append(name)
    source_node = "\0source"
    children[source_node] = roots
    visited: set[str] = set()
    post: list[str] = []
    stack: list[tuple[str, bool]] = [(source_node, False)]
    while stack:
        name, leaving = stack.pop()
        if leaving:
            post.append(name)
            continue
        if name in visited:
            continue
        visited.add(name)
        stack.append((name, True))
        for child in sorted(children[name]):
            if child not in visited:
                stack.append((child, False))
    post.reverse()
    return [name for name in post if name != source_node]


# --- flash ----------------------------------------------------------------------------------
def tensor_terms(tensor: Tensor) -> FlashTerms:
    """Flash of a tensor's own objects: its table, shape, quantization and buffer table (with
    its data unless the data is shared, see :func:`shared_terms`). Cached: do not modify."""
    own_data = tensor.constant and tensor.same_data_as is None
    return _tensor_terms(
        len(tensor.shape), tensor.quant_channels, tensor.quant_dimension,
        zero_point_key(tensor) is None, tensor.same_scales_as is None,
        tensor.nbytes if own_data else None,
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _tensor_terms(
    rank: int,
    quant_channels: int,
    quant_dimension: int,
    own_zero_points: bool,
    own_scales: bool,
    data: int | None,
) -> FlashTerms:
    terms = FlashTerms()
    terms.tensor(rank, quant_channels, quant_dimension, own_zero_points, own_scales)
    terms.buffer(data)
    return terms


def zero_point_key(tensor: Tensor) -> tuple | None:
    """The exporter stores each per-channel zero-point vector (all zeros) once per channel
    count (``compact_model``): tensors with equal keys share one."""
    channels = tensor.quant_channels
    return ("zero_points", channels) if channels > 1 else None


def shared_terms(tensor: Tensor) -> list[tuple[tuple, FlashTerms]]:
    """What ``tensor`` may share with other tensors, by key, each counted once per model: its
    data buffer (``same_data_as``: the first tensor's buffer holds the data, the others' are
    empty), its per-channel zero points (:func:`zero_point_key`) and its scale vector
    (``same_scales_as``)."""
    shared = []
    if tensor.same_data_as is not None:
        data = FlashTerms()
        data.buffer(tensor.nbytes)
        data.bytes -= table_layout(())[0]  # replaces one tensor's empty buffer table
        shared.append((tensor.same_data_as, data))
    zero_points = zero_point_key(tensor)
    if zero_points is not None:
        vector = FlashTerms()
        vector.int64_vector(tensor.quant_channels)
        shared.append((zero_points, vector))
    if tensor.same_scales_as is not None:
        scales = FlashTerms()
        scales.vector(tensor.quant_channels, filler=True)
        shared.append((tensor.same_scales_as, scales))
    return shared


def op_terms(op: Op) -> FlashTerms:
    """Flash of an operator's operand lists and options table (its own table is counted per
    opcode by ``model_bytes``). Cached: do not modify."""
    first_rank = 0 if op.inputs[0] is None else len(op.inputs[0].shape)
    return _op_terms(op.opcode, len(op.inputs), tuple(op.options.items()), first_rank)


@functools.lru_cache(maxsize=4096)
def _op_terms(opcode: str, inputs: int, options: tuple, first_rank: int) -> FlashTerms:
    terms = FlashTerms()
    values = _option_values(opcode, dict(options), first_rank)
    terms.operator_parts(inputs, option_fields(opcode, values))
    return terms


def _option_values(opcode: str, options: dict[str, Any], first_rank: int) -> dict[str, Any]:
    """The builtin options the converter writes for a synthesised op (only whether each
    differs from the schema default matters); ``first_rank``: its first input's rank."""
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {
            "padding": int(options["padding"] == "VALID"),
            "stride_w": options["stride"],
            "stride_h": options["stride"],
            "fused_activation_function": 3 if options["relu6"] else 0,  # RELU6
            "depth_multiplier": 1,
        }
    if opcode == "STRIDED_SLICE":
        return {"begin_mask": 0b1001, "end_mask": 0b1001}  # x[:, y0:y1, x0:x1, :]
    if opcode == "FULLY_CONNECTED":
        return {"keep_num_dims": first_rank > 2}
    if opcode == "SOFTMAX":
        return {"beta": 1.0}
    return options


def op_counts(ops: list[Op]) -> dict[str, int]:
    """Operators per opcode."""
    return dict(Counter(op.opcode for op in ops))


def graph_flash_bytes(ops: list[Op], tensors: list[Tensor]) -> int:
    """The size of the file the exporter ships for a finished graph."""
    terms = FlashTerms()
    counted: set[tuple] = set()
    for tensor in tensors:
        terms.add(tensor_terms(tensor))
        for key, part in shared_terms(tensor):
            if key not in counted:
                counted.add(key)
                terms.add(part)
    for op in ops:
        terms.add(op_terms(op))
    return model_bytes(terms, op_counts(ops), ops[0].opcode, len(tensors))
