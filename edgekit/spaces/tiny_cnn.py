"""The ``tiny-cnn`` search space: MCUNet / Once-for-All style inverted-residual CNNs.

Network (MobileNetV2's first four stages; every conv uses TensorFlow "SAME" padding):

    stem:    3x3 conv stride ``stem_stride`` (2, or 1 to keep the input resolution) -> BN -> ReLU6
    first:   3x3 depthwise -> BN -> ReLU6 -> 1x1 conv -> BN
    4 stages of 1..3 inverted-residual blocks (stride 2, 2, 2, 1 on a stage's first block;
    ``first_stage_stride`` 1 keeps the first stage at the stem's resolution):
             1x1 expand -> BN -> ReLU6 -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN
             (+ block input on every block but a stage's first)
             or, in the first ``fused_stages`` stages, fused blocks (EfficientNetV2's
             Fused-MBConv): 3x3 conv ``fused`` -> BN -> ReLU6 -> 1x1 project -> BN (+ input)
    global mean -> linear classifier

Base widths ``STEM_CHANNELS``, ``FIRST_CHANNELS``, ``STAGE_CHANNELS`` are scaled by the width
multiplier and rounded to multiples of 8; a block's hidden width is ``expand_ratio x`` its input.
Total stride 16, halved by a stride-1 stem and again by a stride-1 first stage, so 32 x 32
inputs end at 2 x 2, 4 x 4 or 8 x 8.

A stride-1 stem runs the stem, the first block and the first stage's expand conv at full input
resolution (as ResNet-8 runs its first convs): about 4x the MACs for the same weights, and 4x
the activation memory, which patch-based execution brings back down. A fused block replaces the
1x1 expand and depthwise convs by one dense 3x3 conv: more MACs and weights per layer, and far
fewer per-channel quantization parameters per weight (TFLite stores a scale and a zero point per
output channel of every conv, which in narrow MobileNet blocks weighs as much as the weights).
A fused block's entry in ``kernel_sizes`` holds the smallest choice (its conv is always 3x3).
With a stride-1 stem and a stride-1 first stage the network keeps ResNet-8's resolutions
(32 x 32, 16 x 16, then 8 x 8 for 32 x 32 inputs) and runs its first stage's dense 3x3 convs at
full resolution: the MACs of ResNet-8's first stage, whose activations patches shrink. The
supernet's largest subnet (its distillation teacher) keeps stride 2 there: the same weights at
4x the pixels would make it several times slower to train.

Low rank: every 1x1 expand / project conv ``in -> out`` gets rank
``r = ceil(rank_ratio * min(in, out))`` and is two stacked 1x1 convs ``in -> r -> out`` (no bias,
nothing between) when that is smaller, ``r * (in + out) < in * out``; otherwise one dense 1x1 conv
holding the product of the factors. At ``rank_ratio == 1.0`` every 1x1 conv is dense. (Same rule
as tiny-vit's projections.)

Patches (MCUNetV2): with ``patch_grid = n > 1`` the first ``patch_stages`` stages (stage 1 is
stem + first block, stage 2 adds the first inverted-residual stage) run on an n x n grid of output
patches. Each patch back-propagates the input region it needs layer by layer, slices it from the
image, zero-pads only where the region leaves the feature map (exactly the zeros SAME padding
would add) and runs every conv unpadded; the patch outputs are concatenated and the rest of the
network runs on the whole image. Outputs equal whole-image execution; the halo is recomputed,
so MACs grow. :func:`patch_plan` is the schedule, shared by the torch modules, the memory model
and the exporter (STRIDED_SLICE + PAD + VALID convs + CONCATENATION).

Canonical form: ``kernel_sizes`` / ``expand_ratios`` have ``NUM_STAGES * MAX_DEPTH`` entries
(block ``b`` of stage ``s`` is entry ``s * MAX_DEPTH + b``); entries of blocks beyond a stage's
depth hold the smallest choice, and ``patch_stages`` is the smallest choice when
``patch_grid == 1``, so every network has exactly one config and one genome.

Genome: ``r32-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22`` = resolution, width multiplier, rank
ratio, patches (``p1`` = whole image, ``p<n>s<stages>`` = n x n patches over the first stages),
then the kernel sizes and expand ratios of the active blocks, one dot-separated group per stage
(so the group lengths are the stage depths). A stride-1 stem adds the token ``st1``, fused
first stages the token ``f<stages>`` and a stride-1 first stage ``fs1`` (e.g.
``r32-st1-w0.5-rk1-p2s2-f2-fs1-k3.3.5.7-e2.3.4.6``); without them the stem and the first stage
have stride 2 and no stage is fused, so genomes written before these knobs existed decode to
the same networks.

This module imports no torch; the supernet lives in :mod:`edgekit.spaces.tiny_cnn_net`.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.errors import ConfigError
from edgekit.spaces import register_space
from edgekit.spaces._base import (
    ArchConfig,
    Counts,
    SearchSpace,
    is_factorised,
    knobs_from_vector,
    projection_rank,
)

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

RESOLUTIONS = (24, 28, 32, 40)
STEM_STRIDES = (2, 1)  # the first is the default (and what configs without the field mean)
FIRST_STAGE_STRIDES = (2, 1)  # the first inverted-residual stage's stride (default first)
FUSED_STAGES = (0, 1, 2)  # leading stages of fused blocks (later stages' maps are small)
FUSED_KERNEL = 3
WIDTH_MULTS = (0.35, 0.5, 0.75, 1.0)
RANK_RATIOS = (0.5, 0.75, 1.0)
PATCH_GRIDS = (1, 2, 3, 4)
PATCH_STAGES = (1, 2)
DEPTHS = (1, 2, 3)
KERNEL_SIZES = (3, 5, 7)
EXPAND_RATIOS = (2, 3, 4, 6)

STEM_CHANNELS = 32
FIRST_CHANNELS = 16
STAGE_CHANNELS = (24, 32, 64, 96)
STAGE_STRIDES = (2, 2, 2, 1)  # the first is first_stage_stride's default
NUM_STAGES = len(STAGE_CHANNELS)
MAX_DEPTH = max(DEPTHS)
NUM_BLOCKS = NUM_STAGES * MAX_DEPTH
CHANNEL_DIVISOR = 8
BN_EPS = 1e-5


@dataclass(frozen=True)
class TinyCnnConfig(ArchConfig):
    """One tiny-cnn architecture (see the module docstring for the canonical form)."""

    space: ClassVar[str] = "tiny-cnn"

    num_classes: int
    in_channels: int
    resolution: int
    width_mult: float
    rank_ratio: float
    patch_grid: int
    patch_stages: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    stem_stride: int = STEM_STRIDES[0]
    fused_stages: int = FUSED_STAGES[0]
    first_stage_stride: int = FIRST_STAGE_STRIDES[0]

    def __post_init__(self) -> None:
        # JSON keeps 1.0 as 1.0, but hand-written configs may say 1; keep one canonical type.
        for name in ("width_mult", "rank_ratio"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never below 90%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@functools.lru_cache(maxsize=64)
def stage_channels(width_mult: float) -> tuple[int, int, tuple[int, ...]]:
    """(stem, first block, per-stage) output channels at ``width_mult``."""
    return (
        make_divisible(STEM_CHANNELS * width_mult),
        make_divisible(FIRST_CHANNELS * width_mult),
        tuple(make_divisible(c * width_mult) for c in STAGE_CHANNELS),
    )


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME": (output size, zeros before, zeros after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


# --- the layer plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CnnLayer:
    """One layer of a tiny-cnn network, in execution order, for the memory model and exporter.

    ``op`` is ``"conv2d"`` (dense kxk: the stem and every 1x1 conv), ``"depthwise_conv2d"``,
    ``"mean"`` (global average pool over H, W) or ``"fully_connected"``. Shapes are (H, W, C)
    without the batch dimension (the classifier's are (1, 1, C)). Every conv has no bias and is
    followed by BatchNorm and then ``act`` (``"relu6"`` or ``None``); ``pads`` are its SAME zeros
    (top, bottom, left, right). ``rank`` > 0 marks a 1x1 conv stored as two stacked convs
    ``in -> rank -> out``. ``residual_from`` names the layer whose *input* is added to this
    layer's output (after BatchNorm). ``params`` counts the extracted module's parameters
    (conv weights + BN affine, or linear weight + bias); ``macs`` is for one whole image.

    In the extracted module, layer ``name`` is a module holding ``conv`` (or ``conv1`` and
    ``conv2`` when ``rank`` > 0), ``bn`` and ``act``; the classifier is an ``nn.Linear``.
    """

    name: str
    op: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    rank: int = 0
    act: str | None = None
    residual_from: str | None = None
    params: int = 0
    macs: int = 0

    @property
    def is_conv(self) -> bool:
        return self.op in ("conv2d", "depthwise_conv2d")

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per output pixel (convs)."""
        c_in, c_out = self.in_shape[2], self.out_shape[2]
        if self.rank:
            return self.rank * (c_in + c_out)
        return c_out * (c_in // self.groups) * self.kernel**2


@functools.lru_cache(maxsize=256)
def layer_plan(
    cfg: TinyCnnConfig, input_hw: tuple[int, int] | None = None
) -> tuple[CnnLayer, ...]:
    """Every layer of ``cfg`` in execution order (pure Python, no torch; ``cfg`` must be valid).

    ``input_hw`` overrides the input size (default: ``cfg.resolution`` square).
    """
    h, w = input_hw or (cfg.resolution, cfg.resolution)
    c = cfg.in_channels
    layers: list[CnnLayer] = []

    def conv(
        name: str, c_out: int, kernel: int = 1, stride: int = 1, *, depthwise: bool = False,
        act: bool = False, rank: int = 0, residual_from: str | None = None,
    ) -> None:  # fmt: skip
        nonlocal h, w, c
        out_h, top, bottom = same_padding(h, kernel, stride)
        out_w, left, right = same_padding(w, kernel, stride)
        groups = c if depthwise else 1
        weights = rank * (c + c_out) if rank else c_out * (c // groups) * kernel**2
        layers.append(
            CnnLayer(
                name, "depthwise_conv2d" if depthwise else "conv2d", (h, w, c),
                (out_h, out_w, c_out), kernel, stride, groups, (top, bottom, left, right), rank,
                "relu6" if act else None, residual_from, weights + 2 * c_out,
                out_h * out_w * weights,
            )
        )  # fmt: skip
        h, w, c = out_h, out_w, c_out

    def pointwise_rank(c_in: int, c_out: int) -> int:
        rank = projection_rank(cfg.rank_ratio, c_in, c_out)
        return rank if is_factorised(rank, c_in, c_out) else 0

    stem, first, stages = stage_channels(cfg.width_mult)
    stage_strides = (cfg.first_stage_stride, *STAGE_STRIDES[1:])
    conv("stem", stem, 3, cfg.stem_stride, act=True)
    conv("first.dw", stem, 3, depthwise=True, act=True)
    conv("first.pw", first)
    for s, c_out in enumerate(stages):
        for b in range(cfg.depths[s]):
            block, i = f"stages.{s}.{b}", s * MAX_DEPTH + b
            c_in, hidden = c, make_divisible(c * cfg.expand_ratios[i])
            stride = stage_strides[s] if b == 0 else 1
            if s < cfg.fused_stages:
                conv(f"{block}.fused", hidden, FUSED_KERNEL, stride, act=True)
                first_layer = f"{block}.fused"
            else:
                conv(f"{block}.expand", hidden, act=True, rank=pointwise_rank(c_in, hidden))
                conv(f"{block}.dw", hidden, cfg.kernel_sizes[i], stride, depthwise=True,
                     act=True)  # fmt: skip
                first_layer = f"{block}.expand"
            residual = first_layer if b > 0 else None
            conv(f"{block}.project", c_out, rank=pointwise_rank(hidden, c_out),
                 residual_from=residual)  # fmt: skip
    k = cfg.num_classes
    layers.append(CnnLayer("pool", "mean", (h, w, c), (1, 1, c)))
    layers.append(
        CnnLayer("classifier", "fully_connected", (1, 1, c), (1, 1, k), params=c * k + k,
                 macs=c * k)
    )  # fmt: skip
    return tuple(layers)


# --- the patch plan ----------------------------------------------------------------------------
Region = tuple[int, int, int, int]
"""(y0, y1, x0, x1): rows y0..y1-1 and columns x0..x1-1 of a full feature map."""


@dataclass(frozen=True)
class PatchStep:
    """One layer run on one patch.

    ``in_region`` is the part of the layer's full input this patch reads (inside the map);
    it is exactly what the previous step produced (the image, for the first step). The layer
    zero-pads it by ``pads`` (top, bottom, left, right) and runs its conv with no padding,
    which yields ``out_region`` of its full output. For a residual layer the skip tensor is the
    ``residual_from`` step's input, cropped to ``out_region``.
    """

    layer: str
    in_region: Region
    pads: tuple[int, int, int, int]
    out_region: Region


@dataclass(frozen=True)
class PatchPlan:
    """Patch schedule for the first ``num_layers`` layers of :func:`layer_plan`.

    ``patches`` holds ``grid * grid`` step lists in row-major order; concatenating their final
    outputs (each row along width, then the rows along height) gives that layer's full output.
    """

    grid: int
    num_layers: int
    patches: tuple[tuple[PatchStep, ...], ...]


def _back(out: tuple[int, int], size: int, kernel: int, stride: int, before: int) -> tuple:
    """Input range (clipped to the map) and (zeros before, after) a conv needs for ``out``."""
    start = out[0] * stride - before
    end = (out[1] - 1) * stride - before + kernel
    return (max(start, 0), min(end, size)), (max(-start, 0), max(end - size, 0))


def _area(region: Region) -> int:
    return (region[1] - region[0]) * (region[3] - region[2])


def _cuts(size: int, grid: int) -> list[int]:
    return [i * size // grid for i in range(grid + 1)]


AxisStep = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""One layer of one patch along one axis: (input range, zeros (before, after), output range)."""


@functools.lru_cache(maxsize=256)
def axis_plan(
    out_size: int, grid: int, convs: tuple[tuple[int, int, int, int], ...]
) -> tuple[tuple[AxisStep, ...], ...]:
    """The patch schedule along one axis (rows and columns are independent): for each of the
    ``grid`` patches, one :data:`AxisStep` per layer. ``convs``: (input size, kernel, stride,
    SAME zeros before) of each layer; ``out_size``: the last layer's output size."""
    cuts = _cuts(out_size, grid)
    patches = []
    for i in range(grid):
        span = (cuts[i], cuts[i + 1])
        steps: list[AxisStep] = []
        for size, kernel, stride, before in reversed(convs):
            in_span, pads = _back(span, size, kernel, stride, before)
            steps.append((in_span, pads, span))
            span = in_span
        steps.reverse()
        patches.append(tuple(steps))
    return tuple(patches)


@functools.lru_cache(maxsize=256)
def patch_plan(cfg: TinyCnnConfig, input_hw: tuple[int, int] | None = None) -> PatchPlan | None:
    """The patch schedule of ``cfg`` (``None`` when ``patch_grid == 1``); pure Python."""
    n = cfg.patch_grid
    if n == 1:
        return None
    layers = layer_plan(cfg, input_hw)
    return plan_patches(layers[: patched_layer_count(cfg, layers)], n)


def patched_layer_count(cfg: TinyCnnConfig, layers: Sequence[CnnLayer]) -> int:
    """How many of ``layers`` (``cfg``'s layer plan) run patch by patch."""
    if cfg.patch_grid == 1:
        return 0
    count = 3  # the stem and the first block, then (two stages) the first stage's blocks
    if cfg.patch_stages >= 2:
        count += sum(layer.name.startswith("stages.0.") for layer in layers)
    return count


def plan_patches(prefix: Sequence[CnnLayer], grid: int) -> PatchPlan:
    """The schedule that runs the conv layers ``prefix`` (a network's first layers) on a
    ``grid`` x ``grid`` grid of output patches; raises ConfigError when their output is
    smaller than the grid."""
    n = grid
    out_h, out_w, _ = prefix[-1].out_shape
    if min(out_h, out_w) < n:
        raise ConfigError(
            f"patch_grid={n}: the patched part's output is only {out_h}x{out_w}; "
            f"use a grid of at most {min(out_h, out_w)}"
        )
    rows = axis_plan(
        out_h, n, tuple((layer.in_shape[0], layer.kernel, layer.stride, layer.pads[0])
                        for layer in prefix)
    )  # fmt: skip
    cols = axis_plan(
        out_w, n, tuple((layer.in_shape[1], layer.kernel, layer.stride, layer.pads[2])
                        for layer in prefix)
    )  # fmt: skip
    patches = []
    for row in rows:
        for col in cols:
            steps = [
                PatchStep(layer.name, (*r_in, *c_in), (*r_pads, *c_pads), (*r_out, *c_out))
                for layer, (r_in, r_pads, r_out), (c_in, c_pads, c_out)
                in zip(prefix, row, col, strict=True)
            ]  # fmt: skip
            _check_residuals(prefix, steps)
            patches.append(tuple(steps))
    return PatchPlan(n, len(prefix), tuple(patches))


def _check_residuals(prefix: Sequence[CnnLayer], steps: list[PatchStep]) -> None:
    regions = {step.layer: step.in_region for step in steps}
    for layer, step in zip(prefix, steps, strict=True):
        if layer.residual_from:
            sy0, sy1, sx0, sx1 = regions[layer.residual_from]
            y0, y1, x0, x1 = step.out_region
            # Holds because a residual block's depthwise conv has stride 1 and kernel >= 1.
            assert sy0 <= y0 and y1 <= sy1 and sx0 <= x0 and x1 <= sx1, (layer.name, step)


def count_layers(layers: Sequence[CnnLayer], plan: PatchPlan | None) -> Counts:
    """Params and MACs of a network of ``layers``, including its patches' halo recompute."""
    macs = sum(layer.macs for layer in layers)
    if plan is not None:
        for i, layer in enumerate(layers[: plan.num_layers]):
            pixels = sum(_area(steps[i].out_region) for steps in plan.patches)
            macs += (pixels - layer.out_shape[0] * layer.out_shape[1]) * layer.macs_per_pixel()
    return Counts(params=sum(layer.params for layer in layers), macs=macs)


# --- the space ---------------------------------------------------------------------------------
_CHOICES: dict[str, tuple[Any, ...]] = {
    "resolution": RESOLUTIONS,
    "stem_stride": STEM_STRIDES,
    "fused_stages": FUSED_STAGES,
    "first_stage_stride": FIRST_STAGE_STRIDES,
    "width_mult": WIDTH_MULTS,
    "rank_ratio": RANK_RATIOS,
    "patch_grid": PATCH_GRIDS,
    "patch_stages": PATCH_STAGES,
    "depths": DEPTHS,
    "kernel_sizes": KERNEL_SIZES,
    "expand_ratios": EXPAND_RATIOS,
}
_SCALAR_KNOBS = (
    "resolution", "width_mult", "rank_ratio", "patch_grid", "patch_stages", "stem_stride",
    "fused_stages", "first_stage_stride",
)
_FLOAT_KNOBS = ("width_mult", "rank_ratio")
_BLOCK_KNOBS = ("kernel_sizes", "expand_ratios")
_GENOME_KEYS = {"r": "resolution", "st": "stem_stride", "w": "width_mult", "rk": "rank_ratio",
                "p": "patch", "f": "fused_stages", "fs": "first_stage_stride",
                "k": "kernel_sizes", "e": "expand_ratios"}  # fmt: skip
# Tokens a genome may leave out (knobs added later): absent means this value.
_OPTIONAL_TOKENS = {"stem_stride": STEM_STRIDES[0], "fused_stages": FUSED_STAGES[0],
                    "first_stage_stride": FIRST_STAGE_STRIDES[0]}  # fmt: skip
_GENOME_TOKEN = re.compile(r"([a-z]+)(.*)")
_PATCH_VALUE = re.compile(r"(\d+)(?:s(\d+))?")
_EXAMPLE = "r32-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _knob_ok(knob: str, value: Any) -> bool:
    typed = isinstance(value, float) if knob in _FLOAT_KNOBS else _is_int(value)
    return typed and value in _CHOICES[knob]


@register_space
class TinyCnnSpace(SearchSpace):
    """MCUNet-style inverted-residual CNNs with low-rank 1x1 convs and patch-based inference."""

    name: ClassVar[str] = "tiny-cnn"
    config_cls: ClassVar[type[ArchConfig]] = TinyCnnConfig

    def choices(self) -> dict[str, tuple[Any, ...]]:
        return dict(_CHOICES)

    def _make(self, **knobs: Any) -> TinyCnnConfig:
        """A config with this space's dataset fields, in canonical form."""
        depths = tuple(knobs["depths"])
        for knob in _BLOCK_KNOBS:
            values = tuple(knobs[knob])
            knobs[knob] = tuple(
                values[s * MAX_DEPTH + b] if b < depths[s] else _CHOICES[knob][0]
                for s in range(NUM_STAGES)
                for b in range(MAX_DEPTH)
            )
        fused_blocks = knobs["fused_stages"] * MAX_DEPTH
        knobs["kernel_sizes"] = (KERNEL_SIZES[0],) * fused_blocks + knobs["kernel_sizes"][
            fused_blocks:
        ]
        if knobs["patch_grid"] == 1:
            knobs["patch_stages"] = PATCH_STAGES[0]
        return TinyCnnConfig(
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            **{**knobs, "depths": depths},
        )

    def sample(self, rng: random.Random) -> TinyCnnConfig:
        knobs: dict[str, Any] = {k: rng.choice(_CHOICES[k]) for k in _SCALAR_KNOBS}
        knobs["depths"] = tuple(rng.choice(DEPTHS) for _ in range(NUM_STAGES))
        for knob in _BLOCK_KNOBS:
            knobs[knob] = tuple(rng.choice(_CHOICES[knob]) for _ in range(NUM_BLOCKS))
        return self._make(**knobs)

    def largest(self) -> TinyCnnConfig:
        """Every knob at its maximum (the stem at stride 1) except the patch knob and the
        first stage's stride: whole-image execution (grid 1), since patching changes how a
        network runs, not what it computes, and stride 2 (see the module docstring)."""
        return self._make(
            resolution=RESOLUTIONS[-1], stem_stride=STEM_STRIDES[-1],
            first_stage_stride=FIRST_STAGE_STRIDES[0],
            fused_stages=FUSED_STAGES[-1], width_mult=WIDTH_MULTS[-1], rank_ratio=RANK_RATIOS[-1],
            patch_grid=1, patch_stages=PATCH_STAGES[0], depths=(DEPTHS[-1],) * NUM_STAGES,
            kernel_sizes=(KERNEL_SIZES[-1],) * NUM_BLOCKS,
            expand_ratios=(EXPAND_RATIOS[-1],) * NUM_BLOCKS,
        )  # fmt: skip

    def smallest(self) -> TinyCnnConfig:
        return self._make(
            resolution=RESOLUTIONS[0], stem_stride=STEM_STRIDES[0],
            first_stage_stride=FIRST_STAGE_STRIDES[0],
            fused_stages=FUSED_STAGES[0], width_mult=WIDTH_MULTS[0], rank_ratio=RANK_RATIOS[0],
            patch_grid=1, patch_stages=PATCH_STAGES[0], depths=(DEPTHS[0],) * NUM_STAGES,
            kernel_sizes=(KERNEL_SIZES[0],) * NUM_BLOCKS,
            expand_ratios=(EXPAND_RATIOS[0],) * NUM_BLOCKS,
        )  # fmt: skip

    def validate(self, cfg: ArchConfig) -> None:
        if not isinstance(cfg, TinyCnnConfig):
            raise ConfigError(f"expected a TinyCnnConfig, got {type(cfg).__name__}")
        for name, mine in (("num_classes", self.num_classes), ("in_channels", self.in_channels)):
            value = getattr(cfg, name)
            if value != mine or not _is_int(value):
                raise ConfigError(f"{name}={value!r}: this tiny-cnn space expects {mine}")
        for knob in _SCALAR_KNOBS:
            value = getattr(cfg, knob)
            if not _knob_ok(knob, value):
                raise ConfigError(f"{knob}={value!r}: expected one of {_CHOICES[knob]}")
        if cfg.patch_grid == 1 and cfg.patch_stages != PATCH_STAGES[0]:
            raise ConfigError(
                f"patch_stages={cfg.patch_stages!r}: expected {PATCH_STAGES[0]} when "
                "patch_grid=1 (no patches)"
            )
        lengths = {"depths": NUM_STAGES, "kernel_sizes": NUM_BLOCKS, "expand_ratios": NUM_BLOCKS}
        for knob, length in lengths.items():
            values = getattr(cfg, knob)
            if not isinstance(values, tuple) or len(values) != length:
                raise ConfigError(f"{knob}={values!r}: expected a tuple of {length} values")
            for i, value in enumerate(values):
                if not _knob_ok(knob, value):
                    raise ConfigError(f"{knob}[{i}]={value!r}: expected one of {_CHOICES[knob]}")
        for knob in _BLOCK_KNOBS:
            for i, value in enumerate(getattr(cfg, knob)):
                stage, block = divmod(i, MAX_DEPTH)
                fused = knob == "kernel_sizes" and stage < cfg.fused_stages
                if fused and value != _CHOICES[knob][0]:
                    raise ConfigError(
                        f"{knob}[{i}]={value!r}: stage {stage} is fused "
                        f"(fused_stages={cfg.fused_stages}), its convs are 3x3: expected "
                        f"{_CHOICES[knob][0]}"
                    )
                if block >= cfg.depths[stage] and value != _CHOICES[knob][0]:
                    raise ConfigError(
                        f"{knob}[{i}]={value!r}: block {block} of stage {stage} is beyond "
                        f"depths[{stage}]={cfg.depths[stage]}, expected {_CHOICES[knob][0]} "
                        "(truncated blocks hold the smallest choice)"
                    )

    # --- serialisation ---------------------------------------------------------------------
    def encode(self, cfg: ArchConfig) -> str:
        self.validate(cfg)
        assert isinstance(cfg, TinyCnnConfig)

        def groups(values: tuple[int, ...]) -> str:
            return ".".join(
                "".join(str(v) for v in values[s * MAX_DEPTH : s * MAX_DEPTH + d])
                for s, d in enumerate(cfg.depths)
            )

        patch = "p1" if cfg.patch_grid == 1 else f"p{cfg.patch_grid}s{cfg.patch_stages}"
        stem = "" if cfg.stem_stride == STEM_STRIDES[0] else f"-st{cfg.stem_stride}"
        fused = "" if cfg.fused_stages == FUSED_STAGES[0] else f"-f{cfg.fused_stages}"
        first = (
            "" if cfg.first_stage_stride == FIRST_STAGE_STRIDES[0]
            else f"-fs{cfg.first_stage_stride}"
        )  # fmt: skip
        return (
            f"r{cfg.resolution}{stem}-w{cfg.width_mult:g}-rk{cfg.rank_ratio:g}-{patch}{fused}"
            f"{first}-k{groups(cfg.kernel_sizes)}-e{groups(cfg.expand_ratios)}"
        )

    def decode(self, genome: str) -> TinyCnnConfig:
        if not isinstance(genome, str):
            raise ConfigError(f"genome must be a string, got {type(genome).__name__}")
        knobs: dict[str, Any] = {}
        for token in genome.strip().split("-"):
            match = _GENOME_TOKEN.fullmatch(token)
            key = match.group(1) if match else None
            if match is None or key not in _GENOME_KEYS:
                raise ConfigError(
                    f"genome token {token!r}: expected a prefix from {sorted(_GENOME_KEYS)} "
                    f"and a value, e.g. {_EXAMPLE!r}"
                )
            knob = _GENOME_KEYS[key]
            if knob in knobs:
                raise ConfigError(f"genome token {token!r}: {knob} given twice")
            knobs[knob] = self._parse_token(token, knob, match.group(2))
        missing = [
            k for k, v in _GENOME_KEYS.items() if v not in knobs and v not in _OPTIONAL_TOKENS
        ]
        if missing:
            raise ConfigError(f"genome {genome!r}: missing token(s) {missing}, e.g. {_EXAMPLE!r}")
        knobs["patch_grid"], knobs["patch_stages"] = knobs.pop("patch")
        knobs = {**_OPTIONAL_TOKENS, **knobs}
        kernel_groups, expand_groups = knobs["kernel_sizes"], knobs["expand_ratios"]
        depths = tuple(len(g) for g in kernel_groups)
        if tuple(len(g) for g in expand_groups) != depths:
            raise ConfigError(
                f"genome {genome!r}: expand ratios per stage {[len(g) for g in expand_groups]} "
                f"do not match the kernel sizes per stage {list(depths)}"
            )
        fused = knobs["fused_stages"]
        for stage, group in enumerate(kernel_groups[:fused]):
            if any(k != FUSED_KERNEL for k in group):
                raise ConfigError(
                    f"genome {genome!r}: stage {stage} is fused (f{fused}), its convs are "
                    f"{FUSED_KERNEL}x{FUSED_KERNEL}: write its kernel sizes as {FUSED_KERNEL}"
                )
        for knob in _BLOCK_KNOBS:  # pad each stage to MAX_DEPTH; _make normalises the padding
            knobs[knob] = sum((g + (0,) * (MAX_DEPTH - len(g)) for g in knobs[knob]), ())
        return self._make(depths=depths, **knobs)

    @staticmethod
    def _parse_token(token: str, knob: str, text: str) -> Any:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"genome token {token!r}: {what}")

        if knob == "patch":
            match = _PATCH_VALUE.fullmatch(text)
            grid = int(match.group(1)) if match else None
            stages = int(match.group(2) or PATCH_STAGES[0]) if match else None
            if grid not in PATCH_GRIDS:
                raise bad(f"patch_grid {text!r} not in {PATCH_GRIDS} (write p<grid>s<stages>)")
            if stages not in PATCH_STAGES:
                raise bad(f"patch_stages {stages!r} not in {PATCH_STAGES}")
            return grid, stages
        allowed = _CHOICES[knob]
        if knob in _BLOCK_KNOBS:
            stage_groups = text.split(".")
            if len(stage_groups) != NUM_STAGES:
                raise bad(f"expected {NUM_STAGES} dot-separated stages, got {len(stage_groups)}")
            for group in stage_groups:
                if len(group) not in DEPTHS:
                    raise bad(f"stage {group!r} has {len(group)} blocks, expected one of {DEPTHS}")
                for char in group:
                    if not char.isdigit() or int(char) not in allowed:
                        raise bad(f"{knob} value {char!r} not in {allowed}")
            return tuple(tuple(int(c) for c in group) for group in stage_groups)
        try:
            value = float(text) if knob in _FLOAT_KNOBS else int(text)
        except ValueError:
            value = None
        if value not in allowed:
            raise bad(f"{knob} value {text!r} not in {allowed}")
        return allowed[allowed.index(value)]

    # --- integer vectors for the search ------------------------------------------------------
    def _genes(self) -> list[tuple[str, int | None]]:
        genes: list[tuple[str, int | None]] = [(k, None) for k in _SCALAR_KNOBS]
        genes += [("depths", i) for i in range(NUM_STAGES)]
        for knob in _BLOCK_KNOBS:
            genes += [(knob, i) for i in range(NUM_BLOCKS)]
        return genes

    def vector_bounds(self) -> list[int]:
        """Number of choices per gene: resolution, width, rank ratio, patch grid, patch stages,
        stem stride, fused stages, first-stage stride, depth per stage, kernel per block,
        expand ratio per block. Genes of truncated blocks, of fused blocks' kernels and of patch
        stages without patches are ignored."""
        return [len(_CHOICES[knob]) for knob, _ in self._genes()]

    def to_vector(self, cfg: ArchConfig) -> list[int]:
        self.validate(cfg)
        out = []
        for knob, i in self._genes():
            value = getattr(cfg, knob)
            out.append(_CHOICES[knob].index(value if i is None else value[i]))
        return out

    def from_vector(self, vec: list[int]) -> TinyCnnConfig:
        return self._make(**knobs_from_vector(vec, self._genes(), lambda knob, _: _CHOICES[knob]))

    # --- numbers -----------------------------------------------------------------------------
    def layer_plan(self, cfg: ArchConfig) -> tuple[CnnLayer, ...]:
        """The layers of ``cfg`` (see :func:`layer_plan`)."""
        self.validate(cfg)
        assert isinstance(cfg, TinyCnnConfig)
        return layer_plan(cfg)

    def patch_plan(self, cfg: ArchConfig) -> PatchPlan | None:
        """The patch schedule of ``cfg`` (see :func:`patch_plan`)."""
        self.validate(cfg)
        assert isinstance(cfg, TinyCnnConfig)
        return patch_plan(cfg)

    def count(self, cfg: ArchConfig) -> Counts:
        """Params and MACs of the extracted module, including the patches' halo recompute."""
        return count_layers(self.layer_plan(cfg), self.patch_plan(cfg))

    def whole_image(self, cfg: ArchConfig) -> TinyCnnConfig:
        """``cfg`` run whole-image (grid 1, and patch_stages in canonical form)."""
        assert isinstance(cfg, TinyCnnConfig)
        if cfg.patch_grid == 1:
            return cfg
        return dataclasses.replace(cfg, patch_grid=1, patch_stages=PATCH_STAGES[0])

    def input_shape(self, cfg: ArchConfig) -> tuple[int, int, int]:
        self.validate(cfg)
        assert isinstance(cfg, TinyCnnConfig)
        return (cfg.resolution, cfg.resolution, cfg.in_channels)

    # --- torch side --------------------------------------------------------------------------
    def build_supernet(self) -> nn.Module:
        from edgekit.spaces.tiny_cnn_net import TinyCnnSupernet

        return TinyCnnSupernet(self)

    def extract(self, supernet: nn.Module, cfg: ArchConfig) -> nn.Module:
        from edgekit.spaces.tiny_cnn_net import extract

        self.validate(cfg)
        return extract(supernet, cfg)

    def prepare_input(self, x: torch.Tensor, cfg: ArchConfig) -> torch.Tensor:
        """Resize an NCHW batch to ``cfg``'s resolution (bilinear, align_corners=False)."""
        from edgekit.spaces.tiny_cnn_net import prepare_input

        self.validate(cfg)
        return prepare_input(x, cfg)


__all__ = [
    "MAX_DEPTH",
    "NUM_BLOCKS",
    "NUM_STAGES",
    "CnnLayer",
    "PatchPlan",
    "PatchStep",
    "TinyCnnConfig",
    "TinyCnnSpace",
    "count_layers",
    "is_factorised",
    "layer_plan",
    "make_divisible",
    "patch_plan",
    "plan_patches",
    "projection_rank",
    "same_padding",
    "stage_channels",
]
