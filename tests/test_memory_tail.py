"""Per-operator tail allocations (tail.KERNELS), checked op type by op type.

The x86-64 numbers are what the tflite-micro Python package allocates for each kernel (gdb
trace of its arena allocator over hand-made int8 models); the 32-bit numbers follow from the
same struct field lists without USE_TFLM_COMPRESSION.
"""

from __future__ import annotations

import math

import pytest

from edgekit.estimate.errors import UnsupportedOperatorError
from edgekit.estimate.runtime import FIRMWARE_32BIT, PYTHON_X86_64
from edgekit.estimate.tail import (
    KERNELS,
    OpView,
    Persist,
    Scratch,
    TempTensor,
    kernel_for,
)
from edgekit.estimate.tflite_file import OperatorInfo, TensorInfo

_ITEMSIZE = {"int8": 1, "int16": 2, "int32": 4, "float32": 4}


def _tensor(shape: tuple[int, ...], dtype: str = "int8", channels: int = 1, constant=False):
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]
    return TensorInfo(
        index=0,
        name="t",
        shape=shape,
        dtype=dtype,
        nbytes=nbytes,
        data_bytes=nbytes if constant else 0,
        buffer=0,
        is_variable=False,
        quant_channels=channels,
        scale_count=channels,
        zero_point_count=channels,
    )


def _view(opcode: str, inputs: list, outputs: list, **options) -> OpView:
    tensors = [*inputs, *outputs]
    indices = [i if t is not None else -1 for i, t in enumerate(tensors)]
    op = OperatorInfo(
        index=0,
        opcode=opcode,
        inputs=tuple(indices[: len(inputs)]),
        outputs=tuple(indices[len(inputs) :]),
        options=options,
    )
    return OpView(op, [t if t is not None else _tensor((1,)) for t in tensors])


def _persistent(events) -> list[int]:
    return [e.size for e in events if isinstance(e, Persist)]


def _scratch(events) -> list[int]:
    return [e.size for e in events if isinstance(e, Scratch)]


def _temps(events) -> int:
    return sum(isinstance(e, TempTensor) for e in events)


# opcode: (builtin options size/align, OpData size) on x86-64, then on 32-bit firmware.
# None = the kernel allocates nothing there.
STRUCT_SIZES = {
    "CONV_2D": ((28, 4), 80, (28, 4), 56),
    "DEPTHWISE_CONV_2D": ((28, 4), 80, (28, 4), 56),
    "FULLY_CONNECTED": ((32, 8), 72, (24, 4), 48),
    "ADD": ((8, 4), 60, (8, 4), 60),
    "SUB": ((8, 4), 52, (8, 4), 52),
    "MUL": ((4, 4), 36, (4, 4), 36),
    "AVERAGE_POOL_2D": ((40, 4), 32, (40, 4), 32),
    "MAX_POOL_2D": ((40, 4), 32, (40, 4), 32),
    "SOFTMAX": ((4, 4), 80, (4, 4), 56),
    "MEAN": ((1, 1), 44, (1, 1), 44),
    "SUM": ((1, 1), 44, (1, 1), 44),
    "REDUCE_MAX": ((1, 1), 44, (1, 1), 44),
    "RESHAPE": ((36, 4), None, (36, 4), None),
    "BATCH_MATMUL": ((3, 1), 32, (3, 1), 16),
    "CONCATENATION": ((8, 4), 80, (8, 4), 24),
    "STRIDED_SLICE": ((24, 4), 84, (24, 4), 84),
    "SLICE": (None, None, None, None),
    "PAD": (None, 56, None, 56),
    "TRANSPOSE": (None, None, None, None),
    "HARD_SWISH": (None, 20, None, 20),
    "LOGISTIC": (None, 16, None, 16),
    "TANH": (None, 16, None, 16),
    "RSQRT": (None, 28, None, 28),
    "ABS": (None, 28, None, 28),
    "RELU": (None, 28, None, 28),
    "RELU6": (None, 8, None, 8),
    "LEAKY_RELU": ((4, 4), 24, (4, 4), 24),
    "QUANTIZE": (None, 32, None, 32),
    "DEQUANTIZE": (None, 32, None, 32),
    "SQUARED_DIFFERENCE": (None, 112, None, 112),
    "PRELU": (None, 28, None, 28),
    "L2_NORMALIZATION": ((4, 4), 4, (4, 4), 4),
    "LOG_SOFTMAX": (None, None, None, None),
    "GATHER": ((8, 4), None, (8, 4), None),
    "SPLIT": ((4, 4), None, (4, 4), None),
    "PACK": ((8, 4), None, (8, 4), None),
    "UNPACK": ((8, 4), None, (8, 4), None),
    "TRANSPOSE_CONV": ((20, 4), 88, (20, 4), 72),
    "RESIZE_NEAREST_NEIGHBOR": ((2, 1), None, (2, 1), None),
    "RESIZE_BILINEAR": ((2, 1), None, (2, 1), None),
    "CAST": ((8, 4), None, (8, 4), None),
    "ARG_MAX": ((4, 4), None, (4, 4), None),
    "ARG_MIN": ((4, 4), None, (4, 4), None),
    "MAXIMUM": (None, None, None, None),
    "MINIMUM": (None, None, None, None),
    "NEG": (None, None, None, None),
}


