"""The exact size of the .tflite file the exporter ships, from what it holds.

``edgekit.export.compact_model`` packs every model with a flatbuffers builder laid out so that
the file's size is a sum of independent parts (see it for the two rules that make it so):

* every object (vector, string, table) starts 4-byte aligned and its size depends only on
  its own content: a vector of ``n`` elements of ``b`` bytes takes ``4 + align_up(n * b, 4)``, a
  table its fields (present when not the schema default) with their alignment padding;
* every distinct table layout writes one vtable (``4 + 2 * slots`` bytes, padded to 4), and
  tables of any kind with the same layout share it;
* the int64 zero-point vectors, the only 8-byte aligned objects, come first, each followed
  by one "filler" (a vector of ``4 (mod 8)`` bytes: an even-rank shape, an even-length scale
  vector), so that they pad only when the fillers run out: 4 bytes for each such vector.

:class:`FlashTerms` sums these over (part of) a graph; :func:`model_bytes` adds what every
model has once (operator codes, operator tables, the subgraph, buffers, metadata).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgekit.estimate.layout import align_up

Fields = tuple[tuple[int, int], ...]  # (slot, bytes) of the present fields, in packing order
Layout = tuple[int, ...]  # a table's vtable: field offsets by slot, then the object size

# Operator -> (builtin code, version is the schema default 1, has a builtin options table),
# as TensorFlow 2.21's converter writes them for our int8 models.
OPCODES: dict[str, tuple[int, bool, bool]] = {
    "ADD": (0, False, True), "CONCATENATION": (2, False, True), "CONV_2D": (3, False, True),
    "DEPTHWISE_CONV_2D": (4, False, True), "FULLY_CONNECTED": (9, False, True),
    "MUL": (18, False, True), "RESHAPE": (22, True, False), "SOFTMAX": (25, False, True),
    "PAD": (34, False, True), "MEAN": (40, False, True), "SUB": (41, False, True),
    "STRIDED_SLICE": (45, False, True), "RSQRT": (76, False, False),
    "HARD_SWISH": (117, True, False), "BATCH_MATMUL": (126, False, True),
}  # fmt: skip

# Builtin options tables: (option, slot, bytes, schema default), in the order the generated
# packer adds them (schema order).
_CONV = (("padding", 0, 1, 0), ("stride_w", 1, 4, 0), ("stride_h", 2, 4, 0),
         ("fused_activation_function", 3, 1, 0), ("dilation_w_factor", 4, 4, 1),
         ("dilation_h_factor", 5, 4, 1), ("quantized_bias_type", 6, 1, 0))  # fmt: skip
_DEPTHWISE = (("padding", 0, 1, 0), ("stride_w", 1, 4, 0), ("stride_h", 2, 4, 0),
              ("depth_multiplier", 3, 4, 0), ("fused_activation_function", 4, 1, 0),
              ("dilation_w_factor", 5, 4, 1), ("dilation_h_factor", 6, 4, 1))  # fmt: skip
_ACTIVATION_AND_POT = (("fused_activation_function", 0, 1, 0), ("pot_scale_int16", 1, 1, 1))
OPTION_FIELDS: dict[str, tuple[tuple[str, int, int, Any], ...]] = {
    "CONV_2D": _CONV,
    "DEPTHWISE_CONV_2D": _DEPTHWISE,
    "ADD": _ACTIVATION_AND_POT,
    "SUB": _ACTIVATION_AND_POT,
    "MUL": (("fused_activation_function", 0, 1, 0),),
    "CONCATENATION": (("axis", 0, 4, 0), ("fused_activation_function", 1, 1, 0)),
    "STRIDED_SLICE": (("begin_mask", 0, 4, 0), ("end_mask", 1, 4, 0),
                      ("ellipsis_mask", 2, 4, 0), ("new_axis_mask", 3, 4, 0),
                      ("shrink_axis_mask", 4, 4, 0), ("offset", 5, 1, 0)),
    "MEAN": (("keep_dims", 0, 1, 0),),
    "FULLY_CONNECTED": (("fused_activation_function", 0, 1, 0), ("weights_format", 1, 1, 0),
                        ("keep_num_dims", 2, 1, 0), ("asymmetric_quantize_inputs", 3, 1, 0),
                        ("quantized_bias_type", 4, 1, 0)),
    "SOFTMAX": (("beta", 0, 4, 0.0),),
    "BATCH_MATMUL": (("adj_x", 0, 1, 0), ("adj_y", 1, 1, 0),
                     ("asymmetric_quantize_inputs", 2, 1, 0)),
    "PAD": (),
}  # fmt: skip

# Present fields of the tables every model has (slot, bytes), in packing order.
_QUANTIZATION = ((2, 4), (3, 4))  # scale, zero_point
_QUANTIZED_DIMENSION = (6, 4)
_TENSOR = ((0, 4), (1, 1), (2, 4), (4, 4), (8, 1))  # shape, type, buffer, quantization, has_rank
_BUFFER_WITH_DATA = ((0, 4),)
_OPERATOR_INDEX = (0, 4)
_OPERATOR_LISTS = ((1, 4), (2, 4))  # inputs, outputs
_OPERATOR_OPTIONS = ((3, 1), (4, 4))  # builtin_options_type, builtin_options
_SUBGRAPH = ((0, 4), (1, 4), (2, 4), (3, 4))  # tensors, inputs, outputs, operators
_MODEL = ((0, 4), (1, 4), (2, 4), (4, 4), (6, 4))  # version, codes, subgraphs, buffers, metadata
_METADATA = ((0, 4), (1, 4))  # name, buffer
# The converter's metadata: (name, bytes of its buffer).
_METADATA_BUFFERS = (("min_runtime_version", 16), ("CONVERSION_METADATA", 96))
_FILE_HEADER = 8  # root offset and file identifier


def vector_bytes(count: int, item_bytes: int = 4) -> int:
    """A vector: its 4-byte length and its elements, padded to 4."""
    return 4 + align_up(count * item_bytes, 4)


def string_bytes(length: int) -> int:
    return 4 + align_up(length + 1, 4)


@functools.cache
def table_layout(fields: Fields) -> tuple[int, Layout]:
    """(object bytes, vtable) of a table whose present ``fields`` are packed in this order,
    from a 4-byte aligned position (as the builder prepends them)."""
    end = 0
    where = {}
    for slot, size in fields:
        end += -end % size + size
        where[slot] = end
    end += -end % 4 + 4  # the offset to the vtable
    slots = max(where) + 1 if where else 0
    return end, (*(end - where[s] if s in where else 0 for s in range(slots)), end)


def vtable_bytes(layout: Layout) -> int:
    return align_up(2 * (len(layout) + 1), 4)


def option_fields(opcode: str, values: dict[str, Any]) -> Fields | None:
    """The present fields of an operator's builtin options table (None: it has none)."""
    if not OPCODES[opcode][2]:
        return None
    return tuple(
        (slot, size)
        for name, slot, size, default in OPTION_FIELDS[opcode]
        if values.get(name, default) != default
    )


