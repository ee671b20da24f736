"""The ``tiny-resnet`` search space: ResNet-8-shaped CNNs (MLPerf Tiny's reference layout).

Network (every conv uses TensorFlow "SAME" padding and is followed by BatchNorm):

    stem:    3x3 conv stride 1, ``stem_channels`` -> ReLU6
    3 stages of 1..2 basic blocks, ``widths[s]`` channels (stride 1, 2, 2 on a stage's first):
             3x3 conv -> ReLU6 -> 3x3 conv -> ReLU6 (+ block input where stride 1 and the
             channels agree)
    global mean -> linear classifier

ResNet-8 itself is ``r32-c16-w16.32.64-d1.1.1-p1`` but for three differences that keep every op
one that tiny-cnn's exporter and memory model already handle: ReLU6 instead of ReLU, the
residual added after the second conv's activation (ResNet's "ReLU before addition" variant)
instead of an activation after the add, and no 1x1 projection shortcut on the stride-2 blocks
(those blocks have no skip). The second conv keeps its activation because without one it and
the next block's first conv would compose into one linear map: trained like ResNet-8 (8 epochs,
CIFAR-10 subset), that version of ResNet-8's layout reached 57.5% against ResNet-8's 63.5%.

Why this space: trained from scratch within ResNet-8's own arena and flash, no tiny-cnn config
reached ResNet-8's accuracy (docs/BENCHMARKS.md, "What the space can reach at all"), while
ResNet-8 with wider second and third stages beat it ("Is ResNet-8 the best network of its own
budgets?"). Its first stage, full-resolution dense 3x3 convs, is what fills the arena, so the
one knob beyond widths and depths is patch-based execution (MCUNetV2) of the stem, the first
stage and the second stage's first block (the first stride-2 point after the first stage):
with ``patch_grid = n > 1`` they run on an n x n grid of output patches, as tiny-cnn's patched
stages do (:func:`edgekit.spaces.tiny_cnn.plan_patches`), so a wider or deeper first stage can
fit a small arena at the cost of recomputed halos. No low-rank knob: a 3x3 conv has no 1x1
factorisation in tiny-cnn's layer format, and flash is not what binds this space first.

Genome: ``r32-c16-w16.32.64-d1.1.1-p1`` = resolution, stem channels, the stages' widths, their
depths (blocks), patch grid (``p1`` = whole image).

The layer plan is tiny-cnn's (:class:`~edgekit.spaces.tiny_cnn.CnnLayer`): layers ``stem``,
``stages.<s>.<b>.conv1|conv2``, ``pool``, ``classifier``. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.errors import ConfigError
from edgekit.spaces import register_space
from edgekit.spaces._base import ArchConfig, Counts, SearchSpace, knobs_from_vector
from edgekit.spaces.tiny_cnn import CnnLayer, PatchPlan, count_layers, plan_patches, same_padding

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

RESOLUTIONS = (24, 28, 32)
STEM_CHANNELS = (8, 16, 24)
STAGE_WIDTHS = ((8, 16, 24, 32), (16, 24, 32, 40, 48, 56), (24, 32, 40, 48, 56, 64, 80))
DEPTHS = (1, 2)
PATCH_GRIDS = (1, 2, 3, 4)
STAGE_STRIDES = (1, 2, 2)
NUM_STAGES = len(STAGE_STRIDES)
KERNEL = 3


@dataclass(frozen=True)
class TinyResnetConfig(ArchConfig):
    """One tiny-resnet architecture (see the module docstring)."""

    space: ClassVar[str] = "tiny-resnet"

    num_classes: int
    in_channels: int
    resolution: int
    stem_channels: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    patch_grid: int


@functools.lru_cache(maxsize=256)
def layer_plan(
    cfg: TinyResnetConfig, input_hw: tuple[int, int] | None = None
) -> tuple[CnnLayer, ...]:
    """Every layer of ``cfg`` in execution order (pure Python, no torch; ``cfg`` must be valid).

    ``input_hw`` overrides the input size (default: ``cfg.resolution`` square).
    """
    h, w = input_hw or (cfg.resolution, cfg.resolution)
    c = cfg.in_channels
    layers: list[CnnLayer] = []

    def conv(name: str, c_out: int, stride: int, act: bool, residual_from: str | None) -> None:
        nonlocal h, w, c
        out_h, top, bottom = same_padding(h, KERNEL, stride)
        out_w, left, right = same_padding(w, KERNEL, stride)
        weights = c_out * c * KERNEL**2
        layers.append(
            CnnLayer(
                name, "conv2d", (h, w, c), (out_h, out_w, c_out), KERNEL, stride, 1,
                (top, bottom, left, right), 0, "relu6" if act else None, residual_from,
                weights + 2 * c_out, out_h * out_w * weights,
            )
        )  # fmt: skip
        h, w, c = out_h, out_w, c_out

    conv("stem", cfg.stem_channels, 1, True, None)
    for s, (c_out, depth) in enumerate(zip(cfg.widths, cfg.depths, strict=True)):
        for b in range(depth):
            block = f"stages.{s}.{b}"
            stride = STAGE_STRIDES[s] if b == 0 else 1
            skip = f"{block}.conv1" if stride == 1 and c == c_out else None
            conv(f"{block}.conv1", c_out, stride, True, None)
            conv(f"{block}.conv2", c_out, 1, True, skip)
    k = cfg.num_classes
    layers.append(CnnLayer("pool", "mean", (h, w, c), (1, 1, c)))
    layers.append(
        CnnLayer("classifier", "fully_connected", (1, 1, c), (1, 1, k), params=c * k + k,
                 macs=c * k)
    )  # fmt: skip
    return tuple(layers)


def patched_layer_count(cfg: TinyResnetConfig) -> int:
    """Layers run patch by patch when ``patch_grid > 1``: the stem, the first stage and the
    second stage's first block."""
    return 1 + 2 * cfg.depths[0] + 2