def test_every_modelled_operator_has_an_expected_size() -> None:
    assert set(STRUCT_SIZES) == set(KERNELS)


@pytest.mark.parametrize("opcode", sorted(STRUCT_SIZES))
def test_builtin_options_and_op_data_sizes(opcode: str) -> None:
    kernel = kernel_for(opcode)
    options_64, op_data_64, options_32, op_data_32 = STRUCT_SIZES[opcode]
    for config, options, op_data in (
        (PYTHON_X86_64, options_64, op_data_64),
        (FIRMWARE_32BIT, options_32, op_data_32),
    ):
        built = kernel.builtin_data(config) if kernel.builtin_data else None
        assert ((built.size, built.align) if built else None) == options
        assert (kernel.op_data(config).size if kernel.op_data else None) == op_data


@pytest.mark.parametrize(
    ("opcode", "weights", "channels"),
    [("CONV_2D", (8, 3, 3, 3), 8), ("DEPTHWISE_CONV_2D", (1, 5, 5, 12), 12)],
)
def test_convolutions_allocate_per_channel_multiplier_and_shift(opcode, weights, channels):
    view = _view(
        opcode,
        [
            _tensor((1, 9, 9, 3)),
            _tensor(weights, channels=channels, constant=True),
            _tensor((channels,), "int32", channels, constant=True),
        ],
        [_tensor((1, 9, 9, channels))],
    )
    events = kernel_for(opcode).prepare(view, PYTHON_X86_64)
    assert _persistent(events) == [4 * channels, 4 * channels]
    assert _temps(events) == 7  # out/in/filter, then in/filter/bias/out in CalculateOpData
    assert _scratch(events) == []


def test_conv_without_bias_skips_the_bias_temporary() -> None:
    view = _view(
        "CONV_2D",
        [_tensor((1, 4, 4, 3)), _tensor((4, 1, 1, 3), channels=4, constant=True), None],
        [_tensor((1, 4, 4, 4))],
    )
    assert _temps(kernel_for("CONV_2D").prepare(view, PYTHON_X86_64)) == 6


@pytest.mark.parametrize(("scales", "expected"), [(70, [280, 280]), (1, [])])
def test_fully_connected_per_channel_buffers_only_when_per_channel(scales, expected) -> None:
    view = _view(
        "FULLY_CONNECTED",
        [_tensor((1, 50)), _tensor((70, 50), channels=scales, constant=True), None],
        [_tensor((1, 70))],
    )
    assert _persistent(kernel_for("FULLY_CONNECTED").prepare(view, PYTHON_X86_64)) == expected


