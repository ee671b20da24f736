"""Accuracy of the file-based memory model against the real TFLite Micro interpreter.

For every model: the arena ``analyze_tflite`` predicts for the x86-64 tflite-micro Python build
is compared with the smallest ``arena_size`` that the interpreter accepts
(``measure_tflm``), plus the head/tail split of TFLM's allocation report. The 32-bit firmware
estimate is listed alongside (it cannot be measured on this machine). Prints a table and the
exact-match rate, max and mean absolute error, and the time per ``analyze_tflite`` call.

Run: PYTHONPATH=. .venv/bin/python benchmarks/memory_accuracy.py [--cache-dir DIR] [--json F]

The hand-made models are int8 Keras models converted with TensorFlow (full-integer
quantization, int8 in/out unless noted) covering the operators of issue #4; converted files are
cached in ``--cache-dir``. Other model sources (e.g. search-space samples) plug in by adding to
the ``models`` dict handed to :func:`evaluate`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.estimate import MemoryReport, TflmMeasurement, analyze_tflite, measure_tflm


def _convert(build: Callable[..., Any], *shapes: tuple[int, ...], int8_io: bool = True) -> bytes:
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(0)
    inputs = [tf.keras.Input(shape, batch_size=1) for shape in shapes]
    model = tf.keras.Model(inputs, build(tf, *inputs))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, *s)).astype(np.float32) for s in shapes]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _hard_swish(tf: Any, t: Any) -> Any:
    return t * tf.nn.relu6(t + 3.0) * 0.16666667


# name -> (builder(tf, *inputs) -> output, input shapes, int8 in/out)
HANDMADE: dict[str, tuple[Callable[..., Any], tuple[tuple[int, ...], ...], bool]] = {}


def _model(name: str, *shapes: tuple[int, ...], int8_io: bool = True):
    def register(build: Callable[..., Any]) -> Callable[..., Any]:
        HANDMADE[name] = (build, shapes, int8_io)
        return build

    return register


def _L(tf: Any) -> Any:
    return tf.keras.layers


@_model("conv_dw_mean_fc_softmax", (16, 16, 3))
def _m1(tf, x):
    L = _L(tf)
    x = L.DepthwiseConv2D(3, padding="same")(L.Conv2D(8, 3, padding="same", activation="relu")(x))
    return L.Softmax()(L.Dense(4)(L.GlobalAveragePooling2D()(x)))


@_model("add_residual", (12, 12, 4))
def _m2(tf, x):
    L = _L(tf)
    a = L.Conv2D(8, 3, strides=2, padding="same")(x)
    return L.Add()([a, L.Conv2D(8, 1)(a)])


@_model("avgpool_maxpool", (20, 20, 2))
def _m3(tf, x):
    L = _L(tf)
    return L.MaxPooling2D(2)(L.AveragePooling2D(2)(L.Conv2D(6, 3)(x)))


@_model("reshape_fc", (4, 4, 3))
def _m4(tf, x):
    L = _L(tf)
    return L.Dense(10)(L.Reshape((48,))(L.Conv2D(3, 3, padding="same")(x)))


@_model("mul_sub", (9, 9, 3))
def _m5(tf, x):
    L = _L(tf)
    a = L.Conv2D(5, 3, padding="same")(x)
    return L.Subtract()([L.Multiply()([a, a]), a])


@_model("concat", (10, 10, 3))
def _m6(tf, x):
    L = _L(tf)
    return L.Concatenate()([L.Conv2D(4, 1)(x), L.Conv2D(6, 3, padding="same")(x), x])


@_model("hard_swish", (6, 6, 2))
def _m7(tf, x):
    L = _L(tf)
    return L.Lambda(lambda t: _hard_swish(tf, t))(L.Conv2D(4, 3, padding="same")(x))


@_model("add_mul_logistic", (8, 8, 3))
def _m8(tf, x):
    L = _L(tf)
    x = L.Conv2D(8, 3, padding="same", activation="hard_swish")(x)
    return L.Lambda(tf.sigmoid)(L.Activation(tf.nn.relu6)(x))


@_model("pad_mean", (11, 11, 2))
def _m9(tf, x):
    L = _L(tf)
    x = L.ZeroPadding2D(1)(L.Conv2D(7, 3)(x))
    return L.Lambda(lambda t: tf.reduce_mean(t, axis=[1, 2], keepdims=True))(x)


@_model("dw_multiplier_strided", (17, 17, 3))
def _m10(tf, x):
    L = _L(tf)
    return L.DepthwiseConv2D(5, strides=2, depth_multiplier=2, padding="same")(L.Conv2D(6, 1)(x))


@_model("fc_chain", (50,))
def _m11(tf, x):
    L = _L(tf)
    return L.Dense(3)(L.Dense(33, activation="relu")(L.Dense(70, activation="relu")(x)))


@_model("transpose_strided_slice", (8, 8, 2))
def _m12(tf, x):
    L = _L(tf)
    y = L.Conv2D(4, 3, padding="same")(x)
    return L.Lambda(lambda t: tf.transpose(t, [0, 3, 1, 2])[:, 1:3, 2:6, :])(y)


@_model("batch_matmul_adjoint", (6, 5))
def _m13(tf, x):
    L = _L(tf)
    return L.Lambda(lambda ab: tf.linalg.matmul(ab[0], ab[1], transpose_b=True))(
        [L.Dense(8)(x), L.Dense(8)(x)]
    )


@_model("attention", (6, 5))
def _m14(tf, x):
    L = _L(tf)
    q, k, v = L.Dense(8)(x), L.Dense(8)(x), L.Dense(8)(x)

    def attend(t):
        return tf.nn.softmax(tf.linalg.matmul(t[0], t[1], transpose_b=True)) @ t[2]

    return L.Lambda(attend)([q, k, v])


@_model("softmax_tanh", (7, 9))
def _m15(tf, x):
    L = _L(tf)
    return L.Softmax()(L.Lambda(tf.tanh)(L.Dense(12)(x)))


@_model("rsqrt", (5,))
def _m16(tf, x):
    L = _L(tf)
    return L.Lambda(lambda t: tf.math.rsqrt(t * t + 1.0))(L.Dense(6)(x))


@_model("slice_leaky_relu", (9, 9, 1))
def _m17(tf, x):
    L = _L(tf)
    y = L.LeakyReLU(0.2)(L.Conv2D(5, 3)(x))
    return L.Lambda(lambda t: tf.slice(t, [0, 1, 1, 0], [1, 4, 5, 3]))(y)


@_model("two_inputs_concat", (7,), (7,))
def _m18(tf, a, b):
    L = _L(tf)
    return L.Dense(4)(L.Concatenate()([L.Dense(6)(a), b]))


@_model("relu", (30,))
def _m19(tf, x):
    return _L(tf).ReLU()(x)


@_model("quantize_dequantize", (13,), int8_io=False)
def _m20(tf, x):
    L = _L(tf)
    return L.ReLU(6.0)(L.Dense(9)(x))


@_model("layer_norm", (5, 9))
def _m21(tf, x):
    L = _L(tf)
    return L.LayerNormalization()(L.Dense(12)(x))


@_model("mean_one_axis", (6, 9))
def _m22(tf, x):
    L = _L(tf)
    return L.Lambda(lambda t: tf.reduce_mean(t, axis=1))(L.Dense(10)(x))


@_model("split_pack", (4, 4, 2))
def _m23(tf, x):
    L = _L(tf)
    return L.Lambda(lambda t: tf.stack(tf.split(t, 3, axis=-1), axis=1))(L.Conv2D(6, 1)(x))


@_model("unpack_gather", (3, 5))
def _m24(tf, x):
    L = _L(tf)
    y = L.Dense(6)(x)
    return L.Lambda(lambda t: tf.gather(tf.unstack(t, axis=1)[1], [0, 2, 3], axis=-1))(y)


@_model("min_max_squared_difference", (8,))
def _m25(tf, x):
    L = _L(tf)

    def combine(ab):
        return tf.math.squared_difference(tf.maximum(ab[0], ab[1]), tf.minimum(ab[0], ab[1]))

    return L.Lambda(combine)([L.Dense(6)(x), L.Dense(6)(x)])


@_model("sum_reduce_max_argmax", (6, 6, 2))
def _m26(tf, x):
    L = _L(tf)

    def reduce(t):
        total = tf.reduce_sum(t, axis=1) + tf.reduce_max(t, axis=1)
        return tf.cast(tf.argmax(total, axis=-1, output_type=tf.int32), tf.float32)

    return L.Lambda(reduce)(L.Conv2D(5, 3, padding="same")(x))


@_model("prelu", (7,))
def _m27(tf, x):
    L = _L(tf)
    return L.PReLU()(L.ReLU(6.0)(L.Add()([L.Dense(10)(x), L.Dense(10)(x)])))


@_model("l2_norm_log_softmax", (4,))
def _m28(tf, x):
    L = _L(tf)
    y = L.Dense(11)(x)
    return L.Lambda(lambda t: tf.nn.log_softmax(tf.math.l2_normalize(t, axis=-1)))(y)


@_model("transpose_conv", (5, 5, 2))
def _m29(tf, x):
    L = _L(tf)
    return L.Conv2DTranspose(4, 3, strides=2, padding="same")(L.Conv2D(3, 3, padding="same")(x))


@_model("resize_nearest_bilinear", (5, 5, 2))
def _m30(tf, x):
    L = _L(tf)

    def resize(t):
        t = tf.image.resize(t, (10, 10), method="nearest")
        return tf.image.resize(t, (13, 13), method="bilinear")

    return L.Lambda(resize)(L.Conv2D(3, 3, padding="same")(x))


@_model("relu6_after_concat", (7,))
def _m31(tf, x):
    L = _L(tf)
    return L.ReLU(6.0)(L.Concatenate()([L.Dense(5)(x), L.Dense(3)(x)]))


@_model("abs", (7,))
def _m32(tf, x):
    L = _L(tf)
    return L.Dense(3)(L.Lambda(tf.abs)(L.Dense(5)(x)))


@_model("pad_dw_valid_no_bias", (9, 7, 3))
def _m33(tf, x):
    L = _L(tf)
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(L.Conv2D(4, 1, use_bias=False)(x))
    return L.DepthwiseConv2D(3, padding="valid")(x)


@_model("mobilenet_stem", (48, 48, 3))
def _m34(tf, x):
    L = _L(tf)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(
        L.DepthwiseConv2D(3, padding="same")(x)
    )
    return L.Dense(10)(L.GlobalAveragePooling2D()(x))


@_model("inverted_residuals", (32, 32, 3))
def _m35(tf, x):
    L = _L(tf)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
    for expand in (3, 4):
        y = L.Conv2D(8 * expand, 1, activation="relu6")(x)
        y = L.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
        x = L.Add()([x, L.Conv2D(8, 1)(y)])
    x = L.Conv2D(16, 1)(x)
    return L.Softmax()(L.Dense(6)(L.Flatten()(L.AveragePooling2D(4)(x))))


def handmade_models(cache_dir: Path) -> dict[str, bytes]:
    """Convert (or load from ``cache_dir``) every hand-made model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cache_dir.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, (build, shapes, int8_io) in HANDMADE.items():
        path = cache_dir / f"{name}.tflite"
        if not path.exists():
            path.write_bytes(_convert(build, *shapes, int8_io=int8_io))
        models[name] = path.read_bytes()
    return models