@functools.lru_cache(maxsize=256)
def patch_plan(
    cfg: TinyResnetConfig, input_hw: tuple[int, int] | None = None
) -> PatchPlan | None:
    """The patch schedule of ``cfg`` (``None`` when ``patch_grid == 1``); pure Python."""
    if cfg.patch_grid == 1:
        return None
    layers = layer_plan(cfg, input_hw)
    return plan_patches(layers[: patched_layer_count(cfg)], cfg.patch_grid)


# --- the space ---------------------------------------------------------------------------------
_SCALAR_CHOICES: dict[str, tuple[int, ...]] = {
    "resolution": RESOLUTIONS,
    "stem_channels": STEM_CHANNELS,
    "patch_grid": PATCH_GRIDS,
}
_GENOME_KEYS = {"r": "resolution", "c": "stem_channels", "w": "widths", "d": "depths",
                "p": "patch_grid"}  # fmt: skip
_GENOME_TOKEN = re.compile(r"([a-z]+)(.*)")
_EXAMPLE = "r32-c16-w16.32.64-d1.1.1-p1"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stage_choices(knob: str, stage: int) -> tuple[int, ...]:
    return STAGE_WIDTHS[stage] if knob == "widths" else DEPTHS


@register_space
class TinyResnetSpace(SearchSpace):
    """ResNet-8-shaped CNNs: stage widths and depths, stem width, patch-based first stage."""

    name: ClassVar[str] = "tiny-resnet"
    config_cls: ClassVar[type[ArchConfig]] = TinyResnetConfig

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Each knob's values; ``widths`` lists every stage's (see ``STAGE_WIDTHS`` for which
        widths each stage allows)."""
        widths = tuple(sorted({w for stage in STAGE_WIDTHS for w in stage}))
        return {**_SCALAR_CHOICES, "widths": widths, "depths": DEPTHS}

    def _make(self, **knobs: Any) -> TinyResnetConfig:
        return TinyResnetConfig(
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            **{**knobs, "widths": tuple(knobs["widths"]), "depths": tuple(knobs["depths"])},
        )

    def sample(self, rng: random.Random) -> TinyResnetConfig:
        return self.from_vector([rng.randrange(n) for n in self.vector_bounds()])

    def largest(self) -> TinyResnetConfig:
        """Every knob at its maximum except the patch grid: whole-image execution, since
        patching changes how a network runs, not what it computes."""
        return self._make(
            resolution=RESOLUTIONS[-1], stem_channels=STEM_CHANNELS[-1], patch_grid=1,
            widths=[w[-1] for w in STAGE_WIDTHS], depths=[DEPTHS[-1]] * NUM_STAGES,
        )  # fmt: skip

    def smallest(self) -> TinyResnetConfig:
        return self._make(
            resolution=RESOLUTIONS[0], stem_channels=STEM_CHANNELS[0], patch_grid=1,
            widths=[w[0] for w in STAGE_WIDTHS], depths=[DEPTHS[0]] * NUM_STAGES,
        )  # fmt: skip

    def validate(self, cfg: ArchConfig) -> None:
        if not isinstance(cfg, TinyResnetConfig):
            raise ConfigError(f"expected a TinyResnetConfig, got {type(cfg).__name__}")
        for name, mine in (("num_classes", self.num_classes), ("in_channels", self.in_channels)):
            value = getattr(cfg, name)
            if value != mine or not _is_int(value):
                raise ConfigError(f"{name}={value!r}: this tiny-resnet space expects {mine}")
        for knob, allowed in _SCALAR_CHOICES.items():
            value = getattr(cfg, knob)
            if not _is_int(value) or value not in allowed:
                raise ConfigError(f"{knob}={value!r}: expected one of {allowed}")
        for knob in ("widths", "depths"):
            values = getattr(cfg, knob)
            if not isinstance(values, tuple) or len(values) != NUM_STAGES:
                raise ConfigError(f"{knob}={values!r}: expected a tuple of {NUM_STAGES} values")
            for s, value in enumerate(values):
                allowed = _stage_choices(knob, s)
                if not _is_int(value) or value not in allowed:
                    every = "" if knob == "depths" else f" (all stages: {self.choices()[knob]})"
                    raise ConfigError(
                        f"{knob}[{s}]={value!r}: expected one of {allowed} for stage {s}{every}"
                    )

    # --- serialisation ---------------------------------------------------------------------
    def encode(self, cfg: ArchConfig) -> str:
        self.validate(cfg)
        assert isinstance(cfg, TinyResnetConfig)
        widths = ".".join(str(w) for w in cfg.widths)
        depths = ".".join(str(d) for d in cfg.depths)
        return (
            f"r{cfg.resolution}-c{cfg.stem_channels}-w{widths}-d{depths}-p{cfg.patch_grid}"
        )

    def decode(self, genome: str) -> TinyResnetConfig:
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
        missing = [k for k, v in _GENOME_KEYS.items() if v not in knobs]
        if missing:
            raise ConfigError(f"genome {genome!r}: missing token(s) {missing}, e.g. {_EXAMPLE!r}")
        cfg = self._make(**knobs)
        self.validate(cfg)
        return cfg

    @staticmethod
    def _parse_token(token: str, knob: str, text: str) -> Any:
        def number(part: str) -> int:
            if not part.isdigit():
                raise ConfigError(f"genome token {token!r}: {part!r} is not a number")
            return int(part)

        if knob in ("widths", "depths"):
            parts = text.split(".")
            if len(parts) != NUM_STAGES:
                raise ConfigError(
                    f"genome token {token!r}: expected {NUM_STAGES} dot-separated stages, "
                    f"got {len(parts)}"
                )
            values = tuple(number(part) for part in parts)
            for s, value in enumerate(values):
                if value not in _stage_choices(knob, s):
                    raise ConfigError(
                        f"genome token {token!r}: {knob}[{s}]={value} not in "
                        f"{_stage_choices(knob, s)}"
                    )
            return values
        value = number(text)
        if value not in _SCALAR_CHOICES[knob]:
            raise ConfigError(
                f"genome token {token!r}: {knob} {value} not in {_SCALAR_CHOICES[knob]}"
            )
        return value

    # --- integer vectors for the search ------------------------------------------------------
    @staticmethod
    def _genes() -> list[tuple[str, int | None]]:
        genes: list[tuple[str, int | None]] = [(k, None) for k in _SCALAR_CHOICES]
        genes += [("widths", s) for s in range(NUM_STAGES)]
        genes += [("depths", s) for s in range(NUM_STAGES)]
        return genes

    @staticmethod
    def _gene_choices(knob: str, stage: int | None) -> tuple[int, ...]:
        return _SCALAR_CHOICES[knob] if stage is None else _stage_choices(knob, stage)

    def vector_bounds(self) -> list[int]:
        """Number of choices per gene: resolution, stem channels, patch grid, width per stage,
        depth per stage."""
        return [len(self._gene_choices(knob, s)) for knob, s in self._genes()]

    def to_vector(self, cfg: ArchConfig) -> list[int]:
        self.validate(cfg)
        out = []
        for knob, s in self._genes():
            value = getattr(cfg, knob)
            out.append(self._gene_choices(knob, s).index(value if s is None else value[s]))
        return out

    def from_vector(self, vec: list[int]) -> TinyResnetConfig:
        return self._make(**knobs_from_vector(vec, self._genes(), self._gene_choices))

    # --- numbers -----------------------------------------------------------------------------
    def layer_plan(self, cfg: ArchConfig) -> tuple[CnnLayer, ...]:
        """The layers of ``cfg`` (see :func:`layer_plan`)."""
        self.validate(cfg)
        assert isinstance(cfg, TinyResnetConfig)
        return layer_plan(cfg)

    def patch_plan(self, cfg: ArchConfig) -> PatchPlan | None:
        """The patch schedule of ``cfg`` (see :func:`patch_plan`)."""
        self.validate(cfg)
        assert isinstance(cfg, TinyResnetConfig)
        return patch_plan(cfg)

    def count(self, cfg: ArchConfig) -> Counts:
        """Params and MACs of the extracted module, including the patches' halo recompute."""
        return count_layers(self.layer_plan(cfg), self.patch_plan(cfg))

    def whole_image(self, cfg: ArchConfig) -> TinyResnetConfig:
        assert isinstance(cfg, TinyResnetConfig)
        return cfg if cfg.patch_grid == 1 else dataclasses.replace(cfg, patch_grid=1)

    def input_shape(self, cfg: ArchConfig) -> tuple[int, int, int]:
        self.validate(cfg)
        assert isinstance(cfg, TinyResnetConfig)
        return (cfg.resolution, cfg.resolution, cfg.in_channels)

    # --- torch side --------------------------------------------------------------------------
    def build_supernet(self) -> nn.Module:
        from edgekit.spaces.tiny_resnet_net import TinyResnetSupernet

        return TinyResnetSupernet(self)

    def extract(self, supernet: nn.Module, cfg: ArchConfig) -> nn.Module:
        from edgekit.spaces.tiny_resnet_net import extract

        self.validate(cfg)
        return extract(supernet, cfg)

    def prepare_input(self, x: torch.Tensor, cfg: ArchConfig) -> torch.Tensor:
        """Resize an NCHW batch to ``cfg``'s resolution (bilinear, align_corners=False)."""
        from edgekit.spaces.tiny_cnn_net import prepare_input

        self.validate(cfg)
        return prepare_input(x, cfg)  # type: ignore[arg-type]


__all__ = [
    "TinyResnetConfig",
    "TinyResnetSpace",
    "layer_plan",
    "patch_plan",
    "patched_layer_count",
]
