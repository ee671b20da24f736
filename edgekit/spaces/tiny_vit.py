"""The ``tiny-vit`` search space: MCUFormer-style vision transformers for microcontrollers.

Network (pre-norm ViT, every op has an int8 TFLite Micro kernel):

    patch embedding: conv p x p, stride p (= reshape + linear), -> (T, e) tokens, T = (r/p)^2
    + learned position embedding (T, e)
    depth x block:  x + proj(MHSA(LN(x)));  x + fc2(hard_swish(fc1(LN(x))))
    mean over tokens -> LayerNorm -> linear head

Knobs: input resolution ``r``, patch size ``p`` (sets the token count), embedding width ``e``,
depth, per-block heads (fixed head width ``HEAD_DIM``, so heads scale the attention width
``a = heads * HEAD_DIM``), per-block MLP ratio (hidden = ratio * e) and one ``rank_ratio`` for the
q, k, v, output and MLP projections. No GELU: TFLite Micro has no int8 GELU kernel.

Low rank: a projection ``in -> out`` gets rank ``r = ceil(rank_ratio * min(in, out))``. It is
stored as two stacked linears (``in -> r`` without bias, ``r -> out`` with bias, nothing in
between) when that is smaller than one dense linear, i.e. ``r * (in + out) < in * out``;
otherwise as one dense linear holding the product of the factors (the same function with fewer
parameters and MACs). At ``rank_ratio == 1.0`` every projection is dense.

Position of truncated blocks: ``num_heads`` and ``mlp_ratio`` always have ``MAX_DEPTH``
entries; entries of blocks at or beyond ``depth`` hold the smallest choice, so every network has
exactly one config (and one genome).

Genome: ``r32-p4-e64-d2-h2.4-m3.1-rk0.5`` (resolution, patch, embed, depth, heads and MLP ratios
of the active blocks only, rank ratio).

This module imports no torch; the supernet lives in :mod:`edgekit.spaces.tiny_vit_net`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
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

RESOLUTIONS = (16, 24, 32)
# Every resolution is divisible by every patch size, so every knob combination is valid.
# Patch 2 is left out on purpose: at 32 x 32 it gives 256 tokens, i.e. 4 x 256 x 256 attention
# scores (256 KB int8 per tensor) -- beyond MCU SRAM and too slow for CPU supernet training.
PATCH_SIZES = (4, 8)
EMBED_DIMS = (32, 48, 64, 96)
DEPTHS = (1, 2, 3, 4)
NUM_HEADS = (1, 2, 4)
MLP_RATIOS = (1, 2, 3, 4)
RANK_RATIOS = (0.25, 0.5, 0.75, 1.0)
HEAD_DIM = 16
MAX_DEPTH = max(DEPTHS)
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class TinyVitConfig(ArchConfig):
    """One tiny-vit architecture. ``num_heads`` / ``mlp_ratio`` have ``MAX_DEPTH`` entries."""

    space: ClassVar[str] = "tiny-vit"

    num_classes: int
    in_channels: int
    resolution: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[int, ...]
    rank_ratio: float

    def __post_init__(self) -> None:
        # JSON writes 1.0 as 1.0, but hand-written configs may say 1; keep one canonical type.
        if isinstance(self.rank_ratio, int) and not isinstance(self.rank_ratio, bool):
            object.__setattr__(self, "rank_ratio", float(self.rank_ratio))

    @property
    def grid(self) -> int:
        """Tokens per side: ``resolution // patch_size``."""
        return self.resolution // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2


