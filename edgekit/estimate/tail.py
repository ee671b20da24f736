"""Per-operator arena allocations of TFLite Micro's reference kernels: the one table.

For each builtin operator this module says what the kernel allocates, in order:

* ``builtin_data``: the options struct ``Parse<Op>`` puts in the tail (its own alignment);
* ``op_data``: the struct ``<Op>Init`` asks ``AllocatePersistentBuffer`` for (16-byte aligned);
* ``prepare``: the sequence during ``<Op>Prepare``: temporary ``TfLiteTensor`` views of its
  inputs/outputs (freed after the operator, but they must fit at that moment), persistent
  buffers (per-channel multipliers, LUTs, transposed operands) and scratch-buffer requests
  (planned in the head, alive only during the operator).

Sources are the tflite-micro reference kernels (``tensorflow/lite/micro/kernels/<op>.cc``,
``<op>_common.cc``, ``<op>.h``, OpData structs in ``micro/kernels/internal/types.h`` and
``micro/builtin_op_data.h``). Sizes are computed from field lists for the target ABI; all
x86-64 sizes and the temp/persistent/scratch sequences were checked against the allocations
the tflite-micro Python package makes (gdb trace of ``SingleArenaBufferAllocator``), see
tests/test_memory_tail.py. A later config-based estimator can call the same functions with
synthetic ``TensorInfo``/``OperatorInfo`` objects.

Provenance of the field lists (what decides the 32-bit sizes, which cannot be measured here):

* from source: OpDataConv (conv.h), OpDataFullyConnected (fully_connected.h), SoftmaxParams,
  ConcatenationParams, StridedSliceParams, PadParams, HardSwishParams, LeakyReluParams,
  PreluParams, ArithmeticParams (internal/types.h), OpDataAdd (add.h), the concatenation
  OpData with its compression scratch indices (concatenation.cc), OpDataBatchMatmul and the
  transposed-operand buffers (batch_matmul.cc), OpDataTransposeConv (transpose_conv.cc),
  LogSoftmaxOpData (log_softmax.cc), all builtin option structs (micro/builtin_op_data.h);
* from the x86-64 binary: TfLiteFullyConnectedParams (a quant_spec pointer and length follow
  the documented fields);
* from the x86-64 trace only, all pointer-free so the same on 32-bit: OpDataSub, OpDataMul,
  OpDataPooling, OpDataReduce (11 ints), OpDataLogistic, the TANH and RELU op data, the RSQRT/ABS
  op data, Relu6OpData (8 B), L2NormalizationParams, QUANTIZE/DEQUANTIZE op data (int32 +
  double quantization params), and the order of every kernel's temporaries and scratch
  requests (e.g. MEAN's int32 accumulators, index and axis buffers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgekit.estimate.errors import UnsupportedOperatorError
from edgekit.estimate.layout import CType
from edgekit.estimate.runtime import RuntimeConfig, eval_tensor, int_array
from edgekit.estimate.tflite_file import OperatorInfo, TensorInfo

# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    """A persistent (tail) allocation; ``align=None`` means the arena alignment (16 B)."""

    size: int
    label: str
    align: int | None = None


@dataclass(frozen=True)
class TempTensor:
    """A temporary TfLiteTensor view of ``tensor`` (plus its quantization copy)."""

    tensor: TensorInfo


@dataclass(frozen=True)
class Scratch:
    """A scratch buffer requested in Prepare; planned in the head for this operator only."""

    size: int
    label: str


PrepareEvent = Persist | TempTensor | Scratch


@dataclass(frozen=True)
class OpView:
    """An operator together with its tensors, as a kernel's Prepare sees them."""

    op: OperatorInfo
    tensors: Sequence[TensorInfo]

    def input(self, position: int) -> TensorInfo | None:
        if position >= len(self.op.inputs) or self.op.inputs[position] < 0:
            return None  # AllocateTempInputTensor returns nullptr for an omitted input
        return self.tensors[self.op.inputs[position]]

    def output(self, position: int) -> TensorInfo | None:
        if position >= len(self.op.outputs) or self.op.outputs[position] < 0:
            return None
        return self.tensors[self.op.outputs[position]]

    def temps(self, *positions: str) -> list[PrepareEvent]:
        """Temp tensors for positions like ``"in0"``/``"out0"``, skipping omitted ones."""
        events: list[PrepareEvent] = []
        for position in positions:
            if position.startswith("in"):
                tensor = self.input(int(position[2:]))
            else:
                tensor = self.output(int(position[3:]))
            if tensor is not None:
                events.append(TempTensor(tensor))
        return events

    @property
    def input_count(self) -> int:
        return len(self.op.inputs)