@dataclass
class FlashTerms:
    """Bytes of (part of) a model's objects, and what is counted once per model: the table
    layouts (one vtable each) and the int64 vectors and fillers of the file's first part."""

    bytes: int = 0
    layouts: set[Layout] = field(default_factory=set)
    int64_vectors: int = 0
    fillers: int = 0

    def add(self, other: FlashTerms) -> None:
        self.bytes += other.bytes
        self.layouts |= other.layouts
        self.int64_vectors += other.int64_vectors
        self.fillers += other.fillers

    def table(self, fields: Fields) -> None:
        size, layout = table_layout(fields)
        self.bytes += size
        self.layouts.add(layout)

    def vector(self, count: int, item_bytes: int = 4, filler: bool = False) -> None:
        self.bytes += vector_bytes(count, item_bytes)
        if filler and (4 + count * item_bytes) % 8 == 4:
            self.fillers += 1

    def int64_vector(self, count: int) -> None:
        self.bytes += 4 + 8 * count
        self.int64_vectors += 1

    def tensor(
        self,
        rank: int,
        quant_channels: int,
        quant_dimension: int = 0,
        own_zero_points: bool = True,
        own_scales: bool = True,
    ) -> None:
        """A tensor's table, shape and quantization (not its buffer). ``quant_channels`` 0:
        no quantization (an empty table); ``own_zero_points`` / ``own_scales``: its
        zero-point / scale vector is its own, not one it shares with other tensors."""
        self.vector(rank, filler=True)
        if quant_channels:
            if own_scales:
                self.vector(quant_channels, filler=True)
            if own_zero_points:
                self.int64_vector(quant_channels)
            quantization = _QUANTIZATION + ((_QUANTIZED_DIMENSION,) if quant_dimension else ())
            self.table(quantization)
        else:
            self.table(())
        self.table(_TENSOR)

    def buffer(self, data_bytes: int | None) -> None:
        """A buffer table, with ``data_bytes`` of data (None: an empty buffer)."""
        if data_bytes is None:
            self.table(())
        else:
            self.vector(data_bytes, 1)
            self.table(_BUFFER_WITH_DATA)

    def operator_parts(self, inputs: int, options: Fields | None) -> None:
        """An operator's operand lists and options table; :func:`model_bytes` adds its table,
        whose size depends on its opcode's index."""
        self.vector(inputs)
        self.vector(1)
        if options is not None:
            self.table(options)