def test_mean_requests_accumulator_index_and_axis_scratch_buffers() -> None:
    view = _view(
        "MEAN",
        [_tensor((1, 11, 11, 7)), _tensor((2,), "int32", 0, constant=True)],
        [_tensor((1, 1, 1, 7))],
    )
    events = kernel_for("MEAN").prepare(view, PYTHON_X86_64)
    assert _scratch(events) == [28, 16, 8]
    assert _temps(events) == 6


def test_reduce_max_has_no_accumulator_scratch() -> None:
    view = _view(
        "REDUCE_MAX",
        [_tensor((1, 6, 6, 5)), _tensor((), "int32", 0, constant=True)],
        [_tensor((1, 6, 5))],
    )
    assert _scratch(kernel_for("REDUCE_MAX").prepare(view, PYTHON_X86_64)) == [16, 4]


@pytest.mark.parametrize(
    ("adj_y", "expected"),
    # quantization data (7 ints), [transposed rhs: TfLiteEvalTensor, dims, data], output dims
    [(True, [28, 16]), (False, [28, 24, 16, 48, 16])],
)
def test_batch_matmul_transposes_rhs_unless_adjoint(adj_y: bool, expected: list[int]) -> None:
    view = _view(
        "BATCH_MATMUL",
        [_tensor((1, 6, 8)), _tensor((1, 6, 8))],
        [_tensor((1, 6, 6))],
        adj_x=False,
        adj_y=adj_y,
    )
    assert _persistent(kernel_for("BATCH_MATMUL").prepare(view, PYTHON_X86_64)) == expected


def test_int16_softmax_allocates_two_lookup_tables() -> None:
    view = _view("SOFTMAX", [_tensor((1, 10), "int16")], [_tensor((1, 10), "int16")])
    assert _persistent(kernel_for("SOFTMAX").prepare(view, PYTHON_X86_64)) == [1026, 1026]
    int8 = _view("SOFTMAX", [_tensor((1, 10))], [_tensor((1, 10))])
    assert _persistent(kernel_for("SOFTMAX").prepare(int8, PYTHON_X86_64)) == []


def test_transpose_conv_requests_int32_accumulators() -> None:
    view = _view(
        "TRANSPOSE_CONV",
        [
            _tensor((4,), "int32", 0, constant=True),
            _tensor((4, 3, 3, 3), channels=4, constant=True),
            _tensor((1, 5, 5, 3)),
        ],
        [_tensor((1, 10, 10, 4))],
    )
    events = kernel_for("TRANSPOSE_CONV").prepare(view, PYTHON_X86_64)
    assert _persistent(events) == [16, 16]
    assert _scratch(events) == [1600]


def test_concatenation_views_every_input() -> None:
    view = _view(
        "CONCATENATION", [_tensor((1, 4)), _tensor((1, 6)), _tensor((1, 3))], [_tensor((1, 13))]
    )
    assert _temps(kernel_for("CONCATENATION").prepare(view, PYTHON_X86_64)) == 5


@pytest.mark.parametrize(("pointer", "expected"), [(PYTHON_X86_64, 40), (FIRMWARE_32BIT, 28)])
def test_log_softmax_op_data_follows_pointer_width(pointer, expected) -> None:
    view = _view("LOG_SOFTMAX", [_tensor((1, 11))], [_tensor((1, 11))])
    assert _persistent(kernel_for("LOG_SOFTMAX").prepare(view, pointer)) == [expected]


def test_gather_copies_output_dims() -> None:
    view = _view("GATHER", [_tensor((1, 6)), _tensor((3,), "int32", 0, True)], [_tensor((1, 3))])
    assert _persistent(kernel_for("GATHER").prepare(view, PYTHON_X86_64)) == [12]


def test_unknown_operator_is_reported_by_name() -> None:
    with pytest.raises(UnsupportedOperatorError, match="LSTM"):
        kernel_for("UNIDIRECTIONAL_SEQUENCE_LSTM")
