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

Flash: the size of the file the exporter ships (tensor names stripped) is modelled from what it
stores (constant data, shapes, quantization vectors, operand lists) plus per-table overheads
calibrated on converted models (:data:`FLASH_OVERHEAD`); what they miss (most likely alignment
padding) varies from file to file, hence flash is an estimate, unlike the arena. A patched
layer's biases share one buffer: the exporter gives each layer one int8 range over all its
patches, so their biases agree.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgekit.estimate.tflite_file import ModelInfo, OperatorInfo, SubgraphInfo, TensorInfo

_BYTES = {"int8": 1, "int32": 4}
# The converter's names for constants it makes or merges ("arith.constant12") and for captured
# ones ("Const_46"): the synthesised graph reads like the converted one, though flash no longer
# counts names (the exporter strips them).
ARITH_CONSTANT = "arith.constant12"
CAPTURED_CONSTANT = "Const_NN"

# Hundredths of a byte per flatbuffer object beyond its payload (tables, vtables, offsets,
# padding), fitted by least squares on 200 random models of both spaces, converted by
# TensorFlow 2.21 and compacted as shipped (``benchmarks/memory_config_accuracy.py --seed 7
# --fit-flash``); hundredths, because rounded to whole bytes they would add up to a bias of
# ~100 B on a model of a few hundred tensors. Per-op values are per opcode (its options table);
# they are calibration constants, not layouts: the negative ones absorb what every tiny-vit
# model shares (e.g. one RESHAPE per model).
FLASH_OVERHEAD: dict[str, int] = {
    "tensor": 2421, "quantized_tensor": 88, "buffer": 1434, "zero_point_vector": -37,
    "opcode_kind": 6121, "constant": 22374, "ADD": 4506, "BATCH_MATMUL": 7453,
    "CONCATENATION": 4653, "CONV_2D": 8703, "DEPTHWISE_CONV_2D": 9137, "FULLY_CONNECTED": 6373,
    "HARD_SWISH": 3864, "MEAN": 13156, "MUL": 7736, "PAD": 6202, "RESHAPE": -12337,
    "RSQRT": -4609, "SOFTMAX": 3726, "STRIDED_SLICE": 6134, "SUB": -4609,
}  # fmt: skip


