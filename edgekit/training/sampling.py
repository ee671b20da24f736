"""Which subnets the sandwich rule trains: the whole space, or only the configs that fit.

A supernet trained over the whole space spends most of its steps on subnets a small board can
never run, and ranks the ones that fit poorly (measured on CIFAR-10 in docs/BENCHMARKS.md).
MCUNet trains inside the feasible set instead; :class:`FittingSampler` does that for any
``fits(cfg)`` rule, without knowing what a budget is (``edgekit.search`` supplies the rule).
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgekit.errors import ConfigError

if TYPE_CHECKING:
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)


class SubnetSampler(ABC):
    """The sandwich rule's subnets: ``largest`` (the teacher, trained on the labels),
    ``smallest`` and ``sample(rng)`` for the random ones."""

    largest: ArchConfig
    smallest: ArchConfig

    @abstractmethod
    def sample(self, rng: random.Random) -> ArchConfig:
        """A random subnet; deterministic for a seeded ``rng``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain-JSON identity, stored in the checkpoint: a run resumes only with an equal one."""


class SpaceSampler(SubnetSampler):
    """Every subnet of the space (BigNAS / OFA): the space's largest, smallest and uniform
    random configs."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.largest = space.largest()
        self.smallest = space.smallest()

    def sample(self, rng: random.Random) -> ArchConfig:
        return self.space.sample(rng)

    def describe(self) -> dict[str, Any]:
        return {"kind": "space"}


class FittingSampler(SubnetSampler):
    """Only subnets for which ``fits(cfg)`` holds (MCUNet): a pool of up to ``pool_size``
    distinct fitting configs is drawn once from the space (seeded, at most ``max_draws``
    draws); random subnets come from the pool and ``smallest`` is its config with the fewest
    MACs. ``largest``, the teacher, is ``teacher`` (e.g. the space's largest, which need not
    fit) or, without one, the pool's config with the most MACs. ``constraint`` names the rule in
    the checkpoint (e.g. the board and its budgets)."""

    def __init__(
        self,
        space: SearchSpace,
        fits: Callable[[ArchConfig], bool],
        constraint: dict[str, Any],
        *,
        seed: int = 0,
        pool_size: int = 500,
        max_draws: int = 20000,
        teacher: ArchConfig | None = None,
    ) -> None:
        if pool_size < 1 or max_draws < 1:
            raise ConfigError(
                f"pool_size={pool_size!r}, max_draws={max_draws!r}: expected positive integers"
            )
        self.space = space
        self.constraint = dict(constraint)
        self.pool_size = pool_size
        rng = random.Random(seed)
        found: dict[ArchConfig, None] = {}
        # The space's own extremes first: the smallest is the usual sandwich bottom whenever
        # it fits, and a budget roomy enough for the largest changes nothing.
        candidates = [space.smallest(), space.largest()]
        draws = 0
        while len(found) < pool_size and draws < max_draws:
            cfg = candidates.pop() if candidates else space.sample(rng)
            draws += 1
            if cfg not in found and fits(cfg):
                found[cfg] = None
        if not found:
            raise ConfigError(
                f"no {space.name} subnet of {draws} drawn satisfies {self.constraint}; "
                "nothing to train"
            )
        self.pool = list(found)
        by_size = sorted(self.pool, key=lambda c: (_size(space, c), space.encode(c)))
        self.smallest = by_size[0]
        self.largest = by_size[-1] if teacher is None else teacher
        logger.info(
            "training %s subnets that fit %s: %d found in %d draws; largest %s, smallest %s",
            space.name, self.constraint, len(self.pool), draws,
            space.encode(self.largest), space.encode(self.smallest),
        )  # fmt: skip

    def sample(self, rng: random.Random) -> ArchConfig:
        return self.pool[rng.randrange(len(self.pool))]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fitting",
            "constraint": self.constraint,
            "pool_size": self.pool_size,
            "found": len(self.pool),
            "largest": self.space.encode(self.largest),
            "smallest": self.space.encode(self.smallest),
        }


def _size(space: SearchSpace, cfg: ArchConfig) -> tuple[int, int]:
    counts = space.count(cfg)
    return counts.macs, counts.params