def _elements(tensor: TensorInfo | None) -> int:
    return math.prod(tensor.shape) if tensor is not None else 0


def _is_quantized_int(tensor: TensorInfo | None) -> bool:
    return tensor is not None and tensor.dtype in ("int8", "int16")


# --- kernel specifications ------------------------------------------------------------------

StructFn = Callable[[RuntimeConfig], CType]


@dataclass(frozen=True)
class Kernel:
    """What one builtin operator's reference kernel allocates."""

    builtin_data: StructFn | None = None
    op_data: StructFn | None = None  # Init allocates exactly this struct when given
    prepare: Callable[[OpView, RuntimeConfig], list[PrepareEvent]] = field(
        default=lambda view, config: []
    )


def _fields(*fields: object) -> StructFn:
    return lambda c: c.abi.struct(list(fields))  # type: ignore[arg-type]


def _ints(count: int) -> StructFn:
    return lambda c: CType(4 * count, 4)


# Builtin option structs (micro/builtin_op_data.h).
_CONV_PARAMS = _ints(7)  # padding, strides, activation, dilations, quantized_bias_type
_DEPTHWISE_PARAMS = _ints(7)
_POOL_PARAMS = _ints(10)  # 6 ints + computed TfLitePaddingValues
_ADD_SUB_PARAMS = _fields("enum", "bool")
_ONE_ENUM = _ints(1)
_RESHAPE_PARAMS = _ints(9)  # int32 shape[8] + num_dimensions
_STRIDED_SLICE_PARAMS = _fields("int", "int", "int", "int", "int", "bool")
# x86-64 binary (ParseFullyConnected): activation, weights_format, keep_num_dims,
# asymmetric_quantize_inputs, quantized_bias_type, then a quant_spec pointer and its length.
_FULLY_CONNECTED_PARAMS = _fields("enum", "enum", "bool", "bool", "enum", "ptr", "int")


def _op_data_conv(c: RuntimeConfig) -> CType:  # kernels/conv.h OpDataConv
    fields: list = ["int"] * 4 + ["i32"] * 4 + ["int", "ptr", "ptr", "i32", "i32", "int"]
    if c.compression:
        fields += ["int", "int"]  # weights/bias decompression scratch indices
    return c.abi.struct(fields)


def _op_data_fully_connected(c: RuntimeConfig) -> CType:  # kernels/fully_connected.h
    fields: list = ["i32"] * 8 + ["int", "ptr", "ptr", "bool"]
    if c.compression:
        fields += ["int", "int"]
    return c.abi.struct(fields)


def _softmax_params(c: RuntimeConfig) -> CType:  # internal/types.h SoftmaxParams
    return c.abi.struct(["f64"] + ["i32"] * 7 + ["ptr"] * 5)


def _concatenation_op_data(c: RuntimeConfig) -> CType:  # concatenation.cc OpData
    fields: list = ["i32", "ptr", "ptr", "i32", "i32", "f32"]  # ConcatenationParams
    if c.compression:
        fields.append(("int", 10))  # scratch_indices[kMaxInputNum]
    return c.abi.struct(fields)


def _batch_matmul_op_data(c: RuntimeConfig) -> CType:  # kernels/batch_matmul.h
    return c.abi.struct(["ptr", "ptr", "ptr", "bool", "bool", "bool"])


def _quantize_op_data(c: RuntimeConfig) -> CType:  # QuantizationParams + 3 ints
    return c.abi.struct([c.abi.struct(["i32", "f64"]), "i32", "int", "i32"])


