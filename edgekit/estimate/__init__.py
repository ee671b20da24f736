"""Memory model: exact TFLite Micro tensor arena and flash per model, and board budget checks.

``analyze_tflite`` replays what TFLite Micro allocates for a .tflite file (allocator objects,
per-tensor and per-operator structs, kernel buffers, the greedy memory plan of activations and
scratch buffers) and returns the smallest arena that works; ``measure_tflm_arena`` measures the
same number with the real tflite-micro interpreter; ``fits`` checks a report against a board.
"""

from __future__ import annotations

from edgekit.estimate.budget import FitReport, fits
from edgekit.estimate.errors import (
    MemoryModelError,
    ModelFileError,
    TflmRuntimeError,
    UnsupportedOperatorError,
)
from edgekit.estimate.flash import FlashReport
from edgekit.estimate.from_config import ConfigEstimate, estimate_config, estimate_config_bytes
from edgekit.estimate.ground_truth import TflmMeasurement, measure_tflm, measure_tflm_arena
from edgekit.estimate.report import MemoryReport, OpMemory, TensorUse, analyze_tflite
from edgekit.estimate.runtime import FIRMWARE_32BIT, PYTHON_X86_64, RuntimeConfig
from edgekit.estimate.tail import KERNELS

__all__ = [
    "FIRMWARE_32BIT",
    "KERNELS",
    "PYTHON_X86_64",
    "ConfigEstimate",
    "FitReport",
    "FlashReport",
    "MemoryModelError",
    "MemoryReport",
    "ModelFileError",
    "OpMemory",
    "RuntimeConfig",
    "TensorUse",
    "TflmMeasurement",
    "TflmRuntimeError",
    "UnsupportedOperatorError",
    "analyze_tflite",
    "estimate_config",
    "estimate_config_bytes",
    "fits",
    "measure_tflm",
    "measure_tflm_arena",
]
