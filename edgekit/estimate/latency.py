"""Analytic inference latency of a config on a board (uncalibrated until on-device timing).

The model walks the config's layer plan (pure Python, no torch) and adds, per TFLite Micro
operator, a fixed dispatch overhead plus its work at a per-kind rate::

    cycles = invoke_overhead_cycles
             + sum over ops of  op_overhead_cycles + macs / <kind>_macs_per_cycle
                                                   + elements * <kind>_cycles_per_element
    latency_ms = 1000 * cycles / clock_hz

MAC kinds: ``conv`` (dense convolutions and fully connected layers), ``depthwise``, ``matmul``
(BATCH_MATMUL). Element kinds (output elements): ``elementwise`` (ADD, MUL, HARD_SWISH, MEAN,
PAD, slices, concatenation, transposes, reshapes), ``softmax`` and ``layer_norm`` (the whole
MEAN/SUB/MUL/RSQRT/ADD chain). Coefficients come from the profile's ``[latency]`` table;
``macs_per_cycle`` sets all three MAC rates at once, the per-kind keys override it, and keys
the table leaves out fall back to :data:`CORE_PRIORS` for the board's core. Every number here
is a documented prior, not a measurement; the on-device calibration issue replaces it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import ProfileError

if TYPE_CHECKING:
    from edgekit.profiles import DeviceProfile
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

MAC_KINDS = ("conv", "depthwise", "matmul")
ELEMENT_KINDS = ("elementwise", "softmax", "layer_norm")
COEFFICIENTS = (
    "macs_per_cycle",
    *(f"{kind}_macs_per_cycle" for kind in MAC_KINDS),
    *(f"{kind}_cycles_per_element" for kind in ELEMENT_KINDS),
    "op_overhead_cycles",
    "invoke_overhead_cycles",
)

# Uncalibrated priors per core family (see device_profiles/*.toml for the sources). Cores with
# the DSP/SIMD extension run CMSIS-NN (or ESP-NN) int8 kernels; the others the reference ones.
_DSP_M7 = {
    "conv_macs_per_cycle": 0.6,
    "depthwise_macs_per_cycle": 0.25,
    "matmul_macs_per_cycle": 0.15,
    "elementwise_cycles_per_element": 4.0,
    "softmax_cycles_per_element": 40.0,
    "layer_norm_cycles_per_element": 30.0,
    "op_overhead_cycles": 2000.0,
    "invoke_overhead_cycles": 10000.0,
}
_DSP_M4 = {
    "conv_macs_per_cycle": 0.35,
    "depthwise_macs_per_cycle": 0.15,
    "matmul_macs_per_cycle": 0.1,
    "elementwise_cycles_per_element": 6.0,
    "softmax_cycles_per_element": 60.0,
    "layer_norm_cycles_per_element": 45.0,
    "op_overhead_cycles": 2500.0,
    "invoke_overhead_cycles": 10000.0,
}
_NO_DSP = {
    "conv_macs_per_cycle": 0.08,
    "depthwise_macs_per_cycle": 0.06,
    "matmul_macs_per_cycle": 0.06,
    "elementwise_cycles_per_element": 10.0,
    "softmax_cycles_per_element": 100.0,
    "layer_norm_cycles_per_element": 80.0,
    "op_overhead_cycles": 3000.0,
    "invoke_overhead_cycles": 15000.0,
}
_HOST = {
    "conv_macs_per_cycle": 1.0,
    "depthwise_macs_per_cycle": 0.5,
    "matmul_macs_per_cycle": 0.5,
    "elementwise_cycles_per_element": 2.0,
    "softmax_cycles_per_element": 20.0,
    "layer_norm_cycles_per_element": 15.0,
    "op_overhead_cycles": 1000.0,
    "invoke_overhead_cycles": 5000.0,
}
CORE_PRIORS: dict[str, dict[str, float]] = {
    "cortex-m7": _DSP_M7,
    "cortex-m55": _DSP_M7,
    "cortex-m85": _DSP_M7,
    "xtensa-lx7": _DSP_M7,
    "cortex-m4": _DSP_M4,
    "cortex-m33": _DSP_M4,
    "host": _HOST,
}


@dataclass(frozen=True)
class OpCost:
    """One TFLite Micro operator's work: multiply-accumulates and output elements."""

    kind: str  # one of MAC_KINDS or ELEMENT_KINDS
    macs: int = 0
    elements: int = 0
    ops: int = 1  # operators it stands for (a low-rank 1x1 conv is two CONV_2Ds)