def _conv_prepare(quantized_dimension: int) -> Callable[[OpView, RuntimeConfig], list]:
    def prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
        events = view.temps("out0", "in0", "in1")
        weights = view.input(1)
        channels = weights.shape[quantized_dimension] if weights is not None else 0
        events += [
            Persist(4 * channels, "per-channel output multiplier"),
            Persist(4 * channels, "per-channel output shift"),
        ]
        unpacked_int4 = [Scratch(_elements(weights), "unpacked int4 weights")]
        if quantized_dimension == 3 and weights is not None and weights.dtype == "int4":
            events += unpacked_int4  # depthwise requests it before CalculateOpData
        events += view.temps("in0", "in1", "in2", "out0")
        if quantized_dimension == 0 and weights is not None and weights.dtype == "int4":
            events += unpacked_int4
        return events

    return prepare


def _fully_connected_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "in1", "in2", "out0")
    weights = view.input(1)
    if weights is not None and weights.dtype == "int4":
        events.append(Scratch(_elements(weights), "unpacked int4 weights"))
    source = view.input(0)
    if (
        source is not None
        and source.dtype != "float32"
        and weights is not None
        and weights.quant_channels > 1
    ):
        events += [
            Persist(4 * weights.quant_channels, "per-channel output multiplier"),
            Persist(4 * weights.quant_channels, "per-channel output shift"),
        ]
    return events


def _softmax_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "out0")
    source = view.input(0)
    if source is not None and source.dtype == "int16":
        events += [Persist(2 * 513, "exp LUT"), Persist(2 * 513, "1/(1+x) LUT")]
    return events


def _reduce_scratch(view: OpView) -> list[PrepareEvent]:
    source, axis = view.input(0), view.input(1)
    return [
        Scratch(4 * len(source.shape) if source is not None else 0, "reduce temp index"),
        Scratch(4 * _elements(axis), "reduce resolved axis"),
    ]


def _prepare_simple(view: OpView) -> list[PrepareEvent]:
    events = view.temps("in0", "in1")
    source = view.input(0)
    if source is not None and source.dtype == "int8":
        events += view.temps("out0")
    return events


def _mean_or_sum_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "out0", "in1")
    if _is_quantized_int(view.input(0)):
        events.append(Scratch(4 * _elements(view.output(0)), "reduce int32 accumulators"))
    return events + _reduce_scratch(view) + _prepare_simple(view)


def _reduce_max_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    return _prepare_simple(view) + view.temps("in0", "out0", "in1") + _reduce_scratch(view)


def _transposed_operand(tensor: TensorInfo | None, config: RuntimeConfig) -> list[Persist]:
    if tensor is None:
        return []
    return [
        Persist(eval_tensor(config).size, "transposed operand TfLiteEvalTensor"),
        Persist(int_array(len(tensor.shape)).size, "transposed operand dims"),
        Persist(tensor.nbytes, "transposed operand data"),
    ]


def _batch_matmul_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "in1", "out0")
    if _is_quantized_int(view.input(0)):
        events.append(Persist(28, "quantization data (7 x int32)"))
    if view.op.options.get("adj_x", False):
        events += _transposed_operand(view.input(0), config)
    if not view.op.options.get("adj_y", False):
        events += _transposed_operand(view.input(1), config)
    output = view.output(0)
    events.append(Persist(int_array(len(output.shape) if output else 0).size, "output dims"))
    return events


def _concatenation_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "out0")
    for position in range(view.input_count):
        events += view.temps(f"in{position}")
    return events


def _log_softmax_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    events = view.temps("in0", "out0")
    if _is_quantized_int(view.input(0)):  # LogSoftmaxOpData: 5 x int32, outer_size, depth
        size = config.abi.struct(["i32"] * 5 + ["size_t", "size_t"]).size
        events.append(Persist(size, "LogSoftmaxOpData"))
    return events


def _gather_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    output = view.output(0)
    dims = int_array(len(output.shape) if output is not None else 0)
    return [*view.temps("in0", "in1", "out0"), Persist(dims.size, "output dims")]


