"""The file-based memory model against the real tflite-micro interpreter.

Three small int8 models made with TensorFlow's converter cover the common operators. They are
cached in pytest's cache directory (keyed by ``_MODELS_VERSION``), so TensorFlow is imported
only when the cache is cold.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.estimate import analyze_tflite, fits, measure_tflm
from edgekit.estimate.ground_truth import _Worker

_MODELS_VERSION = "v1"


def _convert(build, shapes, *, int8_io: bool = True) -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(0)
    inputs = [tf.keras.Input(shape, batch_size=1) for shape in shapes]
    model = tf.keras.Model(inputs, build(tf, *inputs))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-1, 1, (1, *s)).astype(np.float32) for s in shapes]

    warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _cnn(tf, x):
    layers, lam = tf.keras.layers, tf.keras.layers.Lambda
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.Add()([x, layers.Conv2D(8, 1)(x)])
    x = layers.MaxPooling2D(2)(layers.AveragePooling2D(2)(x))
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(12, 3, strides=2)(x)
    x = lam(lambda t: t * tf.nn.relu6(t + 3.0) * 0.16666667)(x)  # HARD_SWISH
    x = layers.Concatenate()([x, layers.Conv2D(4, 1)(x)])
    x = layers.GlobalAveragePooling2D()(x)  # MEAN
    return layers.Softmax()(layers.Dense(5)(x))


def _attention(tf, x):
    layers, lam = tf.keras.layers, tf.keras.layers.Lambda
    q, k, v = layers.Dense(8)(x), layers.Dense(8)(x), layers.Dense(8)(x)
    scores = lam(lambda t: tf.nn.softmax(tf.linalg.matmul(t[0], t[1], transpose_b=True)))([q, k])
    attended = lam(lambda t: tf.linalg.matmul(t[0], t[1]))([scores, v])  # transposed operand
    x = layers.LayerNormalization()(layers.Add()([attended, q]))  # MEAN, RSQRT, MUL, ...
    x = lam(lambda t: tf.transpose(t, [0, 2, 1])[:, 1:5, :])(x)  # TRANSPOSE, STRIDED_SLICE
    return lam(tf.sigmoid)(x)


def _float_io(tf, x):
    layers, lam = tf.keras.layers, tf.keras.layers.Lambda
    x = lam(tf.tanh)(layers.Dense(12)(x))
    x = layers.LeakyReLU(0.2)(layers.Reshape((3, 4))(x))
    x = lam(lambda t: tf.slice(t, [0, 1, 0], [1, 2, 3]))(x)
    return layers.Dense(4)(layers.Flatten()(x))


@dataclass(frozen=True)
class _Spec:
    build: object
    shapes: tuple[tuple[int, ...], ...]
    int8_io: bool = True


_SPECS = {
    "cnn": _Spec(_cnn, ((16, 16, 3),)),
    "attention": _Spec(_attention, ((6, 5),)),
    "float_io": _Spec(_float_io, ((7,),), int8_io=False),
}


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    cache = Path(request.config.cache.mkdir(f"edgekit_memory_models_{_MODELS_VERSION}"))
    paths = {}
    for name, spec in _SPECS.items():
        path = cache / f"{name}.tflite"
        if not path.exists():
            path.write_bytes(_convert(spec.build, spec.shapes, int8_io=spec.int8_io))
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def measured(models: dict[str, Path]):
    return {name: measure_tflm(path) for name, path in models.items()}


@pytest.mark.parametrize("name", sorted(_SPECS))
def test_estimate_equals_tflm_to_the_byte(name: str, models, measured) -> None:
    report = analyze_tflite(models[name])
    truth = measured[name]
    assert report.arena_bytes == truth.arena_bytes
    assert report.head_bytes == truth.head_bytes
    assert report.tail_bytes == truth.tail_bytes


def test_models_cover_the_common_operators(models) -> None:
    opcodes = set()
    for path in models.values():
        opcodes |= {op.opcode for op in analyze_tflite(path).per_op}
    assert {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "PAD",
        "HARD_SWISH",
        "CONCATENATION",
        "MEAN",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "BATCH_MATMUL",
        "SQUARED_DIFFERENCE",
        "RSQRT",
        "MUL",
        "TRANSPOSE",
        "STRIDED_SLICE",
        "LOGISTIC",
        "QUANTIZE",
        "DEQUANTIZE",
        "TANH",
        "LEAKY_RELU",
        "SLICE",
        "RESHAPE",
    } <= opcodes


def test_interpreter_fails_one_byte_below_the_estimate(models) -> None:
    report = analyze_tflite(models["cnn"])
    worker = _Worker(models["cnn"])
    try:
        assert worker.ask("try", report.arena_bytes)[0]
        assert not worker.ask("try", report.arena_bytes - 1)[0]
    finally:
        worker.close()


@pytest.mark.parametrize("offset", [0, 1, -1, 4096, -4096, "tiny", "huge"])
def test_a_wrong_expected_arena_still_measures_the_minimum(offset, models, measured) -> None:
    truth = measured["cnn"].arena_bytes
    expected = {"tiny": 2, "huge": 10 * truth}.get(offset) or truth + int(offset)
    assert measure_tflm(models["cnn"], expected=expected) == measured["cnn"]


@dataclass(frozen=True)
class _Board:
    name: str
    sram_budget_bytes: int
    flash_budget_bytes: int
    pointer_bytes: int = 8
    alignment_bytes: int = 16


def test_fits_exactly_at_the_measured_boundary(models, measured) -> None:
    report = analyze_tflite(models["attention"])
    arena, flash = measured["attention"].arena_bytes, models["attention"].stat().st_size
    exact = fits(report, _Board("exact", arena, flash))
    assert exact.fits and exact.sram_margin_bytes == 0 and exact.flash_margin_bytes == 0
    short = fits(report, _Board("short", arena - 1, flash))
    assert not short.fits and short.sram_margin_bytes == -1
    assert "OVER by" in short.summary()
    assert not fits(report, _Board("small flash", arena, flash - 1)).fits


def test_fits_reanalyses_for_a_32_bit_board(models) -> None:
    report = analyze_tflite(models["cnn"])
    firmware = analyze_tflite(models["cnn"], pointer_bytes=4)
    verdict = fits(report, _Board("m4", firmware.arena_bytes, 1 << 20, pointer_bytes=4))
    assert verdict.arena_bytes == firmware.arena_bytes < report.arena_bytes
    assert verdict.fits and verdict.sram_margin_bytes == 0


def test_flash_breakdown_accounts_for_every_byte(models) -> None:
    for path in models.values():
        flash = analyze_tflite(path).flash
        parts = (
            flash.weight_bytes
            + flash.bias_bytes
            + flash.other_constant_bytes
            + flash.quantization_bytes
            + flash.overhead_bytes
        )
        assert flash.total_bytes == parts == path.stat().st_size
        assert flash.weight_bytes > 0 and flash.overhead_bytes > 0


def test_peak_operator_holds_the_most_live_memory(models) -> None:
    report = analyze_tflite(models["cnn"])
    peak = next(op for op in report.per_op if op.index == report.peak_op[0])
    assert peak.live_bytes == max(op.live_bytes for op in report.per_op)
    assert sum(t.bytes for t in report.peak_tensors) == peak.live_bytes <= report.head_bytes
    assert all(op.extent_bytes <= report.head_bytes for op in report.per_op)
    assert len(report.rows()) == len(report.per_op)