@dataclass(frozen=True)
class VitOp:
    """One operation of a tiny-vit network, for the memory model and the exporter.

    ``name`` is unique; for ops with weights it is also the module name in the extracted
    network (``<name>.weight`` / ``<name>.bias``; ``pos_embed`` is a bare parameter).
    ``inputs`` names the ops whose outputs this op reads (``"input"`` is the image, NHWC).
    ``out_shape`` excludes the batch dimension; images are (H, W, C), tokens (T, C), attention
    tensors (heads, T, ...). ``op`` is one of ``OP_KINDS``; ``attrs`` holds op details
    (``kernel``/``stride`` for conv2d, ``perm`` for transpose, ``adj_y`` for batch_matmul,
    ``axis`` for mean; axes refer to the batch-less shapes).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    params: int = 0
    macs: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)


# TFLite builtins each maps to: conv2d -> CONV_2D, fully_connected -> FULLY_CONNECTED,
# layer_norm -> MEAN/SUB/MUL/ADD/RSQRT, add -> ADD, reshape -> RESHAPE, transpose -> TRANSPOSE,
# batch_matmul -> BATCH_MATMUL, softmax -> SOFTMAX, hard_swish -> HARD_SWISH, mean -> MEAN.
OP_KINDS = (
    "conv2d",
    "reshape",
    "add",
    "layer_norm",
    "fully_connected",
    "transpose",
    "batch_matmul",
    "softmax",
    "hard_swish",
    "mean",
)


def _fully_connected(
    name: str, source: str, tokens: int, in_f: int, out_f: int, bias: bool = True
) -> VitOp:
    params = in_f * out_f + (out_f if bias else 0)
    return VitOp(
        name, "fully_connected", (source,), (tokens, out_f), params, tokens * in_f * out_f
    )


def _projection(
    name: str, source: str, tokens: int, in_f: int, out_f: int, rank_ratio: float
) -> list[VitOp]:
    rank = projection_rank(rank_ratio, in_f, out_f)
    if not is_factorised(rank, in_f, out_f):
        return [_fully_connected(name, source, tokens, in_f, out_f)]
    return [
        _fully_connected(f"{name}.0", source, tokens, in_f, rank, bias=False),
        _fully_connected(f"{name}.1", f"{name}.0", tokens, rank, out_f),
    ]


def _split_heads(name: str, source: str, tokens: int, heads: int) -> tuple[list[VitOp], str]:
    """(T, a) -> (heads, T, HEAD_DIM); nothing to do for one head (BATCH_MATMUL takes (T, a))."""
    if heads == 1:
        return [], source
    return [
        VitOp(f"{name}_heads", "reshape", (source,), (tokens, heads, HEAD_DIM)),
        VitOp(f"{name}_perm", "transpose", (f"{name}_heads",), (heads, tokens, HEAD_DIM),
              attrs={"perm": (1, 0, 2)}),
    ], f"{name}_perm"  # fmt: skip


def layer_plan(cfg: TinyVitConfig) -> list[VitOp]:
    """Every op of the network ``cfg`` in execution order (pure Python, no torch).

    Transposes remain only for multi-head attention (split q, k, v into heads and merge the
    heads back); single-head blocks have none. The attention scale ``HEAD_DIM ** -0.5`` is
    folded into the q projection of the extracted network, so there is no MUL op.
    """
    t, e, c = cfg.num_tokens, cfg.embed_dim, cfg.in_channels
    p, g = cfg.patch_size, cfg.grid
    ops = [
        VitOp("patch_embed", "conv2d", ("input",), (g, g, e), p * p * c * e + e,
              t * p * p * c * e, {"kernel": p, "stride": p}),
        VitOp("patch_tokens", "reshape", ("patch_embed",), (t, e)),
        VitOp("pos_embed", "add", ("patch_tokens",), (t, e), t * e),
    ]  # fmt: skip
    x = "pos_embed"
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        heads, hidden = cfg.num_heads[i], cfg.mlp_ratio[i] * e
        a = heads * HEAD_DIM
        ops.append(VitOp(f"{b}.norm1", "layer_norm", (x,), (t, e), 2 * e))
        per_head: dict[str, str] = {}
        for which in ("q", "k", "v"):
            ops += _projection(f"{b}.attn.{which}", f"{b}.norm1", t, e, a, cfg.rank_ratio)
            split, per_head[which] = _split_heads(f"{b}.attn.{which}", ops[-1].name, t, heads)
            ops += split
        matmul_macs = heads * t * t * HEAD_DIM
        ops += [
            VitOp(f"{b}.attn.scores", "batch_matmul", (per_head["q"], per_head["k"]),
                  (heads, t, t), 0, matmul_macs, {"adj_y": True}),
            VitOp(f"{b}.attn.softmax", "softmax", (f"{b}.attn.scores",), (heads, t, t)),
            VitOp(f"{b}.attn.context", "batch_matmul", (f"{b}.attn.softmax", per_head["v"]),
                  (heads, t, HEAD_DIM), 0, matmul_macs, {"adj_y": False}),
        ]  # fmt: skip
        context = f"{b}.attn.context"
        if heads > 1:
            ops += [
                VitOp(f"{b}.attn.merge_perm", "transpose", (context,), (t, heads, HEAD_DIM),
                      attrs={"perm": (1, 0, 2)}),
                VitOp(f"{b}.attn.merge", "reshape", (f"{b}.attn.merge_perm",), (t, a)),
            ]  # fmt: skip
            context = f"{b}.attn.merge"
        ops += _projection(f"{b}.attn.proj", context, t, a, e, cfg.rank_ratio)
        ops.append(VitOp(f"{b}.add1", "add", (x, ops[-1].name), (t, e)))
        ops.append(VitOp(f"{b}.norm2", "layer_norm", (f"{b}.add1",), (t, e), 2 * e))
        ops += _projection(f"{b}.mlp.fc1", f"{b}.norm2", t, e, hidden, cfg.rank_ratio)
        ops.append(VitOp(f"{b}.mlp.act", "hard_swish", (ops[-1].name,), (t, hidden)))
        ops += _projection(f"{b}.mlp.fc2", f"{b}.mlp.act", t, hidden, e, cfg.rank_ratio)
        ops.append(VitOp(f"{b}.add2", "add", (f"{b}.add1", ops[-1].name), (t, e)))
        x = f"{b}.add2"
    ops += [
        VitOp("pool", "mean", (x,), (e,), attrs={"axis": 0}),
        VitOp("norm", "layer_norm", ("pool",), (e,), 2 * e),
        VitOp("head", "fully_connected", ("norm",), (cfg.num_classes,),
              e * cfg.num_classes + cfg.num_classes, e * cfg.num_classes),
    ]  # fmt: skip
    return ops


_CHOICES: dict[str, tuple[Any, ...]] = {
    "resolution": RESOLUTIONS,
    "patch_size": PATCH_SIZES,
    "embed_dim": EMBED_DIMS,
    "depth": DEPTHS,
    "num_heads": NUM_HEADS,
    "mlp_ratio": MLP_RATIOS,
    "rank_ratio": RANK_RATIOS,
}
_SCALAR_KNOBS = ("resolution", "patch_size", "embed_dim", "depth")
_BLOCK_KNOBS = ("num_heads", "mlp_ratio")
_GENOME_KEYS = {
    "r": "resolution",
    "p": "patch_size",
    "e": "embed_dim",
    "d": "depth",
    "h": "num_heads",
    "m": "mlp_ratio",
    "rk": "rank_ratio",
}
_GENOME_TOKEN = re.compile(r"(rk|[a-z])(.*)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@register_space
class TinyVitSpace(SearchSpace):
    """MCUFormer-style tiny vision transformers with a weight-shared supernet."""

    name: ClassVar[str] = "tiny-vit"
    config_cls: ClassVar[type[ArchConfig]] = TinyVitConfig

    def choices(self) -> dict[str, tuple[Any, ...]]:
        return dict(_CHOICES)

    def _make(self, **knobs: Any) -> TinyVitConfig:
        """A config with this space's dataset fields; truncated blocks normalised."""
        depth = knobs["depth"]
        for knob in _BLOCK_KNOBS:
            active = tuple(knobs[knob])[:depth]
            knobs[knob] = active + (_CHOICES[knob][0],) * (MAX_DEPTH - len(active))
        return TinyVitConfig(num_classes=self.num_classes, in_channels=self.in_channels, **knobs)

    def sample(self, rng: random.Random) -> TinyVitConfig:
        knobs: dict[str, Any] = {k: rng.choice(_CHOICES[k]) for k in _SCALAR_KNOBS}
        for knob in _BLOCK_KNOBS:
            knobs[knob] = tuple(rng.choice(_CHOICES[knob]) for _ in range(knobs["depth"]))
        knobs["rank_ratio"] = rng.choice(RANK_RATIOS)
        return self._make(**knobs)

    def largest(self) -> TinyVitConfig:
        """Most tokens (largest resolution, *smallest* patch) and every width at its maximum."""
        return self._make(
            resolution=RESOLUTIONS[-1],
            patch_size=PATCH_SIZES[0],
            embed_dim=EMBED_DIMS[-1],
            depth=MAX_DEPTH,
            num_heads=(NUM_HEADS[-1],) * MAX_DEPTH,
            mlp_ratio=(MLP_RATIOS[-1],) * MAX_DEPTH,
            rank_ratio=RANK_RATIOS[-1],
        )

    def smallest(self) -> TinyVitConfig:
        """Fewest tokens (smallest resolution, *largest* patch) and every width at its minimum."""
        return self._make(
            resolution=RESOLUTIONS[0],
            patch_size=PATCH_SIZES[-1],
            embed_dim=EMBED_DIMS[0],
            depth=DEPTHS[0],
            num_heads=(NUM_HEADS[0],),
            mlp_ratio=(MLP_RATIOS[0],),
            rank_ratio=RANK_RATIOS[0],
        )

    def validate(self, cfg: ArchConfig) -> None:
        if not isinstance(cfg, TinyVitConfig):
            raise ConfigError(f"expected a TinyVitConfig, got {type(cfg).__name__}")
        for name, mine in (("num_classes", self.num_classes), ("in_channels", self.in_channels)):
            value = getattr(cfg, name)
            if value != mine or not _is_int(value):
                raise ConfigError(f"{name}={value!r}: this tiny-vit space expects {mine}")
        for knob in _SCALAR_KNOBS:
            value = getattr(cfg, knob)
            if not _is_int(value) or value not in _CHOICES[knob]:
                raise ConfigError(f"{knob}={value!r}: expected one of {_CHOICES[knob]}")
        for knob in _BLOCK_KNOBS:
            values = getattr(cfg, knob)
            if not isinstance(values, tuple) or len(values) != MAX_DEPTH:
                raise ConfigError(
                    f"{knob}={values!r}: expected a tuple of {MAX_DEPTH} values, one per block"
                )
            for i, value in enumerate(values):
                if not _is_int(value) or value not in _CHOICES[knob]:
                    raise ConfigError(f"{knob}[{i}]={value!r}: expected one of {_CHOICES[knob]}")
                if i >= cfg.depth and value != _CHOICES[knob][0]:
                    raise ConfigError(
                        f"{knob}[{i}]={value!r}: block {i} is beyond depth={cfg.depth}, "
                        f"expected {_CHOICES[knob][0]} (truncated blocks hold the smallest choice)"
                    )
        ratio = cfg.rank_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, float) or ratio not in RANK_RATIOS:
            raise ConfigError(f"rank_ratio={ratio!r}: expected one of {RANK_RATIOS}")

    # --- serialisation ---------------------------------------------------------------------
    def encode(self, cfg: ArchConfig) -> str:
        self.validate(cfg)
        assert isinstance(cfg, TinyVitConfig)
        heads = ".".join(str(h) for h in cfg.num_heads[: cfg.depth])
        mlp = ".".join(str(m) for m in cfg.mlp_ratio[: cfg.depth])
        return (
            f"r{cfg.resolution}-p{cfg.patch_size}-e{cfg.embed_dim}-d{cfg.depth}"
            f"-h{heads}-m{mlp}-rk{cfg.rank_ratio}"
        )

    def decode(self, genome: str) -> TinyVitConfig:
        if not isinstance(genome, str):
            raise ConfigError(f"genome must be a string, got {type(genome).__name__}")
        knobs: dict[str, Any] = {}
        for token in genome.strip().split("-"):
            match = _GENOME_TOKEN.fullmatch(token)
            key = match.group(1) if match else None
            if key not in _GENOME_KEYS:
                raise ConfigError(
                    f"genome token {token!r}: expected a prefix from {sorted(_GENOME_KEYS)} "
                    "and a value, e.g. 'r32-p4-e64-d2-h2.4-m3.1-rk0.5'"
                )
            knob = _GENOME_KEYS[key]
            if knob in knobs:
                raise ConfigError(f"genome token {token!r}: {knob} given twice")
            assert match is not None
            knobs[knob] = self._parse_value(token, knob, match.group(2))
        missing = [k for k, v in _GENOME_KEYS.items() if v not in knobs]
        if missing:
            raise ConfigError(f"genome {genome!r}: missing token(s) {missing}")
        for knob in _BLOCK_KNOBS:
            if len(knobs[knob]) != knobs["depth"]:
                raise ConfigError(
                    f"genome {genome!r}: {knob} lists {len(knobs[knob])} blocks, "
                    f"expected depth={knobs['depth']}"
                )
        return self._make(**knobs)

    @staticmethod
    def _parse_value(token: str, knob: str, text: str) -> Any:
        allowed = _CHOICES[knob]
        parts = text.split(".") if knob in _BLOCK_KNOBS else [text]
        values = []
        for part in parts:
            try:
                value = float(part) if knob == "rank_ratio" else int(part)
            except ValueError:
                value = None
            if value not in allowed:
                raise ConfigError(
                    f"genome token {token!r}: {knob} value {part!r} not in {allowed}"
                )
            values.append(allowed[allowed.index(value)])
        return tuple(values) if knob in _BLOCK_KNOBS else values[0]

    # --- integer vectors for the search ------------------------------------------------------
    def _genes(self) -> list[tuple[str, int | None]]:
        genes: list[tuple[str, int | None]] = [(k, None) for k in _SCALAR_KNOBS]
        for knob in _BLOCK_KNOBS:
            genes += [(knob, i) for i in range(MAX_DEPTH)]
        return [*genes, ("rank_ratio", None)]

    def vector_bounds(self) -> list[int]:
        """Number of choices per gene: resolution, patch, embed, depth, heads x MAX_DEPTH,
        MLP ratio x MAX_DEPTH, rank ratio. Genes of truncated blocks are ignored."""
        return [len(_CHOICES[knob]) for knob, _ in self._genes()]

    def to_vector(self, cfg: ArchConfig) -> list[int]:
        self.validate(cfg)
        out = []
        for knob, i in self._genes():
            value = getattr(cfg, knob)
            out.append(_CHOICES[knob].index(value if i is None else value[i]))
        return out

    def from_vector(self, vec: list[int]) -> TinyVitConfig:
        return self._make(**knobs_from_vector(vec, self._genes(), lambda knob, _: _CHOICES[knob]))

    # --- numbers -----------------------------------------------------------------------------
    def layer_plan(self, cfg: ArchConfig) -> list[VitOp]:
        """The ops of ``cfg`` (see :func:`layer_plan`)."""
        self.validate(cfg)
        assert isinstance(cfg, TinyVitConfig)
        return layer_plan(cfg)

    def count(self, cfg: ArchConfig) -> Counts:
        ops = self.layer_plan(cfg)
        return Counts(params=sum(op.params for op in ops), macs=sum(op.macs for op in ops))

    def input_shape(self, cfg: ArchConfig) -> tuple[int, int, int]:
        self.validate(cfg)
        assert isinstance(cfg, TinyVitConfig)
        return (cfg.resolution, cfg.resolution, cfg.in_channels)

    # --- torch side --------------------------------------------------------------------------
    def build_supernet(self) -> nn.Module:
        from edgekit.spaces.tiny_vit_net import TinyVitSupernet

        return TinyVitSupernet(self)

    def extract(self, supernet: nn.Module, cfg: ArchConfig) -> nn.Module:
        from edgekit.spaces.tiny_vit_net import extract

        self.validate(cfg)
        return extract(supernet, cfg)

    def prepare_input(self, x: torch.Tensor, cfg: ArchConfig) -> torch.Tensor:
        """Resize an NCHW batch to ``cfg``'s resolution (bilinear, align_corners=False)."""
        from edgekit.spaces.tiny_vit_net import prepare_input

        self.validate(cfg)
        return prepare_input(x, cfg)


__all__ = [
    "EMBED_DIMS",
    "HEAD_DIM",
    "LAYER_NORM_EPS",
    "MAX_DEPTH",
    "OP_KINDS",
    "TinyVitConfig",
    "TinyVitSpace",
    "VitOp",
    "is_factorised",
    "layer_plan",
    "projection_rank",
]
