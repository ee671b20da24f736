"""Reading .tflite files, flash breakdown and errors, on flatbuffers built by hand (no TF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.estimate import (
    MemoryModelError,
    ModelFileError,
    UnsupportedOperatorError,
    analyze_tflite,
    measure_tflm,
)

_INT8, _INT32 = 9, 2


def _build_model(tensors: list[dict], operators: list[dict], inputs, outputs) -> bytes:
    """A minimal .tflite: tensors {shape, type, scale?, data?}, operators {op, in, out, ...}."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]  # buffer 0 is the conventional empty buffer
    graph = schema.SubGraphT()
    graph.tensors = []
    for spec in tensors:
        tensor = schema.TensorT()
        tensor.shape = list(spec["shape"])
        tensor.type = spec.get("type", _INT8)
        tensor.name = spec.get("name", f"t{len(graph.tensors)}").encode()
        tensor.buffer = 0
        if "data" in spec:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(spec["data"], dtype=np.uint8)
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        if "scale" in spec:
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale = [spec["scale"]]
            tensor.quantization.zeroPoint = [spec.get("zero_point", 0)]
        graph.tensors.append(tensor)
    codes: list[int] = []
    graph.operators = []
    for spec in operators:
        code = getattr(schema.BuiltinOperator, spec["op"])
        if code not in codes:
            codes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex = codes.index(code)
        op.inputs, op.outputs = list(spec["in"]), list(spec["out"])
        if "options" in spec:
            op.builtinOptionsType, op.builtinOptions = spec["options"]
        graph.operators.append(op)
    graph.inputs, graph.outputs = list(inputs), list(outputs)
    model.subgraphs = [graph]
    model.operatorCodes = []
    for code in codes:
        operator_code = schema.OperatorCodeT()
        operator_code.builtinCode = code
        operator_code.deprecatedBuiltinCode = min(code, 127)
        operator_code.version = 1
        model.operatorCodes.append(operator_code)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _relu_model() -> bytes:
    q = {"scale": 0.1, "zero_point": 0}
    return _build_model(
        [{"shape": (1, 30), **q}, {"shape": (1, 30), **q}],
        [{"op": "RELU", "in": (0,), "out": (1,)}],
        inputs=(0,),
        outputs=(1,),
    )


def _add_reshape_model() -> bytes:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    q = {"scale": 0.05, "zero_point": -3}
    add_options = schema.AddOptionsT()
    reshape_options = schema.ReshapeOptionsT()
    reshape_options.newShape = [1, 24]
    shape = np.array([1, 24], dtype=np.int32).tobytes()
    return _build_model(
        [
            {"shape": (1, 4, 6), **q},
            {"shape": (1, 4, 6), **q},
            {"shape": (1, 4, 6), **q},
            {"shape": (2,), "type": _INT32, "data": shape},
            {"shape": (1, 24), **q},
        ],
        [
            {
                "op": "ADD",
                "in": (0, 1),
                "out": (2,),
                "options": (schema.BuiltinOptions.AddOptions, add_options),
            },
            {
                "op": "RESHAPE",
                "in": (2, 3),
                "out": (4,),
                "options": (schema.BuiltinOptions.ReshapeOptions, reshape_options),
            },
        ],
        inputs=(0, 1),
        outputs=(4,),
    )


@pytest.mark.parametrize("build", [_relu_model, _add_reshape_model])
def test_hand_built_models_match_the_interpreter(build, tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(build())
    report, truth = analyze_tflite(path), measure_tflm(path)
    assert (report.arena_bytes, report.head_bytes, report.tail_bytes) == (
        truth.arena_bytes,
        truth.head_bytes,
        truth.tail_bytes,
    )


def test_bytes_and_paths_give_the_same_report(tmp_path: Path) -> None:
    data = _relu_model()
    path = tmp_path / "relu.tflite"
    path.write_bytes(data)
    assert analyze_tflite(data).arena_bytes == analyze_tflite(str(path)).arena_bytes


def test_32_bit_build_has_the_same_head_and_a_smaller_tail() -> None:
    data = _add_reshape_model()
    host, board = analyze_tflite(data), analyze_tflite(data, pointer_bytes=4)
    assert board.head_bytes == host.head_bytes
    assert board.tail_bytes < host.tail_bytes
    assert board.runtime.pointer_bytes == 4 and not board.runtime.recording_allocator


def test_flash_counts_constant_shape_tensor_and_quantization() -> None:
    report = analyze_tflite(_add_reshape_model())
    flash = report.flash
    assert flash.total_bytes == len(_add_reshape_model())
    assert flash.other_constant_bytes == 8  # the int32 [1, 24] shape operand
    assert flash.weight_bytes == flash.bias_bytes == 0
    assert flash.quantization_bytes == 4 * (4 + 4 + 4 + 8)  # scale + zero-point vectors


def test_peak_tensors_name_the_live_activations() -> None:
    report = analyze_tflite(_add_reshape_model())
    assert report.peak_op == (0, "ADD")
    assert {t.name for t in report.peak_tensors} == {"t0", "t1", "t2"}


def test_unsupported_operator_is_an_edgekit_error() -> None:
    data = _build_model(
        [{"shape": (1, 4), "scale": 0.1}, {"shape": (1, 4), "scale": 0.1}],
        [{"op": "CUMSUM", "in": (0,), "out": (1,)}],
        inputs=(0,),
        outputs=(1,),
    )
    with pytest.raises(UnsupportedOperatorError, match="CUMSUM"):
        analyze_tflite(data)
    assert issubclass(UnsupportedOperatorError, EdgekitError)


def test_not_a_model_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="TFL3"):
        analyze_tflite(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="cannot read"):
        analyze_tflite(tmp_path / "missing.tflite")


@pytest.mark.parametrize("pointer_bytes", [2, 16])
def test_pointer_width_must_be_4_or_8(pointer_bytes: int) -> None:
    with pytest.raises(MemoryModelError, match="pointer_bytes"):
        analyze_tflite(_relu_model(), pointer_bytes=pointer_bytes)


def test_fits_a_real_board_profile_at_the_exact_boundary() -> None:
    from dataclasses import replace

    from edgekit.estimate import fits
    from edgekit.profiles import load_profile

    board = load_profile("rpi-pico")
    report = analyze_tflite(_add_reshape_model())
    arena = analyze_tflite(_add_reshape_model(), pointer_bytes=board.pointer_bytes).arena_bytes
    exact = replace(board, sram_bytes=board.firmware_sram_bytes + arena)
    verdict = fits(report, exact)
    assert verdict.fits and verdict.sram_margin_bytes == 0 and verdict.board == "rpi-pico"
    short = fits(report, replace(board, sram_bytes=board.firmware_sram_bytes + arena - 1))
    assert not short.fits and short.sram_margin_bytes == -1
    assert [row["fits"] for row in short.rows()] == [False, True]
