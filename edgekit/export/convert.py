"""Full-integer conversion of a :class:`~edgekit.export.graph.TfGraph` and the op check.

``convert_int8`` runs TensorFlow's TFLite converter with post-training full-integer
quantization: int8 input and output, per-channel int8 weights, int32 biases, activation ranges
calibrated on a representative set. ``check_ops`` then rejects anything TFLite Micro cannot run
in int8, naming the op and the layer (name scope) that produced it, and ``compact_model``
drops the names and repeated zero points from what goes to the board.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.export.errors import ExportError, UnsupportedOpError

if TYPE_CHECKING:
    import numpy as np

    from edgekit.export.graph import TfGraph

logger = logging.getLogger(__name__)

# Builtin ops that TFLite Micro's op resolver registers with int8 kernels.
TFLM_INT8_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "CONCATENATION", "CONV_2D",
    "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "EXPAND_DIMS", "FULLY_CONNECTED",
    "GATHER", "HARD_SWISH", "L2_NORMALIZATION", "LEAKY_RELU", "LOGISTIC", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "PACK", "PAD", "PADV2", "PRELU",
    "QUANTIZE", "REDUCE_MAX", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SHAPE", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND",
    "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK", "ZEROS_LIKE",
})  # fmt: skip
# Tensor types an int8 model may compute with: int8 activations; int8 weights and int32
# biases, shapes and axes as constants.
_ALLOWED_ACTIVATION_TYPES = frozenset({"int8"})
_ALLOWED_CONSTANT_TYPES = frozenset({"int8", "int32"})


@dataclass(frozen=True)
class OpRecord:
    """One op of a converted model: its TFLite builtin and the layer it came from."""

    index: int
    op: str
    layer: str | None
    output_shapes: tuple[tuple[int, ...], ...]


def layer_of(tensor_name: str, layers: Sequence[str]) -> str | None:
    """The layer (name scope) a TFLite tensor name comes from, e.g.
    ``"patch0_1/stages.0.0.dw/Relu6;..."`` -> ``"stages.0.0.dw"``; the longest match wins."""
    scopes = {part for name in tensor_name.split(";") for part in name.split("/")}
    found = [layer for layer in layers if layer in scopes]
    if not found:  # scopes of sub-steps (``blocks.0.attn.q.head1``) name a layer's child
        found = [
            layer for layer in layers if any(scope.startswith(layer + ".") for scope in scopes)
        ]
    return max(found, key=len) if found else None


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[list[str]]:
    """Collect what native code (the MLIR converter) prints to file descriptor 2."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines += log.read().decode(errors="replace").splitlines()


def convert_int8(graph: TfGraph, representative: np.ndarray) -> bytes:
    """Full-integer .tflite of ``graph``: int8 input and output, per-channel weights, activation
    ranges calibrated on ``representative`` (NHWC float images at the model's input size)."""
    import numpy as np
    import tensorflow as tf

    expected = (1, *graph.input_shape)
    if representative.ndim != 4 or representative.shape[1:] != expected[1:]:
        raise ExportError(
            f"representative images of shape {representative.shape}: expected "
            f"(N, {', '.join(map(str, graph.input_shape))})"
        )
    if len(representative) == 0:
        raise ExportError("the representative set is empty: expected at least one image")

    def samples() -> Iterator[list[np.ndarray]]:
        for image in representative:
            yield [image[None].astype(np.float32)]

    holder = tf.Module()
    function = graph.concrete_function
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), _quiet_native_stderr() as native_log:
        # "Statistics for quantized inputs were expected": the calibration provides them.
        warnings.simplefilter("ignore", UserWarning)
        try:
            if graph.shared_range_scopes is None:
                model = converter.convert()
            else:
                model = _convert_with_shared_ranges(converter, graph.shared_range_scopes)
        except Exception as e:
            raise _conversion_error(e, native_log, graph) from e
    logger.debug("converted to int8: %d bytes", len(model))
    return bytes(model)