@dataclass(eq=False)
class Tensor:
    """A tensor under construction (identity matters, not value)."""

    shape: tuple[int, ...]
    dtype: str = "int8"
    constant: bool = False
    quant_channels: int = 1  # 0: no quantization (int32 shapes, axes, paddings ...)
    role: str = "activation"  # activation | input | weight | bias | zero_bias | index | other
    name: str = ""
    index: int = -1
    # Identity before quantization, for merging identical ops: a layer's bias is one float
    # constant, quantized once per op that survives.
    merge_as: tuple | None = None
    # Constants merged by value across the whole graph (shapes, axes, the LayerNorm epsilon).
    merge_key: tuple | None = None
    # Constants with equal data share one flatbuffer buffer: zero biases of one length, and
    # a patched layer's biases when its input has the same scale in every patch.
    same_data_as: tuple | None = None

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
        self._captures = 0
        self.input: Tensor | None = None

    # --- TensorFlow side ----------------------------------------------------------------------
    def node(self, name: str, *inputs: str) -> str:
        assert name not in self.nodes, name
        self.nodes[name] = inputs
        return name

    def capture(self) -> str:
        """A captured constant (weights, biases): ``Const_N`` sorts before every op name."""
        self._captures += 1
        return self.node(f"Const_{self._captures}")

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
    ) -> Tensor:
        if merge_key is not None and merge_key in self._merged:
            merged = self._merged[merge_key]
            merged.name = ARITH_CONSTANT  # a merged constant loses its TensorFlow name
            return merged
        tensor = Tensor(tuple(shape), dtype, True, quant_channels, role, name)
        tensor.merge_as, tensor.merge_key, tensor.same_data_as = merge_as, merge_key, same_data_as
        if role == "zero_bias":
            tensor.same_data_as = ("zero bias", tensor.shape)
        self.constants.append(tensor)
        if merge_key is not None:
            self._merged[merge_key] = tensor
        return tensor

    def index_constant(
        self, values: tuple[int, ...], shape: tuple[int, ...], name: str = ARITH_CONSTANT
    ) -> Tensor:
        """An int32 constant (shape, axis, paddings, slice bounds), merged by value."""
        return self.constant(shape, "int32", 0, "index", name, merge_key=("int32", shape, values))

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
def _align4(n: int) -> int:
    return -(-n // 4) * 4


def tensor_bytes(tensor: Tensor) -> tuple[int, int]:
    """Payload bytes of a tensor's table (shape, quantization; the exporter strips names) and
    of its data buffer. A per-channel zero-point vector is not included: see
    :func:`zero_point_key`."""
    stored = 8 + 4 * len(tensor.shape)
    if tensor.quant_channels:
        stored += 4 + 4 * tensor.quant_channels  # float scales
        if zero_point_key(tensor) is None:
            stored += 4 + 8 * tensor.quant_channels  # int64 zero points of its own
    return stored, (_align4(4 + tensor.nbytes) if tensor.constant else 0)


def zero_point_key(tensor: Tensor) -> tuple | None:
    """The exporter stores each per-channel zero-point vector (all zeros) once per channel
    count (``compact_model``): tensors with equal keys share one."""
    channels = tensor.quant_channels
    return ("zero_points", channels) if channels > 1 else None


def op_bytes(op: Op) -> int:
    return 12 + 4 * len(op.inputs)


@dataclass
class FlashTerms:
    """The flatbuffer's payload bytes and object counts, summed over (part of) a graph."""

    payload: int = 0
    counts: Counter = field(default_factory=Counter)

    def add(self, other: FlashTerms) -> None:
        self.payload += other.payload
        self.counts.update(other.counts)

    def add_tensor(self, tensor: Tensor, with_data: bool = True) -> None:
        stored, data = tensor_bytes(tensor)
        self.payload += stored
        self.counts["tensor"] += 1
        if tensor.quant_channels:
            self.counts["quantized_tensor"] += 1
        if data and with_data:
            self.add_buffer(data)

    def add_buffer(self, data: int) -> None:
        self.payload += data
        self.counts["buffer"] += 1

    def add_zero_points(self, channels: int) -> None:
        """A shared per-channel zero-point vector (see :func:`zero_point_key`)."""
        self.payload += 4 + 8 * channels
        self.counts["zero_point_vector"] += 1

    def add_op(self, op: Op) -> None:
        self.payload += op_bytes(op)
        self.counts[op.opcode] += 1


def shared_terms(tensor: Tensor) -> list[tuple[tuple, FlashTerms]]:
    """What ``tensor`` may share with other tensors, by key, each counted once per model: its
    data buffer (``same_data_as``) and its per-channel zero points (:func:`zero_point_key`)."""
    shared = []
    if tensor.same_data_as is not None:
        buffer = FlashTerms()
        buffer.add_buffer(tensor_bytes(tensor)[1])
        shared.append((tensor.same_data_as, buffer))
    zero_points = zero_point_key(tensor)
    if zero_points is not None:
        vector = FlashTerms()
        vector.add_zero_points(tensor.quant_channels)
        shared.append((zero_points, vector))
    return shared


def flash_bytes(terms: FlashTerms, opcodes: set[str] | frozenset[str]) -> int:
    """The estimated .tflite size from payload bytes, object counts and distinct opcodes."""
    centi = 100 * terms.payload + FLASH_OVERHEAD["constant"]
    centi += FLASH_OVERHEAD["opcode_kind"] * len(opcodes)
    centi += sum(FLASH_OVERHEAD.get(kind, 0) * n for kind, n in terms.counts.items())
    return whole_bytes(centi)


def whole_bytes(centi: int) -> int:
    """Hundredths of a byte (see FLASH_OVERHEAD) to bytes, rounded."""
    return (centi + 50) // 100


def graph_flash_terms(ops: list[Op], tensors: list[Tensor]) -> FlashTerms:
    """Flash terms of a finished graph: every tensor, each distinct buffer and zero-point
    vector once, every op."""
    terms = FlashTerms()
    counted: set[tuple] = set()
    for tensor in tensors:
        terms.add_tensor(tensor, with_data=tensor.same_data_as is None)
        for key, part in shared_terms(tensor):
            if key not in counted:
                counted.add(key)
                terms.add(part)
    for op in ops:
        terms.add_op(op)
    return terms