@dataclass(frozen=True)
class Row:
    name: str
    opcodes: tuple[str, ...]
    measured: TflmMeasurement
    estimate: MemoryReport
    firmware: MemoryReport  # 32-bit estimate, not measurable here
    analyze_seconds: float  # median of repeated analyze_tflite calls

    @property
    def error(self) -> int:
        return self.estimate.arena_bytes - self.measured.arena_bytes

    @property
    def split_exact(self) -> bool:
        return (self.estimate.head_bytes, self.estimate.tail_bytes) == (
            self.measured.head_bytes,
            self.measured.tail_bytes,
        )


def evaluate(models: dict[str, bytes], repeats: int = 5) -> list[Row]:
    """Measure and estimate every model."""
    rows = []
    for name, data in models.items():
        estimate = analyze_tflite(data)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            analyze_tflite(data)
            times.append(time.perf_counter() - start)
        rows.append(
            Row(
                name=name,
                opcodes=tuple(sorted({op.opcode for op in estimate.per_op})),
                measured=measure_tflm(data),
                estimate=estimate,
                firmware=analyze_tflite(data, pointer_bytes=4),
                analyze_seconds=statistics.median(times),
            )
        )
    return rows


def summarize(rows: list[Row]) -> dict[str, Any]:
    errors = [abs(row.error) for row in rows]
    return {
        "models": len(rows),
        "exact_match_percent": 100.0 * sum(e == 0 for e in errors) / len(rows),
        "head_tail_exact_percent": 100.0 * sum(r.split_exact for r in rows) / len(rows),
        "max_abs_error_bytes": max(errors),
        "mean_abs_error_bytes": statistics.fmean(errors),
        "operators": sorted({op for row in rows for op in row.opcodes}),
        "median_analyze_ms": 1000 * statistics.median(r.analyze_seconds for r in rows),
        "max_analyze_ms": 1000 * max(r.analyze_seconds for r in rows),
    }


