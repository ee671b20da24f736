"""The contract every search space implements.

An architecture is plain data: a frozen dataclass (``ArchConfig`` subclass) that round-trips
exactly through JSON (``to_dict`` / ``from_dict``) and through a compact genome string
(``encode`` / ``decode``). Config classes and the space's pure-Python parts import no torch, so
the memory model and the search loop can handle thousands of configs cheaply; only
``build_supernet`` / ``extract`` import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.errors import ConfigError

if TYPE_CHECKING:
    import torch.nn as nn


def projection_rank(rank_ratio: float, in_features: int, out_features: int) -> int:
    """Rank of a low-rank projection (1x1 conv or linear): ``ceil(rank_ratio * min(in, out))``."""
    # round() first: float products such as 0.75 * 48 = 36.00000000000001 must not bump ceil.
    return max(1, math.ceil(round(rank_ratio * min(in_features, out_features), 6)))


def is_factorised(rank: int, in_features: int, out_features: int) -> bool:
    """Whether a rank-``rank`` projection is stored as two stacked layers (else one dense one,
    which is smaller and computes the same function)."""
    return rank * (in_features + out_features) < in_features * out_features


def knobs_from_vector(
    vec: Sequence[int],
    genes: Sequence[tuple[str, int | None]],
    choices: Callable[[str, int | None], tuple[Any, ...]],
) -> dict[str, Any]:
    """The knob values a search vector picks. ``genes`` names each gene (knob, and its position
    for per-stage / per-block knobs, else None), ``choices(knob, position)`` its values; knobs
    with positions become lists in gene order. Raises ConfigError naming a bad gene."""
    if len(vec) != len(genes):
        raise ConfigError(f"vector of length {len(vec)}: expected {len(genes)} genes")
    knobs: dict[str, Any] = {}
    for (knob, position), index in zip(genes, vec, strict=True):
        allowed = choices(knob, position)
        gene = knob if position is None else f"{knob}[{position}]"
        try:
            index = operator.index(index)  # accepts numpy integers, rejects floats
        except TypeError as e:
            raise ConfigError(f"gene {gene}={index!r}: expected an integer index") from e
        if not 0 <= index < len(allowed):
            raise ConfigError(f"gene {gene}={index}: expected an index in [0, {len(allowed) - 1}]")
        if position is None:
            knobs[knob] = allowed[index]
        else:
            knobs.setdefault(knob, []).append(allowed[index])
    return knobs


@dataclass(frozen=True)
class Counts:
    """Parameters and multiply-accumulates of one subnet for one input image.

    MACs count conv, linear and matmul multiply-accumulates only (what
    ``torch.utils.flop_counter.FlopCounterMode`` reports, divided by two); element-wise ops
    (BatchNorm, activations, adds) are not counted.
    """

    params: int
    macs: int


@dataclass(frozen=True)
class ArchConfig:
    """Base of every space's architecture config. Subclasses are frozen dataclasses whose
    fields are ints, floats, strings or tuples of those (never lists, so configs hash)."""

    space: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; tuples become lists, and the space name is included."""
        out: dict[str, Any] = {"space": self.space}
        for field in dataclasses.fields(self):
            out[field.name] = _to_jsonable(getattr(self, field.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


class SearchSpace(ABC):
    """A named family of architectures with a weight-shared supernet.

    ``num_classes`` and ``in_channels`` come from the dataset; they are stored in every
    config the space produces so that a config alone is enough to build, estimate and export.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[ArchConfig]]

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes!r}: expected an integer >= 2")
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels={in_channels!r}: expected 1 or 3")
        self.num_classes = num_classes
        self.in_channels = in_channels

    # --- the knobs -------------------------------------------------------------------------
    @abstractmethod
    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Each knob and its allowed values (per-stage / per-block knobs listed once)."""

    @abstractmethod
    def sample(self, rng: random.Random) -> ArchConfig:
        """A uniformly random valid config; deterministic for a seeded ``rng``."""

    @abstractmethod
    def largest(self) -> ArchConfig:
        """The config with every knob at its largest value (the sandwich rule's top)."""

    @abstractmethod
    def smallest(self) -> ArchConfig:
        """The config with every knob at its smallest value (the sandwich rule's bottom)."""

    @abstractmethod
    def validate(self, cfg: ArchConfig) -> None:
        """Raise ConfigError naming the bad field, its value and the allowed values."""

    # --- serialisation ---------------------------------------------------------------------
    @abstractmethod
    def encode(self, cfg: ArchConfig) -> str:
        """Compact genome string, e.g. ``r32-w0.5-...``; ``decode(encode(c)) == c``."""

    @abstractmethod
    def decode(self, genome: str) -> ArchConfig:
        """Parse a genome string; raise ConfigError naming the bad token."""

    def from_dict(self, data: dict[str, Any]) -> ArchConfig:
        """Inverse of ``ArchConfig.to_dict``; validates and raises ConfigError on bad input."""
        data = dict(data)
        space = data.pop("space", self.name)
        if space != self.name:
            raise ConfigError(f"config is for space {space!r}, expected {self.name!r}")
        fields = dataclasses.fields(self.config_cls)
        names = {f.name for f in fields}
        # Fields with a default were added later: configs saved before them mean the default.
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        unknown = sorted(set(data) - names)
        missing = sorted(required - set(data))
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown} for space {self.name!r}")
        if missing:
            raise ConfigError(f"missing config field(s) {missing} for space {self.name!r}")
        try:
            cfg = self.config_cls(**{k: _to_tuple(v) for k, v in data.items()})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad config for space {self.name!r}: {e}") from e
        self.validate(cfg)
        return cfg

    def from_json(self, text: str) -> ArchConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config JSON must be an object, got {type(data).__name__}")
        return self.from_dict(data)

    # --- numbers ---------------------------------------------------------------------------
    @abstractmethod
    def count(self, cfg: ArchConfig) -> Counts:
        """Analytic params and MACs of the subnet ``cfg``; exact against FlopCounterMode."""

    def whole_image(self, cfg: ArchConfig) -> ArchConfig:
        """The config computing the same function as ``cfg`` without patch-based execution
        (``cfg`` itself in spaces without patches)."""
        return cfg

    @abstractmethod
    def input_shape(self, cfg: ArchConfig) -> tuple[int, int, int]:
        """Model input as (height, width, channels)."""

    # --- torch side (imports torch lazily) -------------------------------------------------
    @abstractmethod
    def build_supernet(self) -> nn.Module:
        """A fresh weight-shared supernet; it has ``set_active(cfg)`` and runs NCHW input."""

    @abstractmethod
    def extract(self, supernet: nn.Module, cfg: ArchConfig) -> nn.Module:
        """A standalone module whose outputs equal the supernet's with ``cfg`` active."""
