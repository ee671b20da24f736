"""Running a converted model in the real runtimes and comparing them.

TFLite Micro (the ``tflite-micro`` Python package: the reference kernels an MCU build starts
from) is the runtime the bundle targets; LiteRT with its reference op resolver
(``OpResolverType.BUILTIN_REF``) is the independent implementation it is checked against. Both
take int8 images quantized with the model's input scale and zero point.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgekit.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quantization:
    """Affine int8 quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Float values to int8, rounding half away from zero like TFLite's QUANTIZE."""
        import numpy as np

        scaled = np.asarray(values, dtype=np.float64) / self.scale
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return np.clip(rounded + self.zero_point, -128, 127).astype(np.int8)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        import numpy as np

        return ((values.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


@dataclass(frozen=True)
class TensorSpec:
    """Shape, type and quantization of a model input or output."""

    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, **asdict(self.quantization)}


@dataclass(frozen=True)
class Agreement:
    """TFLite Micro vs LiteRT reference kernels on the same int8 inputs.

    ``max_abs_diff`` / ``mean_abs_diff`` are in int8 output units (quantization steps);
    ``top1_agreement`` is the fraction of images whose arg-max class is the same.
    """

    images: int
    max_abs_diff: int
    mean_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def io_specs(model: bytes) -> tuple[TensorSpec, TensorSpec]:
    """(input, output) specs of a single-input, single-output model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    specs = []
    for details in (interpreter.get_input_details(), interpreter.get_output_details()):
        if len(details) != 1:
            raise ExportError(f"model has {len(details)} inputs/outputs, expected 1 of each")
        scale, zero_point = details[0]["quantization"]
        specs.append(
            TensorSpec(
                tuple(int(d) for d in details[0]["shape"]),
                details[0]["dtype"].__name__,
                Quantization(float(scale), int(zero_point)),
            )
        )
    return specs[0], specs[1]


def run_arena_size(arena_bytes: int) -> int:
    """An ``arena_size`` for :func:`run_tflm` from a measured arena: rounded up to 16 bytes,
    plus a margin (the measurement is the smallest size that works)."""
    return -(-arena_bytes // 16) * 16 + 256


def run_tflm(model: bytes, inputs: np.ndarray, arena_size: int) -> np.ndarray:
    """Int8 outputs of the TFLite Micro interpreter for int8 NHWC ``inputs``, one per invoke.

    ``arena_size`` must be enough (see :func:`edgekit.estimate.ground_truth.measure_tflm`): a
    failed allocation inside TFLite Micro may crash the process instead of raising.
    """
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"TFLite Micro cannot load the model: {e}") from e
    outputs = []
    for image in inputs:
        interpreter.set_input(image[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.stack(outputs).astype(np.int8)


def run_litert(
    model: bytes, inputs: np.ndarray, *, reference: bool = False, num_threads: int | None = None
) -> np.ndarray:
    """Outputs of LiteRT for NHWC ``inputs`` (one invoke each), in the model's output type:
    with its reference kernels (``reference``), else its default (XNNPACK) path."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interpreter = Interpreter(
        model_content=model, experimental_op_resolver_type=resolver, num_threads=num_threads
    )
    interpreter.allocate_tensors()
    (input_details,), (output_details,) = (
        interpreter.get_input_details(), interpreter.get_output_details()
    )  # fmt: skip
    outputs = []
    for image in inputs:
        interpreter.set_tensor(input_details["index"], image[None].astype(input_details["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_details["index"]).reshape(-1).copy())
    if not outputs:
        return np.zeros((0, int(output_details["shape"][-1])), output_details["dtype"])
    return np.stack(outputs)


def run_litert_reference(model: bytes, inputs: np.ndarray) -> np.ndarray:
    """Int8 outputs of LiteRT with its reference kernels for int8 NHWC ``inputs``."""
    return run_litert(model, inputs, reference=True).astype("int8")


def agreement(tflm: np.ndarray, litert: np.ndarray) -> Agreement:
    """Compare two int8 output batches (see :class:`Agreement`)."""
    import numpy as np

    diff = np.abs(tflm.astype(np.int32) - litert.astype(np.int32))
    same = tflm.argmax(axis=1) == litert.argmax(axis=1)
    return Agreement(
        images=len(tflm),
        max_abs_diff=int(diff.max()) if diff.size else 0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=float(same.mean()) if len(same) else float("nan"),
    )


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of logits (any dtype) against integer labels."""
    if len(labels) == 0:
        return float("nan")
    return float((outputs.argmax(axis=1) == labels).mean())