def _transpose_conv_op_data(c: RuntimeConfig) -> CType:  # kernels/transpose_conv.h
    # ConvParams: PaddingType (uint8), PaddingValues (4 x int16), 4 x int16 strides and
    # dilations, 7 x int32 offsets/multiplier/shift/activation range, 2 x float.
    conv_params = c.abi.struct(["u8", ("i16", 4), ("i16", 4)] + ["i32"] * 7 + ["f32", "f32"])
    fields: list = [conv_params, "int", "int", "ptr", "ptr"]
    if c.compression:
        fields += ["int", "int"]
    return c.abi.struct(fields)


def _transpose_conv_prepare(view: OpView, config: RuntimeConfig) -> list[PrepareEvent]:
    # Operands: 0 output shape, 1 weights, 2 input, 3 optional bias.
    events = view.temps("out0", "in2", "in1")
    weights, source, bias = view.input(1), view.input(2), view.input(3)
    channels = weights.shape[0] if weights is not None else 0
    events += [
        Persist(4 * channels, "per-channel output multiplier"),
        Persist(4 * channels, "per-channel output shift"),
    ]
    if source is not None and source.dtype in ("int8", "int16"):
        accumulator = 4 if source.dtype == "int8" else 8
        events.append(Scratch(accumulator * _elements(view.output(0)), "accumulators"))
    events += view.temps("in2", "in1", "in3", "out0")
    if (
        source is not None
        and source.dtype == "int16"
        and bias is not None
        and (bias.dtype == "int16")
    ):
        events.append(Scratch(8 * _elements(bias), "int64 bias"))
    return events


def _arithmetic_op_data(c: RuntimeConfig) -> CType:
    """OpData {bool requires_broadcast; ArithmeticParams params} (internal/types.h)."""
    arithmetic = c.abi.struct(
        ["u8"]
        + ["i32"] * 11
        + ["i32", "i32", "f32", "f32", "i64", "i64", "i16", "i16"]
        + [("int", 5)]
    )
    return c.abi.struct(["bool", arithmetic])


def _simple(*positions: str) -> Callable[[OpView, RuntimeConfig], list[PrepareEvent]]:
    return lambda view, config: view.temps(*positions)


