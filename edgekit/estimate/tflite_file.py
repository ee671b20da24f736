"""Read a .tflite flatbuffer into the plain facts the memory model needs.

Parsing uses the flatbuffer schema module that ships with the ``tflite-micro`` package (the
same schema the runtime we model was built from), through its zero-copy accessor API: only
shapes, types, quantization sizes, buffer sizes and operator wiring are read, never weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.estimate.errors import ModelFileError

# TensorType -> bytes per element, as TFLite Micro's TfLiteTypeSizeOf reports them.
_TYPE_BYTES: dict[int, int] = {
    0: 4,  # FLOAT32
    1: 2,  # FLOAT16
    2: 4,  # INT32
    3: 1,  # UINT8
    4: 8,  # INT64
    6: 1,  # BOOL
    7: 2,  # INT16
    8: 8,  # COMPLEX64
    9: 1,  # INT8
    10: 8,  # FLOAT64
    11: 16,  # COMPLEX128
    12: 8,  # UINT64
    15: 4,  # UINT32
    16: 2,  # UINT16
    18: 2,  # BFLOAT16
}
_TYPE_NAMES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}  # fmt: skip

_OFFLINE_PLAN_METADATA = "OfflineMemoryAllocation"
# vtable offsets of QuantizationParameters.scale and .zero_point (its 3rd and 4th fields)
_SCALE_FIELD = 8
_ZERO_POINT_FIELD = 10


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a subgraph, as TFLite Micro sees it when it allocates."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int  # element count x element size (TfLiteEvalTensorByteLength)
    data_bytes: int  # size of its constant data in the flatbuffer, 0 if it has none
    buffer: int  # index into the model's buffer table (buffers may be shared)
    is_variable: bool
    # Number of quantization scales when TFLM copies quantization (scale and zero point both
    # present), else 0. Per-channel tensors have one scale per channel.
    quant_channels: int
    scale_count: int
    zero_point_count: int
    # Where its zero-point and scale vectors lie in the file (0: none): tensors may share one.
    zero_point_at: int = 0
    scale_at: int = 0

    @property
    def is_constant(self) -> bool:
        return self.data_bytes > 0


@dataclass(frozen=True)
class OperatorInfo:
    """One operator: its builtin name and the tensor indices it reads and writes."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubgraphInfo:
    tensors: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A parsed model: subgraphs plus what the flash breakdown and the planner need."""

    file_bytes: int
    subgraphs: tuple[SubgraphInfo, ...]
    # Per tensor (all subgraphs, in order) offsets from 'OfflineMemoryAllocation' metadata.
    offline_offsets: tuple[int, ...] | None
    buffer_count: int


def read_model_bytes(model: bytes | bytearray | Path | str) -> bytes:
    """Return the raw bytes of ``model`` (bytes are passed through, paths are read)."""
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    path = Path(model)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror}") from e


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _int_vector(length: int, as_numpy: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in as_numpy()) if length else ()


def _operator_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _read_options(schema: Any, opcode: str, op: Any) -> dict[str, Any]:
    """The few builtin options that change what a kernel allocates."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    if opcode == "BATCH_MATMUL":
        options = schema.BatchMatMulOptions()
        options.Init(table.Bytes, table.Pos)
        return {"adj_x": bool(options.AdjX()), "adj_y": bool(options.AdjY())}
    if opcode == "IF":
        options = schema.IfOptions()
        options.Init(table.Bytes, table.Pos)
        return {"subgraphs": (options.ThenSubgraphIndex(), options.ElseSubgraphIndex())}
    if opcode == "WHILE":
        options = schema.WhileOptions()
        options.Init(table.Bytes, table.Pos)
        return {"subgraphs": (options.CondSubgraphIndex(), options.BodySubgraphIndex())}
    if opcode == "CALL_ONCE":
        options = schema.CallOnceOptions()
        options.Init(table.Bytes, table.Pos)
        return {"subgraphs": (options.InitSubgraphIndex(),)}
    if opcode in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        options = schema.ReducerOptions()
        options.Init(table.Bytes, table.Pos)
        return {"keep_dims": bool(options.KeepDims())}
    return {}