def _convert_with_shared_ranges(converter: Any, scopes: str) -> bytes:
    """The converter's own steps (calibrate, quantize, merge equal constant buffers) with one
    calibrated range for tensors whose names differ only in ``scopes``, and for the input and
    output of ops that only move values (PAD, STRIDED_SLICE, CONCATENATION).

    Why: a patch-based network runs each early layer once per patch, and calibrating each
    patch's copy on its own gives every copy its own scales. Then each copy quantizes its bias
    differently (one int32 buffer per patch instead of one per layer: the flash the memory
    model predicts depends on the calibration data), and patches of one map are rounded
    differently. One range per layer, the union over the patches, is what the whole-image
    network calibrates. A layer reads some patches through a PAD (at the map's border) and
    others directly, so without the second rule its bias would still come in two versions.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert, lite
    from tensorflow.lite.python import schema_py_generated as schema

    converter._experimental_calibrate_only = True
    calibrated = bytearray(converter.convert())
    model = schema.Model.GetRootAsModel(calibrated, 0)
    subgraph = model.Subgraphs(0)
    pattern = re.compile(scopes)
    group_of = list(range(subgraph.TensorsLength()))  # union-find over tensor indices

    def root(index: int) -> int:
        while group_of[index] != index:
            group_of[index] = index = group_of[group_of[index]]
        return index

    first_of_name: dict[str, int] = {}
    for index in range(subgraph.TensorsLength()):
        # The first part names the op that made the tensor; the others name ops fused into
        # it, such as a PAD folded into the conv of one patch but not of the others.
        name = pattern.sub("", subgraph.Tensors(index).Name().decode()).split(";")[0]
        group_of[index] = root(first_of_name.setdefault(name, index))
    operators = schema.BuiltinOperator
    for op_index in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(op_index)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == operators.CONCATENATION:
            moved = op.InputsAsNumpy()
        elif builtin in (operators.PAD, operators.STRIDED_SLICE):
            moved = op.InputsAsNumpy()[:1]  # the rest are paddings / begin, end, strides
        else:
            continue
        output = int(op.Outputs(0))
        for index in moved:
            group_of[root(int(index))] = root(output)
    ranges: dict[int, list[tuple[Any, Any]]] = {}
    for index in range(subgraph.TensorsLength()):
        quantization = subgraph.Tensors(index).Quantization()
        if quantization is not None and quantization.MinLength():
            # Views into ``calibrated``: writing them edits the model in place.
            pair = (quantization.MinAsNumpy(), quantization.MaxAsNumpy())
            ranges.setdefault(root(index), []).append(pair)
    for group in ranges.values():
        if len(group) > 1:
            low = min(float(lows.min()) for lows, _ in group)
            high = max(float(highs.max()) for _, highs in group)
            for lows, highs in group:
                lows[:] = low
                highs[:] = high
    # As TFLiteConverter.convert continues after calibration (TF 2.21, lite.py).
    quantized = convert.mlir_quantize(
        bytes(calibrated), False, input_data_type=tf.int8, output_data_type=tf.int8
    )
    return lite._deduplicate_readonly_buffers(quantized)


def compact_model(model: bytes) -> bytes:
    """``model`` as it ships: without the strings TFLite Micro never reads (tensor and subgraph
    names, and the signature defs that refer to tensors by name), with each distinct
    per-channel zero-point and scale vector stored once, and laid out so that its size is
    exactly predictable from its content (``edgekit.estimate._flatbuffer``).

    Every per-channel quantized tensor (int8 weights, int32 biases) has all-zero int64 zero
    points, 8 bytes per channel, and tensors of equal channel count now point at one vector:
    about as much flash as the names again (7-27% less in all for our networks); in a
    patch-based CNN every patch's copy of a layer's bias has the same scales too. TFLite Micro
    and LiteRT read a shared vector like any other. Run ``check_ops`` before: it names layers
    from the tensor names."""
    from tensorflow.lite.tools import flatbuffer_utils

    unpacked = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    flatbuffer_utils.strip_strings(unpacked)
    packer = _predictable_builder()
    _write_zero_points_first(packer, unpacked)
    packer.Finish(unpacked.Pack(packer), file_identifier=b"TFL3")
    return bytes(packer.Output())


def _predictable_builder() -> Any:
    """A flatbuffers builder whose output size is a sum of independent parts: each vtable is
    padded to 4 bytes (the builder would let the next table's 1-byte fields fill the gap,
    which makes a table's size depend on what came before it), the vectors ``_shared_vector``
    names are shared by content, and vectors written early (``early``) are reused when the
    packer asks for them."""
    from flatbuffers import builder as flatbuffers_builder

    class PredictableBuilder(flatbuffers_builder.Builder):
        def __init__(self) -> None:
            super().__init__(1024)
            self.by_content: dict[tuple[str, bytes], int] = {}
            self.early: dict[int, int] = {}  # id(array) -> its vector

        def CreateNumpyVector(self, x: np.ndarray) -> int:
            if id(x) in self.early:
                return self.early[id(x)]
            if not _shared_vector(x):
                return super().CreateNumpyVector(x)
            key = _content(x)
            if key not in self.by_content:
                self.by_content[key] = super().CreateNumpyVector(x)
            return self.by_content[key]

        def WriteVtable(self) -> int:
            table = super().WriteVtable()
            self.Pad(-self.Offset() % 4)
            return table

    return PredictableBuilder()


def _shared_vector(x: np.ndarray) -> bool:
    """Whether ``compact_model`` stores ``x`` once per distinct content: multi-element int64
    vectors (per-channel zero points, all zero) and float32 vectors (per-channel scales: a
    patched layer's bias has the same ones in every patch). Single-element ones, the
    calibrated zero point and scale of each activation, are not shared: the file's size would
    then depend on calibration, which the config-based memory model cannot know."""
    kind, itemsize = x.dtype.kind, x.dtype.itemsize
    return x.size > 1 and ((kind == "i" and itemsize == 8) or (kind == "f" and itemsize == 4))


def _content(x: np.ndarray) -> tuple[str, bytes]:
    """What makes two vectors equal for ``compact_model``: their element type and bytes."""
    return x.dtype.str, x.tobytes()


def _write_zero_points_first(packer: Any, model: Any) -> None:
    """Write the int64 zero-point vectors (8-byte aligned: where they fall decides their
    padding) at the end of the file, before anything else, each followed by a vector of 4
    (mod 8) bytes from the model's tensors (an even-rank shape, an even-length scale vector),
    so that none pads while such fillers last."""
    import numpy as np

    int64_vectors: list[np.ndarray] = []
    fillers: list[np.ndarray] = []
    seen: set[tuple[str, bytes]] = set()

    def first_of_its_content(x: np.ndarray) -> bool:
        if not _shared_vector(x):
            return True
        content = _content(x)
        if content in seen:
            return False  # the packer hands out the vector already written
        seen.add(content)
        return True

    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            quantization = tensor.quantization
            candidates = [tensor.shape]
            zero_points = None
            if quantization is not None:
                candidates.append(quantization.scale)
                zero_points = quantization.zeroPoint
            fillers += [
                c for c in candidates
                if isinstance(c, np.ndarray) and c.itemsize == 4 and c.size % 2 == 0
                and first_of_its_content(c)
            ]  # fmt: skip
            if isinstance(zero_points, np.ndarray) and first_of_its_content(zero_points):
                int64_vectors.append(zero_points)
    for i, zero_points in enumerate(int64_vectors):
        packer.early[id(zero_points)] = packer.CreateNumpyVector(zero_points)
        if i < len(fillers):
            packer.early[id(fillers[i])] = packer.CreateNumpyVector(fillers[i])


_TF_OP = re.compile(r"'tf\.([A-Za-z0-9_]+)' op")


def _conversion_error(error: Exception, native_log: list[str], graph: TfGraph) -> ExportError:
    """A one-line ExportError from a converter failure, naming the TF op and its layer."""
    text = "\n".join([str(error), *native_log])
    op_match = _TF_OP.search(text)
    if op_match is None:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        return ExportError(f"TFLite conversion failed: {type(error).__name__}: {first[:300]}")
    op = op_match.group(1)
    # The converter's locations are Python source lines; the op's node name has the layer scope.
    nodes = [node.name for node in graph.concrete_function.graph.get_operations()
             if node.type == op]  # fmt: skip
    layer = next((found for name in nodes if (found := layer_of(name, graph.layers))), None)
    where = f" in layer {layer!r}" if layer else ""
    return UnsupportedOpError(
        f"TensorFlow op {op}{where} has no int8 TFLite builtin (so no TFLite Micro kernel); "
        "replace the layer with supported ops",
        op=op,
        layer=layer,
    )


def check_ops(model: bytes, layers: Sequence[str]) -> list[OpRecord]:
    """Every op of ``model`` with the layer it came from; raise UnsupportedOpError for an op
    that TFLite Micro cannot run in int8 (unknown to it, or computing in another type)."""
    from edgekit.estimate.tflite_file import ModelFileError, parse_model

    try:
        info = parse_model(model)
    except ModelFileError as e:
        raise ExportError(f"the converted model cannot be parsed: {e}") from e
    if len(info.subgraphs) != 1:
        raise ExportError(f"the converted model has {len(info.subgraphs)} subgraphs, expected 1")
    graph = info.subgraphs[0]
    records = []
    for op in graph.operators:
        outputs = [graph.tensors[i] for i in op.outputs]
        # The last op's output carries the graph's output name; its weights name the layer.
        inputs = [graph.tensors[i] for i in op.inputs if i >= 0]
        named = outputs + sorted(inputs, key=lambda t: not t.is_constant)
        layer = next((found for t in named if (found := layer_of(t.name, layers))), None)
        where = f" in layer {layer!r}" if layer else f" (tensor {outputs[0].name!r})"
        if op.opcode not in TFLM_INT8_OPS:
            raise UnsupportedOpError(
                f"op {op.opcode}{where} has no int8 kernel in TFLite Micro; replace the layer "
                "with supported ops (see edgekit.export.convert.TFLM_INT8_OPS)",
                op=op.opcode,
                layer=layer,
            )
        if op.opcode == "FULLY_CONNECTED" and not graph.tensors[op.inputs[1]].is_constant:
            # int8 FULLY_CONNECTED kernels assume symmetric constant weights and ignore a
            # weights zero point, so an activation x activation product comes out wrong.
            raise UnsupportedOpError(
                f"op FULLY_CONNECTED{where} multiplies two activations; int8 kernels need "
                "constant weights (use a 3-D BATCH_MATMUL)",
                op=op.opcode,
                layer=layer,
            )
        for index in (*op.inputs, *op.outputs):
            if index < 0:
                continue
            tensor = graph.tensors[index]
            allowed = _ALLOWED_CONSTANT_TYPES if tensor.is_constant else _ALLOWED_ACTIVATION_TYPES
            if tensor.dtype not in allowed and op.opcode not in ("QUANTIZE", "DEQUANTIZE"):
                raise UnsupportedOpError(
                    f"op {op.opcode}{where} computes in {tensor.dtype} (tensor "
                    f"{tensor.name!r}); a full-int8 model expects int8 activations",
                    op=op.opcode,
                    layer=layer,
                )
        records.append(OpRecord(op.index, op.opcode, layer, tuple(t.shape for t in outputs)))
    for index in (*graph.inputs, *graph.outputs):
        if graph.tensors[index].dtype != "int8":
            raise ExportError(
                f"model input/output tensor {graph.tensors[index].name!r} is "
                f"{graph.tensors[index].dtype}, expected int8"
            )
    return records