def operator_fields(first_opcode: bool, has_options: bool) -> Fields:
    """An operator table's present fields: the opcode index is left out when it is 0."""
    fields = (() if first_opcode else (_OPERATOR_INDEX,)) + _OPERATOR_LISTS
    return fields + (_OPERATOR_OPTIONS if has_options else ())


def model_bytes(
    terms: FlashTerms, op_counts: Mapping[str, int], first_opcode: str, tensor_count: int
) -> int:
    """The file's size: ``terms`` of every tensor, buffer and operator (its parts), plus the
    operator tables, operator codes, subgraph, metadata and buffer list. ``op_counts``:
    operators per opcode; ``first_opcode``: the first operator's (the converter numbers
    opcodes by first use, and index 0 is not stored)."""
    frame_bytes, frame_layouts = model_frame(frozenset(op_counts), first_opcode)
    layouts = terms.layouts | frame_layouts
    return file_bytes(
        terms.bytes + frame_bytes + counted_bytes(op_counts, first_opcode, tensor_count),
        sum(vtable_bytes(layout) for layout in layouts),
        terms.int64_vectors,
        terms.fillers,
    )


@functools.cache
def model_frame(opcodes: frozenset[str], first_opcode: str) -> tuple[int, frozenset[Layout]]:
    """Bytes and table layouts that a model with these opcodes has whatever its size: operator
    codes, the subgraph and model tables, buffer 0 and the metadata."""
    frame = FlashTerms()
    for opcode in opcodes:
        code, default_version, has_options = OPCODES[opcode]
        frame.layouts.add(table_layout(operator_fields(opcode == first_opcode, has_options))[1])
        code_fields = ((0, 1),) if code else ()
        code_fields += () if default_version else ((2, 4),)
        frame.table(code_fields + (((3, 4),) if code else ()))
    frame.vector(len(opcodes))  # operator codes
    frame.vector(1)  # subgraph inputs
    frame.vector(1)  # subgraph outputs
    frame.table(_SUBGRAPH)
    frame.vector(1)  # subgraphs
    frame.buffer(None)  # buffer 0, empty by convention
    for name, data in _METADATA_BUFFERS:
        frame.buffer(data)
        frame.bytes += string_bytes(len(name))
        frame.table(_METADATA)
    frame.vector(len(_METADATA_BUFFERS))
    frame.table(_MODEL)
    return frame.bytes, frozenset(frame.layouts)


def counted_bytes(op_counts: Mapping[str, int], first_opcode: str, tensor_count: int) -> int:
    """Operator tables and the lists of tensors, operators and buffers."""
    size = lists_bytes(tensor_count, sum(op_counts.values()))
    for opcode, count in op_counts.items():
        size += count * operator_bytes(opcode, opcode == first_opcode)
    return size


def lists_bytes(tensor_count: int, operator_count: int) -> int:
    """The lists of tensors, operators and buffers (one buffer per tensor, one empty, the
    metadata's)."""
    # three vectors of 4-byte items (vector_bytes, folded: a search calls this per config)
    return 12 + 4 * (2 * tensor_count + 1 + len(_METADATA_BUFFERS) + operator_count)


@functools.cache
def operator_bytes(opcode: str, first: bool) -> int:
    """An operator's table (``first``: of the model's first operator's opcode)."""
    return table_layout(operator_fields(first, OPCODES[opcode][2]))[0]


def file_bytes(object_bytes: int, vtables: int, int64_vectors: int, fillers: int) -> int:
    """The file from its objects' and vtables' bytes: the int64 vectors that found no filler
    pad 4 bytes each, then the header and the final alignment."""
    size = object_bytes + vtables + 4 * max(0, int64_vectors - 1 - fillers)
    alignment = 8 if int64_vectors else 4
    return align_up(size + _FILE_HEADER, alignment)