KERNELS: dict[str, Kernel] = {
    "CONV_2D": Kernel(_CONV_PARAMS, _op_data_conv, _conv_prepare(0)),
    "DEPTHWISE_CONV_2D": Kernel(_DEPTHWISE_PARAMS, _op_data_conv, _conv_prepare(3)),
    "FULLY_CONNECTED": Kernel(
        _FULLY_CONNECTED_PARAMS, _op_data_fully_connected, _fully_connected_prepare
    ),
    "ADD": Kernel(_ADD_SUB_PARAMS, _ints(15), _simple("in0", "in1", "out0")),  # OpDataAdd
    "SUB": Kernel(_ADD_SUB_PARAMS, _ints(13), _simple("in0", "in1", "out0")),  # OpDataSub
    "MUL": Kernel(_ONE_ENUM, _ints(9), _simple("in0", "in1", "out0")),  # OpDataMul
    "AVERAGE_POOL_2D": Kernel(_POOL_PARAMS, _ints(8), _simple("in0", "out0")),  # OpDataPooling
    "MAX_POOL_2D": Kernel(_POOL_PARAMS, _ints(8), _simple("in0", "out0")),
    "SOFTMAX": Kernel(_ONE_ENUM, _softmax_params, _softmax_prepare),  # TfLiteSoftmaxParams
    "MEAN": Kernel(_fields("bool"), _ints(11), _mean_or_sum_prepare),  # OpDataReduce
    "SUM": Kernel(_fields("bool"), _ints(11), _mean_or_sum_prepare),
    "REDUCE_MAX": Kernel(_fields("bool"), _ints(11), _reduce_max_prepare),
    "RESHAPE": Kernel(_RESHAPE_PARAMS, None, _simple("in0", "out0")),
    "BATCH_MATMUL": Kernel(
        _fields("bool", "bool", "bool"), _batch_matmul_op_data, _batch_matmul_prepare
    ),
    "CONCATENATION": Kernel(_ints(2), _concatenation_op_data, _concatenation_prepare),
    "STRIDED_SLICE": Kernel(
        _STRIDED_SLICE_PARAMS,
        _fields("i8", ("i32", 5), "i8", ("i32", 5), "i8", ("i32", 5), ("u16", 5), "bool"),
        _simple("in0", "in1", "in2", "in3", "out0"),
    ),
    "SLICE": Kernel(None, None, _simple("in0", "in1", "in2", "out0")),
    "PAD": Kernel(  # OpData: PadParams + output zero point
        None,
        _fields("i8", ("i32", 5), "i8", ("i32", 5), "u8", "i32"),
        _simple("in0", "in1", "in2", "out0"),
    ),
    "TRANSPOSE": Kernel(None, None, _simple("in0", "in1", "out0")),
    "HARD_SWISH": Kernel(  # HardSwishParams
        None, _fields("i16", "i16", "i16", "int", "i16", "int"), _simple("in0", "out0")
    ),
    "LOGISTIC": Kernel(None, _ints(4), _simple("in0", "out0")),  # OpDataLogistic
    "TANH": Kernel(None, _ints(4), _simple("in0", "in0", "out0")),
    # OpDataAbsRsqrt: multiplier, shift, input/output offsets, needs_rescale, quant/type enums
    "RSQRT": Kernel(
        None, _fields("i32", "int", "int", "int", "bool", "enum", "enum"), _simple("in0", "out0")
    ),
    "RELU": Kernel(None, _ints(7), _simple("in0", "out0")),  # ReluOpData (ReluParams)
    "LEAKY_RELU": Kernel(_ONE_ENUM, _ints(6), _simple("in0", "out0")),  # LeakyReluOpData
    "QUANTIZE": Kernel(None, _quantize_op_data, _simple("in0", "out0")),
    "SQUARED_DIFFERENCE": Kernel(None, _arithmetic_op_data, _simple("in0", "in1", "out0")),
    "PRELU": Kernel(None, _ints(7), _simple("in0", "in1", "out0")),  # PreluParams
    "L2_NORMALIZATION": Kernel(_ONE_ENUM, _ints(1), _simple("in0", "out0")),
    "LOG_SOFTMAX": Kernel(None, None, _log_softmax_prepare),
    "GATHER": Kernel(_ints(2), None, _gather_prepare),  # TfLiteGatherParams
    "SPLIT": Kernel(_ints(1), None, _simple("in0")),  # input 0 is the axis
    "PACK": Kernel(_ints(2), None),
    "UNPACK": Kernel(_ints(2), None),
    "MAXIMUM": Kernel(None, None),
    "MINIMUM": Kernel(None, None),
    "NEG": Kernel(None, None),
    "TRANSPOSE_CONV": Kernel(_ints(5), _transpose_conv_op_data, _transpose_conv_prepare),
    "RESIZE_NEAREST_NEIGHBOR": Kernel(
        _fields("bool", "bool"), None, _simple("in0", "in1", "out0")
    ),
    "RESIZE_BILINEAR": Kernel(_fields("bool", "bool"), None, _simple("in0", "in1", "out0")),
    "RELU6": Kernel(None, _ints(2), _simple("in0")),  # Relu6OpData (x86-64 trace: 8 B)
    "ARG_MAX": Kernel(_ONE_ENUM, None),
    "ARG_MIN": Kernel(_ONE_ENUM, None),
    "CAST": Kernel(_ints(2), None, _simple("in0", "out0")),  # TfLiteCastParams
    "ABS": Kernel(
        None, _fields("i32", "int", "int", "int", "bool", "enum", "enum"), _simple("in0", "out0")
    ),
    "DEQUANTIZE": Kernel(None, _quantize_op_data, _simple("in0", "out0")),
}


def kernel_for(opcode: str) -> Kernel:
    """The allocation table entry for ``opcode``; raises for operators we have not modelled."""
    try:
        return KERNELS[opcode]
    except KeyError:
        known = ", ".join(sorted(KERNELS))
        raise UnsupportedOperatorError(
            f"no TFLite Micro allocation table for operator {opcode}; modelled: {known}"
        ) from None