def _read_tensor(schema: Any, model: Any, tensor: Any, index: int) -> TensorInfo:
    type_code = tensor.Type()
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    if any(d < 0 for d in shape):
        raise ModelFileError(
            f"tensor {index} has dynamic shape {shape}; TFLite Micro needs static shapes"
        )
    if type_code not in _TYPE_BYTES:
        name = _TYPE_NAMES.get(type_code, str(type_code))
        raise ModelFileError(f"tensor {index} has type {name}, which the memory model lacks")
    buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
    data_bytes = buffer.DataLength() if buffer is not None else 0
    scale_count = zero_point_count = zero_point_at = scale_at = 0
    quantization = tensor.Quantization()
    if quantization is not None:
        scale_count = quantization.ScaleLength()
        zero_point_count = quantization.ZeroPointLength()
        table = quantization._tab  # the generated API has no accessor for the positions
        if zero_point_count:
            zero_point_at = table.Vector(table.Offset(_ZERO_POINT_FIELD))
        if scale_count:
            scale_at = table.Vector(table.Offset(_SCALE_FIELD))
    channels = scale_count if scale_count > 0 and zero_point_count > 0 else 0
    raw_name = tensor.Name()
    return TensorInfo(
        index=index,
        name=raw_name.decode(errors="replace") if raw_name else f"tensor_{index}",
        shape=shape,
        dtype=_TYPE_NAMES[type_code],
        nbytes=math.prod(shape) * _TYPE_BYTES[type_code],
        data_bytes=data_bytes,
        buffer=tensor.Buffer(),
        is_variable=bool(tensor.IsVariable()),
        quant_channels=channels,
        scale_count=scale_count,
        zero_point_count=zero_point_count,
        zero_point_at=zero_point_at,
        scale_at=scale_at,
    )


def _offline_offsets(model: Any) -> tuple[int, ...] | None:
    import numpy as np

    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if (metadata.Name() or b"").decode(errors="replace") != _OFFLINE_PLAN_METADATA:
            continue
        words = model.Buffers(metadata.Buffer()).DataAsNumpy().view(np.int32)
        count = int(words[2])
        return tuple(int(w) for w in words[3 : 3 + count])
    return None


def parse_model(data: bytes) -> ModelInfo:
    """Parse flatbuffer bytes into a :class:`ModelInfo`."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"not a .tflite flatbuffer (identifier {data[4:8]!r}, expected TFL3)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        names = _operator_names(schema)
        subgraphs = []
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            tensors = tuple(
                _read_tensor(schema, model, graph.Tensors(i), i)
                for i in range(graph.TensorsLength())
            )
            operators = []
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                code = model.OperatorCodes(op.OpcodeIndex())
                opcode = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
                if opcode == "CUSTOM":
                    opcode = "CUSTOM:" + (code.CustomCode() or b"").decode(errors="replace")
                operators.append(
                    OperatorInfo(
                        index=i,
                        opcode=opcode,
                        inputs=_int_vector(op.InputsLength(), op.InputsAsNumpy),
                        outputs=_int_vector(op.OutputsLength(), op.OutputsAsNumpy),
                        intermediates=_int_vector(
                            op.IntermediatesLength(), op.IntermediatesAsNumpy
                        ),
                        options=_read_options(schema, opcode, op),
                    )
                )
            subgraphs.append(
                SubgraphInfo(
                    tensors=tensors,
                    operators=tuple(operators),
                    inputs=_int_vector(graph.InputsLength(), graph.InputsAsNumpy),
                    outputs=_int_vector(graph.OutputsLength(), graph.OutputsAsNumpy),
                )
            )
        offline = _offline_offsets(model)
        buffer_count = model.BuffersLength()
    except ModelFileError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer fails deep in the accessors
        raise ModelFileError(f"cannot parse .tflite flatbuffer: {type(e).__name__}: {e}") from e
    if not subgraphs:
        raise ModelFileError("model has no subgraphs")
    return ModelInfo(
        file_bytes=len(data),
        subgraphs=tuple(subgraphs),
        offline_offsets=offline,
        buffer_count=buffer_count,
    )


def load_model(model: bytes | bytearray | Path | str) -> tuple[bytes, ModelInfo]:
    """Read and parse ``model`` (bytes or a path); returns the bytes and the parsed model."""
    data = read_model_bytes(model)
    return data, parse_model(data)
