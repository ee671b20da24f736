"""Flash used by a model: the .tflite flatbuffer is stored as-is, so flash = file size.

The breakdown attributes every byte of the file: constant data of weight tensors (operand 1
of convolutions and fully connected layers, constant BATCH_MATMUL operands, PRELU alphas),
bias data, other constants (shapes, axes, lookup tables), quantization vectors (one float
scale and one int64 zero point per channel, each vector with its 4-byte length, a vector that
several tensors share counted once) and the rest
(tables, tensor names and shapes, operator codes, metadata, alignment padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.estimate.tflite_file import ModelInfo

# operator -> (weight operand positions, bias operand positions)
_WEIGHT_OPERANDS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "CONV_2D": ((1,), (2,)),
    "DEPTHWISE_CONV_2D": ((1,), (2,)),
    "FULLY_CONNECTED": ((1,), (2,)),
    "TRANSPOSE_CONV": ((1,), (3,)),
    "BATCH_MATMUL": ((0, 1), ()),
    "PRELU": ((1,), ()),
}


@dataclass(frozen=True)
class FlashReport:
    """Bytes of the model in flash, by kind; the parts sum to ``total_bytes``."""

    total_bytes: int
    weight_bytes: int
    bias_bytes: int
    other_constant_bytes: int
    quantization_bytes: int
    overhead_bytes: int


def flash_breakdown(model: ModelInfo) -> FlashReport:
    """Attribute the flatbuffer's bytes to weights, biases, constants, quantization, overhead."""
    kind_of_buffer: dict[int, str] = {}
    size_of_buffer: dict[int, int] = {}
    quantization = 0
    counted: set[int] = set()  # positions of the scale and zero-point vectors counted
    for graph in model.subgraphs:
        roles: dict[int, str] = {}
        for op in graph.operators:
            weights, biases = _WEIGHT_OPERANDS.get(op.opcode, ((), ()))
            for position, tensor in enumerate(op.inputs):
                if tensor < 0:
                    continue
                role = "weight" if position in weights else "bias" if position in biases else ""
                if role and roles.get(tensor) != "weight":
                    roles[tensor] = role
        for tensor in graph.tensors:
            # A position 0 means unknown (a synthesised model): counted every time.
            if tensor.scale_count and tensor.scale_at not in counted:
                counted.add(tensor.scale_at or -1)
                quantization += 4 + 4 * tensor.scale_count
            if tensor.zero_point_count and tensor.zero_point_at not in counted:
                counted.add(tensor.zero_point_at or -1)
                quantization += 4 + 8 * tensor.zero_point_count
            if not tensor.is_constant:
                continue
            role = roles.get(tensor.index, "other")
            previous = kind_of_buffer.get(tensor.buffer)
            if previous is None or (previous != "weight" and role == "weight"):
                kind_of_buffer[tensor.buffer] = role
            size_of_buffer[tensor.buffer] = tensor.data_bytes
    totals = {"weight": 0, "bias": 0, "other": 0}
    for buffer, kind in kind_of_buffer.items():
        totals[kind] += size_of_buffer[buffer]
    accounted = sum(totals.values()) + quantization
    return FlashReport(
        total_bytes=model.file_bytes,
        weight_bytes=totals["weight"],
        bias_bytes=totals["bias"],
        other_constant_bytes=totals["other"],
        quantization_bytes=quantization,
        overhead_bytes=model.file_bytes - accounted,
    )