def coefficients(profile: DeviceProfile) -> dict[str, float]:
    """The latency coefficients for ``profile``: its ``[latency]`` table over the core's
    priors. Raises ProfileError for unknown or non-positive keys."""
    table: Mapping[str, float] = profile.latency
    for key, value in table.items():
        if key not in COEFFICIENTS:
            close = difflib.get_close_matches(key, COEFFICIENTS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {COEFFICIENTS}"
            raise ProfileError(f"{profile.name}: unknown latency coefficient {key!r}; {hint}")
        if value < 0 or (value == 0 and key.endswith("macs_per_cycle")):
            raise ProfileError(
                f"{profile.name}: latency coefficient {key}={value!r}: expected a positive number"
            )
    has_dsp = profile.dsp or profile.core == "host"
    priors = CORE_PRIORS.get(profile.core, _DSP_M4) if has_dsp else _NO_DSP
    out = dict(priors)
    if "macs_per_cycle" in table:
        for kind in MAC_KINDS:
            out[f"{kind}_macs_per_cycle"] = table["macs_per_cycle"]
    out.update({k: v for k, v in table.items() if k != "macs_per_cycle"})
    return out


def estimate_latency_ms(space: SearchSpace, cfg: ArchConfig, profile: DeviceProfile) -> float:
    """Estimated single-image inference time of ``cfg`` on ``profile``'s board, in ms."""
    coeff = coefficients(profile)
    cycles = coeff["invoke_overhead_cycles"]
    for cost in op_costs(space, cfg):
        cycles += cost.ops * coeff["op_overhead_cycles"]
        if cost.kind in MAC_KINDS:
            cycles += cost.macs / coeff[f"{cost.kind}_macs_per_cycle"]
        else:
            cycles += cost.elements * coeff[f"{cost.kind}_cycles_per_element"]
    return 1000.0 * cycles / profile.clock_hz


def op_costs(space: SearchSpace, cfg: ArchConfig) -> list[OpCost]:
    """Per-operator work of ``cfg``, from the space's ``layer_plan`` (tiny-cnn and tiny-vit);
    spaces without one count every MAC as a dense convolution."""
    plan_of = getattr(space, "layer_plan", None)
    if not callable(plan_of):
        logger.debug("space %s has no layer_plan; latency from its MAC count only", space.name)
        return [OpCost("conv", macs=space.count(cfg).macs)]
    plan = list(plan_of(cfg))
    if plan and hasattr(plan[0], "in_shape"):
        return _cnn_costs(space, cfg, plan)
    return list(_vit_costs(plan))


def _elements(shape: Iterable[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def _area(region: tuple[int, int, int, int]) -> int:
    return (region[1] - region[0]) * (region[3] - region[2])


def _cnn_costs(space: SearchSpace, cfg: ArchConfig, layers: list[Any]) -> list[OpCost]:
    patch_plan = space.patch_plan(cfg) if hasattr(space, "patch_plan") else None
    patched = 0 if patch_plan is None else patch_plan.num_layers
    costs: list[OpCost] = []
    if patch_plan is not None:
        # MCUNetV2 patches: a slice per patch, PADs where a patch touches the border, every
        # patched layer once per patch on its halo-enlarged region, then concatenations.
        tiles = len(patch_plan.patches)
        channels = layers[0].in_shape[2]
        costs.append(
            OpCost("elementwise", ops=tiles,
                   elements=sum(_area(s[0].in_region) for s in patch_plan.patches) * channels)
        )  # fmt: skip
        for i, layer in enumerate(layers[:patched]):
            steps = [s[i] for s in patch_plan.patches]
            pixels = sum(_area(step.out_region) for step in steps)
            full = layer.out_shape[0] * layer.out_shape[1]
            kind = "depthwise" if layer.op == "depthwise_conv2d" else "conv"
            costs.append(
                OpCost(kind, macs=round(layer.macs * pixels / full),
                       ops=tiles * (2 if layer.rank else 1))
            )  # fmt: skip
            padded = [s for s in steps if any(s.pads)]
            if padded:
                costs.append(
                    OpCost("elementwise", ops=len(padded),
                           elements=sum(_area(s.in_region) for s in padded) * layer.in_shape[2])
                )  # fmt: skip
            if layer.residual_from:
                added = pixels * layer.out_shape[2]
                costs.append(OpCost("elementwise", ops=tiles, elements=added))
        out = _elements(layers[patched - 1].out_shape)
        costs.append(OpCost("elementwise", ops=patch_plan.grid + 1, elements=2 * out))
    for layer in layers[patched:]:
        if layer.op in ("conv2d", "depthwise_conv2d"):
            kind = "depthwise" if layer.op == "depthwise_conv2d" else "conv"
            costs.append(OpCost(kind, macs=layer.macs, ops=2 if layer.rank else 1))
            if layer.residual_from:
                costs.append(OpCost("elementwise", elements=_elements(layer.out_shape)))
        elif layer.op == "fully_connected":
            costs.append(OpCost("conv", macs=layer.macs))
        else:  # mean
            costs.append(OpCost("elementwise", elements=_elements(layer.in_shape)))
    return costs


def _vit_costs(ops: list[Any]) -> Iterable[OpCost]:
    for op in ops:
        elements = _elements(op.out_shape)
        if op.op in ("conv2d", "fully_connected"):
            yield OpCost("conv", macs=op.macs)
        elif op.op == "batch_matmul":
            yield OpCost("matmul", macs=op.macs)
        elif op.op == "softmax":
            yield OpCost("softmax", elements=elements)
        elif op.op == "layer_norm":
            # MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD
            yield OpCost("layer_norm", elements=elements, ops=9)
        else:
            yield OpCost("elementwise", elements=elements)


__all__ = [
    "COEFFICIENTS",
    "CORE_PRIORS",
    "ELEMENT_KINDS",
    "MAC_KINDS",
    "OpCost",
    "coefficients",
    "estimate_latency_ms",
    "op_costs",
]