def print_report(rows: list[Row], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="TFLite Micro arena: estimate vs interpreter (x86-64 Python build)")
    for column in ("model", "measured", "estimate", "error", "head", "tail", "limited by",
                   "32-bit est.", "ms"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "limited by") else "right")
    for row in rows:
        table.add_row(
            row.name,
            str(row.measured.arena_bytes),
            str(row.estimate.arena_bytes),
            str(row.error),
            f"{row.estimate.head_bytes}{'' if row.split_exact else ' *'}",
            str(row.estimate.tail_bytes),
            row.estimate.limited_by,
            str(row.firmware.arena_bytes),
            f"{1000 * row.analyze_seconds:.1f}",
        )
    console = Console(width=160)
    console.print(table)
    console.print(
        f"exact match {summary['exact_match_percent']:.1f}% of {summary['models']} models "
        f"(head/tail split exact {summary['head_tail_exact_percent']:.1f}%), max |error| "
        f"{summary['max_abs_error_bytes']} B, mean |error| {summary['mean_abs_error_bytes']:.2f}"
        f" B; analyze_tflite median {summary['median_analyze_ms']:.1f} ms "
        f"(max {summary['max_analyze_ms']:.1f} ms); operators: {', '.join(summary['operators'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edgekit_memory_models",
        help="where converted hand-made models are kept between runs",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and summary here")
    args = parser.parse_args()
    models = handmade_models(args.cache_dir)
    rows = evaluate(models)
    summary = summarize(rows)
    print_report(rows, summary)
    if args.json:
        payload = {
            "summary": summary,
            "rows": [
                {
                    "model": r.name,
                    "operators": r.opcodes,
                    "measured_arena_bytes": r.measured.arena_bytes,
                    "measured_head_bytes": r.measured.head_bytes,
                    "measured_tail_bytes": r.measured.tail_bytes,
                    "estimated_arena_bytes": r.estimate.arena_bytes,
                    "estimated_head_bytes": r.estimate.head_bytes,
                    "estimated_tail_bytes": r.estimate.tail_bytes,
                    "firmware_32bit_arena_bytes": r.firmware.arena_bytes,
                    "flash_bytes": r.estimate.flash_bytes,
                    "analyze_ms": 1000 * r.analyze_seconds,
                }
                for r in rows
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
