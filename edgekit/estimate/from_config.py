"""Arena and flash of an architecture config, without exporting or converting it.

The TFLite graph that ``edgekit.export`` and TensorFlow's converter make from a config is
synthesised (operator order, tensors, shapes, quantization, the converter's fusions and
merges; see :mod:`edgekit.estimate._config_graph`) and run through the same TFLite Micro model
as :func:`~edgekit.estimate.analyze_tflite`, so the arena (minimum, head and tail) equals the
file-based figure for the exported model byte for byte. Flash (the .tflite size) is modelled
from what the flatbuffer stores plus calibrated overheads: within about 0.2% for whole-image
tiny-cnn and tiny-vit models; patched tiny-cnn models can be off by up to ~3%, because the
converter shares a buffer between patches whose quantized biases coincide, which depends on
the calibration images.

:func:`estimate_config` gives the full picture (peak operator, what limits the arena);
:func:`estimate_config_bytes` is the fast path for a search loop (pieces of the graph cached,
see :mod:`edgekit.estimate._config_fast`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edgekit.errors import ConfigError
from edgekit.estimate._config_fast import fast_figures
from edgekit.estimate._config_graph import graph_flash_bytes, model_info
from edgekit.estimate._config_spaces import SpaceConfig, build_graph
from edgekit.estimate.report import analyze_model, runtime_for
from edgekit.estimate.runtime import RuntimeConfig
from edgekit.spaces import ArchConfig, get_space
from edgekit.spaces.tiny_cnn import TinyCnnConfig
from edgekit.spaces.tiny_resnet import TinyResnetConfig
from edgekit.spaces.tiny_vit import TinyVitConfig
from edgekit.units import format_size

if TYPE_CHECKING:
    import torch.nn as nn

logger = logging.getLogger(__name__)


class Board(Protocol):
    """What the estimate reads from a board (``edgekit.profiles.DeviceProfile`` has it)."""

    pointer_bytes: int
    alignment_bytes: int


@dataclass(frozen=True)
class ConfigEstimate:
    """Arena and flash of the model the exporter makes from one config, for one TFLM build.

    ``arena_bytes``, ``head_bytes`` and ``tail_bytes`` mean what they mean in
    :class:`~edgekit.estimate.MemoryReport` (and equal it for the exported model);
    ``flash_bytes`` is the size of the .tflite file the exporter ships.
    """

    arena_bytes: int
    head_bytes: int
    tail_bytes: int
    flash_bytes: int
    peak_op: tuple[int, str] | None
    limited_by: str
    op_count: int
    tensor_count: int
    runtime: RuntimeConfig
    seconds: float

    @property
    def layout_bytes(self) -> int:
        return self.head_bytes + self.tail_bytes

    def summary(self) -> str:
        peak = f"peak at op {self.peak_op[0]} {self.peak_op[1]}" if self.peak_op else "no ops"
        return (
            f"arena {format_size(self.arena_bytes)} ({self.arena_bytes} B: head "
            f"{self.head_bytes} + tail {self.tail_bytes}, limited by {self.limited_by}), "
            f"flash {format_size(self.flash_bytes)}; {self.op_count} ops, {peak} "
            f"[{self.runtime.name}]"
        )


def _runtime(pointer_bytes: int, alignment: int, device: Board | None) -> RuntimeConfig:
    if device is not None:
        pointer_bytes, alignment = device.pointer_bytes, device.alignment_bytes
    return _runtime_for(pointer_bytes, alignment)


@functools.lru_cache(maxsize=64)
def _runtime_for(pointer_bytes: int, alignment: int) -> RuntimeConfig:
    # One object per build, so the caches keyed by it hash and compare it cheaply.
    return runtime_for(pointer_bytes, alignment)


def _checked(cfg: ArchConfig) -> SpaceConfig:
    if not isinstance(cfg, TinyCnnConfig | TinyResnetConfig | TinyVitConfig):
        raise ConfigError(
            f"no config-based memory model for {type(cfg).__name__}; expected a tiny-cnn, "
            "tiny-resnet or tiny-vit config"
        )
    return cfg


def estimate_config(
    cfg: ArchConfig,
    *,
    pointer_bytes: int = 8,
    alignment: int = 16,
    device: Board | None = None,
) -> ConfigEstimate:
    """Arena and flash of the int8 model ``edgekit.export`` would produce from ``cfg``.

    The defaults model the x86-64 tflite-micro Python package (what ``analyze_tflite`` and
    ``measure_tflm_arena`` use); ``pointer_bytes=4`` a 32-bit firmware build; ``device`` (a
    DeviceProfile) uses the board's pointer size and alignment. ``cfg`` is validated against
    its space; raises ConfigError for invalid configs and MemoryModelError for bad parameters.
    """
    started = time.perf_counter()
    cfg = _checked(cfg)
    get_space(cfg.space, cfg.num_classes, cfg.in_channels).validate(cfg)
    runtime = _runtime(pointer_bytes, alignment, device)
    ops, tensors = build_graph(cfg).finish()
    report = analyze_model(b"", model_info(ops, tensors), runtime)
    flash = graph_flash_bytes(ops, tensors)
    estimate = ConfigEstimate(
        arena_bytes=report.arena_bytes,
        head_bytes=report.head_bytes,
        tail_bytes=report.tail_bytes,
        flash_bytes=flash,
        peak_op=report.peak_op,
        limited_by=report.limited_by,
        op_count=len(ops),
        tensor_count=len(tensors),
        runtime=runtime,
        seconds=time.perf_counter() - started,
    )
    logger.debug("%s", estimate.summary())
    return estimate


def estimate_config_bytes(
    cfg: ArchConfig,
    pointer_bytes: int = 4,
    *,
    alignment: int = 16,
    device: Board | None = None,
) -> tuple[int, int]:
    """(arena bytes, flash bytes) of ``cfg``: the fast path for a search loop.

    Same numbers as :func:`estimate_config` (defaults: a 32-bit firmware build). ``cfg`` is
    not validated here (the search produces valid configs); a patch grid too large for the
    network still raises ConfigError.
    """
    return _estimate_bytes(_checked(cfg), _runtime(pointer_bytes, alignment, device))


# runtime -> config -> (arena, flash): a search asks again for configs it has seen. Plain dicts,
# not an lru_cache: that keeps a key tuple per entry, which Python's garbage collector walks
# on every full pass (one more per config a search estimates: they made its full passes come
# ~2x as often, at ~0.2 s each with the fast path's caches warm).
_ESTIMATES: dict[RuntimeConfig, dict[SpaceConfig, tuple[int, int]]] = {}
_MAX_ESTIMATES = 65536  # per runtime; past it the older half is forgotten


def clear_estimates() -> None:
    """Forget every config estimated by :func:`estimate_config_bytes` (for timing)."""
    _ESTIMATES.clear()


def _estimate_bytes(cfg: SpaceConfig, runtime: RuntimeConfig) -> tuple[int, int]:
    known = _ESTIMATES.get(runtime)
    if known is None:
        known = _ESTIMATES[runtime] = {}
    estimate = known.get(cfg)
    if estimate is None:
        if len(known) >= _MAX_ESTIMATES:
            for old in list(itertools.islice(known, _MAX_ESTIMATES // 2)):
                del known[old]
        estimate = known[cfg] = _estimate_anew(cfg, runtime)
    return estimate


def _estimate_anew(cfg: SpaceConfig, runtime: RuntimeConfig) -> tuple[int, int]:
    try:
        figures, flash = fast_figures(cfg, runtime)
    except NotImplementedError:  # a runtime the fast path does not cover (alignment < 8)
        ops, tensors = build_graph(cfg).finish()
        report = analyze_model(b"", model_info(ops, tensors), runtime)
        flash = graph_flash_bytes(ops, tensors)
        return report.arena_bytes, flash
    return figures.arena_bytes, flash


def trained_like_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` (in eval mode) with generic random weights and BatchNorm statistics, as the
    config-based estimate assumes: no exact zeros or ones, which the converter would fold
    away (an untrained net's zero biases and unit LayerNorm scales drop ops from the graph)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if parameter.dim() == 1 and name.endswith("weight"):
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.3 if parameter.dim() > 1 else 0.2)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()
