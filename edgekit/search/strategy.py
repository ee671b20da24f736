"""The search over one space: early-exit initialisation, NSGA-II (pymoo, ask/tell) with a GBDT
pre-screen, or random search; every candidate is costed before any accuracy work.

Flow of one space:

1. :meth:`SpaceSearch.prepare` draws random gene vectors until it has a population of
   distinct configs that fit the budgets (the memory and latency models only: nothing is
   trained or evaluated for a config that does not fit). If none fits, it raises
   :class:`ImpossibleBudgetError` naming the smallest footprint the space reaches.
2. :meth:`SpaceSearch.run` evaluates the initial population (accuracy inherited from the
   supernet after BatchNorm recalibration), then asks NSGA-II for offspring generation after
   generation: over-budget offspring are recorded and told to pymoo with their constraint
   violations, the feasible ones are ranked by the accuracy predictor (trained on every
   evaluation so far), the best ``offspring`` of them (a few picked at random, to explore) are
   evaluated, and all of these are told back. It stops after ``evaluations`` accuracy
   evaluations.

Objectives (all minimised): ``-accuracy, arena, flash, latency``; constraints ``G <= 0``:
``arena - SRAM budget, flash - flash budget, latency - latency budget``.

Resume is replay: the loop is deterministic for a seed, so a resumed run repeats the same
decisions and takes every accuracy already in the trial store instead of evaluating again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.search.errors import ImpossibleBudgetError, SearchError
from edgekit.search.objectives import Footprint, footprint
from edgekit.search.predictor import AccuracyPredictor, features, kendall_tau
from edgekit.search.trials import Trial
from edgekit.units import format_size

if TYPE_CHECKING:
    from edgekit.profiles import DeviceProfile
    from edgekit.search.budget import Budget
    from edgekit.search.store import TrialStore
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
STRATEGIES = ("nsga2", "random")


@dataclass(frozen=True)
class SearchSettings:
    """How one space is searched (stored in ``run.json``; ``--resume`` needs the same)."""

    strategy: str = "nsga2"
    evaluations: int = 60  # accuracy evaluations per space
    population: int = 16
    offspring: int | None = None  # evaluated per generation; default population // 2
    predictor: bool = True
    screen_factor: int = 3  # offspring asked per generation = screen_factor x offspring
    explore: int = 1  # of each generation's evaluations, picked at random among the screened
    eval_samples: int | None = None  # validation images per evaluation (None: all)
    recalibrate_batches: int = 10
    init_draws: int = 50  # random draws per population member before giving up
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise SearchError(f"strategy={self.strategy!r}: expected one of {STRATEGIES}")
        for name in ("evaluations", "population", "screen_factor", "init_draws",
                     "recalibrate_batches"):  # fmt: skip
            if getattr(self, name) < 1:
                raise SearchError(f"{name}={getattr(self, name)!r}: expected at least 1")
        if self.population < 2:
            raise SearchError(f"population={self.population!r}: expected at least 2")
        if self.offspring is not None and self.offspring < 1:
            raise SearchError(f"offspring={self.offspring!r}: expected at least 1")
        if self.explore < 0:
            raise SearchError(f"explore={self.explore!r}: expected 0 or more")

    @property
    def offspring_per_generation(self) -> int:
        return self.offspring or max(1, self.population // 2)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class _Candidate:
    cfg: ArchConfig
    vector: list[int]
    genome: str
    fp: Footprint
    predicted: float | None = None


@dataclass
class SpaceSearch:
    """Search one space for one board and budget, recording into ``store``."""

    space: SearchSpace
    board: DeviceProfile
    budget: Budget
    settings: SearchSettings
    store: TrialStore
    progress: ProgressCallback | None = None
    evaluated: list[Trial] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._footprints: dict[ArchConfig, Footprint] = {}
        self._counts: dict[ArchConfig, tuple[int, int]] = {}
        self._bounds = np.asarray(self.space.vector_bounds(), dtype=np.int64)
        self._cache: dict[str, dict[str, Any]] = {}
        self._recorded: set[tuple[str, str, int]] = set()
        for record in self.store.records:
            if record.get("kind") != "trial" or record.get("space") != self.space.name:
                continue
            if record["status"] == "evaluated":
                self._cache[record["genome"]] = record
            else:
                self._recorded.add((record["status"], record["genome"], record["generation"]))
        self._told: set[str] = set()
        self._initial: list[_Candidate] = []
        self._smallest: dict[str, tuple[float, str]] = {}
        self._accuracy: Callable[[ArchConfig], float] | None = None
        self._training_features: list[list[float]] = []
        self.stats = {"draws": 0, "rejected": 0, "screened_out": 0, "evaluated": 0,
                      "generations": 0, "cached": 0}  # fmt: skip

    # --- costing ----------------------------------------------------------------------------
    def _canonical(self, vector: Any) -> tuple[ArchConfig, list[int], str]:
        cfg = self.space.from_vector([int(v) for v in vector])
        return cfg, self.space.to_vector(cfg), self.space.encode(cfg)

    def footprint(self, cfg: ArchConfig) -> Footprint:
        if cfg not in self._footprints:
            fp = footprint(self.space, cfg, self.board)
            self._footprints[cfg] = fp
            genome = self.space.encode(cfg)
            for key, value in (("arena_bytes", fp.arena_bytes), ("flash_bytes", fp.flash_bytes),
                               ("latency_ms", fp.latency_ms)):  # fmt: skip
                if key not in self._smallest or value < self._smallest[key][0]:
                    self._smallest[key] = (value, genome)
        return self._footprints[cfg]

    def _candidate(self, vector: Any) -> _Candidate:
        cfg, canonical, genome = self._canonical(vector)
        return _Candidate(cfg, canonical, genome, self.footprint(cfg))

    def smallest_footprint(self) -> dict[str, float]:
        """The smallest arena, flash and latency seen (each on its own) with their genomes."""
        out: dict[str, Any] = {}
        for key, (value, genome) in self._smallest.items():
            out[key] = value
            out[f"{key}_genome"] = genome
        return out

    # --- phase 1: early-exit initial population --------------------------------------------
    def prepare(self) -> list[ArchConfig]:
        """Find the initial population among random configs that fit (no accuracy work yet);
        an evolutionary search also starts from the space's largest config if it fits.

        Raises ImpossibleBudgetError when no config fits; the smallest config and its one-gene
        variations are always costed too, so the reported minimum is near the space's floor.
        """
        s = self.settings
        rng = np.random.default_rng([s.seed, 1])
        wanted = s.evaluations if s.strategy == "random" else min(s.population, s.evaluations)
        found: dict[str, _Candidate] = {}
        seen: set[str] = set()
        if s.strategy != "random":
            # Start the evolution from the largest config when it fits. Not from the smallest:
            # the sandwich rule trains it at every step, which inflates its inherited accuracy
            # (on CIFAR-10 it ranked 3rd of 192 fitting configs by inherited accuracy and last
            # trained from scratch), and seeded with it NSGA-II kept choosing it.
            largest = self._candidate(self.space.to_vector(self.space.largest()))
            seen.add(largest.genome)
            if self.budget.fits(largest.fp) and wanted > 0:
                found[largest.genome] = largest
        max_draws = s.init_draws * wanted
        while len(found) < wanted and self.stats["draws"] < max_draws:
            self.stats["draws"] += 1
            candidate = self._candidate(rng.integers(0, self._bounds))
            if candidate.genome in seen:
                continue
            seen.add(candidate.genome)
            if self.budget.fits(candidate.fp):
                found[candidate.genome] = candidate
            else:
                self.stats["rejected"] += 1
        if len(found) < wanted:
            # Few random configs fit: walk from the smallest config one gene at a time.
            for candidate in self._near_smallest():
                if len(found) >= wanted:
                    break
                if candidate.genome not in found and self.budget.fits(candidate.fp):
                    found[candidate.genome] = candidate
        if not found:
            self._near_smallest()  # make sure the floor is in the reported minimum
            raise self._impossible()
        if len(found) < wanted:
            logger.warning(
                "%s: only %d distinct configs fit %s (wanted %d)",
                self.space.name, len(found), self.budget.describe(), wanted,
            )  # fmt: skip
        self._initial = list(found.values())
        logger.info(
            "%s: initial population of %d configs that fit (%d drawn, %d over budget)",
            self.space.name, len(self._initial), self.stats["draws"], self.stats["rejected"],
        )  # fmt: skip
        return [c.cfg for c in self._initial]

    def _near_smallest(self) -> list[_Candidate]:
        base = self.space.to_vector(self.space.smallest())
        out = [self._candidate(base)]
        for gene, choices in enumerate(self._bounds):
            for value in range(int(choices)):
                if value != base[gene]:
                    out.append(self._candidate([*base[:gene], value, *base[gene + 1 :]]))
        return sorted(out, key=lambda c: (c.fp.arena_bytes, c.fp.flash_bytes, c.genome))

    def _impossible(self) -> ImpossibleBudgetError:
        low = self.smallest_footprint()
        parts = [
            f"arena {format_size(int(low['arena_bytes']))} ({low['arena_bytes_genome']})",
            f"flash {format_size(int(low['flash_bytes']))} ({low['flash_bytes_genome']})",
        ]
        if self.budget.latency_ms is not None:
            parts.append(f"latency {low['latency_ms']:.3g} ms ({low['latency_ms_genome']})")
        message = (
            f"no {self.space.name} architecture fits {self.budget.describe()} on "
            f"{self.board.name}; the smallest the space reaches is " + ", ".join(parts)
        )
        return ImpossibleBudgetError(message, {self.space.name: low})

    # --- phase 2: the search ------------------------------------------------------------------
    def run(self, accuracy: Callable[[ArchConfig], float]) -> list[Trial]:
        """Search with ``accuracy(cfg)`` (validation accuracy of a subnet); returns the
        evaluated trials in evaluation order."""
        if not self._initial:
            self.prepare()
        self._accuracy = accuracy
        started = time.perf_counter()
        if self.settings.strategy == "random":
            for candidate in self._initial:
                self._evaluate(candidate, generation=0)
        else:
            self._nsga2()
        self.stats["seconds"] = round(time.perf_counter() - started, 3)
        predicted = [(t.predicted_accuracy, t.val_accuracy) for t in self.evaluated
                     if t.predicted_accuracy is not None]  # fmt: skip
        self.stats["predictor_kendall_tau"] = kendall_tau(
            [p for p, _ in predicted], [a for _, a in predicted]
        )
        self.stats["predicted_evaluations"] = len(predicted)
        return list(self.evaluated)

    def _nsga2(self) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem
        from pymoo.core.termination import NoTermination
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair

        s = self.settings
        problem = Problem(
            n_var=len(self._bounds), n_obj=4, n_ieq_constr=3, xl=np.zeros(len(self._bounds)),
            xu=(self._bounds - 1).astype(float), vtype=int,
        )  # fmt: skip
        per_generation = s.offspring_per_generation
        asked = per_generation * (s.screen_factor if s.predictor else 1)
        algorithm = NSGA2(
            pop_size=len(self._initial),
            sampling=np.asarray([c.vector for c in self._initial], dtype=float),
            # Integer genes with few choices: wide SBX / polynomial-mutation steps (eta 3)
            # rounded back to indices, as in pymoo's mixed-integer examples.
            crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
            mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
            n_offsprings=asked,
            eliminate_duplicates=True,
        )
        algorithm.setup(problem, termination=NoTermination(), seed=s.seed, verbose=False)
        explore_rng = np.random.default_rng([s.seed, 2])
        predictor = AccuracyPredictor(seed=s.seed)
        algorithm.ask()  # generation 0 is the early-exit initial population
        self._tell(algorithm, problem, [(c, self._evaluate(c, 0)) for c in self._initial])
        # Generations that evaluate nothing new (all duplicates / over budget) still count, so
        # a space with few fitting configs cannot loop for ever.
        max_generations = 10 + 5 * math.ceil(s.evaluations / per_generation)
        generation = 0
        while len(self.evaluated) < s.evaluations and generation < max_generations:
            generation += 1
            population = algorithm.ask()
            if population is None or len(population) == 0:
                break
            told: list[tuple[_Candidate, Trial | None]] = []
            feasible: list[_Candidate] = []
            for x in population.get("X"):
                candidate = self._candidate(np.rint(x).astype(np.int64))
                if candidate.genome in self._told:
                    continue
                self._told.add(candidate.genome)
                if self.budget.fits(candidate.fp):
                    feasible.append(candidate)
                else:
                    self._record(candidate, "over_budget", generation)
                    told.append((candidate, None))
            room = s.evaluations - len(self.evaluated)
            if s.predictor and len(feasible) > min(per_generation, room):
                picked = self._screen(feasible, min(per_generation, room), generation,
                                      predictor, explore_rng)  # fmt: skip
            else:
                picked = feasible[:room]
            told += [(c, self._evaluate(c, generation)) for c in picked]
            self._tell(algorithm, problem, told)
            self.stats["generations"] = generation

    def _screen(
        self,
        feasible: list[_Candidate],
        keep: int,
        generation: int,
        predictor: AccuracyPredictor,
        rng: np.random.Generator,
    ) -> list[_Candidate]:
        """The ``keep`` candidates to evaluate: the predictor's best plus ``explore`` random."""
        predictor.fit(self._training_features, [t.val_accuracy for t in self.evaluated])
        if not predictor.ready:
            return feasible[:keep]
        predictions = predictor.predict([self._features(c.cfg, c.vector) for c in feasible])
        for candidate, value in zip(feasible, predictions, strict=True):
            candidate.predicted = float(value)
        order = sorted(range(len(feasible)), key=lambda i: (-predictions[i], i))
        explore = min(self.settings.explore, keep - 1) if keep > 1 else 0
        best, rest = order[: keep - explore], order[keep - explore :]
        extra = [int(i) for i in rng.choice(rest, size=explore, replace=False)] if explore else []
        picked = set(best) | set(extra)
        for i in order:
            if i not in picked:
                self._record(feasible[i], "screened_out", generation)
        return [feasible[i] for i in sorted(picked)]

    def _features(self, cfg: ArchConfig, vector: list[int]) -> list[float]:
        if cfg not in self._counts:
            counts = self.space.count(cfg)
            self._counts[cfg] = (counts.macs, counts.params)
        macs, params = self._counts[cfg]
        fp = self.footprint(cfg)
        return features(vector, macs, params, fp.arena_bytes, fp.flash_bytes, fp.latency_ms)

    def _tell(self, algorithm: Any, problem: Any, told: list[tuple[_Candidate, Trial | None]]
              ) -> None:  # fmt: skip
        from pymoo.core.evaluator import Evaluator
        from pymoo.core.population import Population
        from pymoo.problems.static import StaticProblem

        if not told:
            algorithm.tell(infills=Population.empty())
            return
        objectives, violations = [], []
        for candidate, trial in told:
            accuracy = 0.0 if trial is None or trial.val_accuracy is None else trial.val_accuracy
            fp = candidate.fp
            objectives.append([-accuracy, fp.arena_bytes, fp.flash_bytes, fp.latency_ms])
            violations.append(list(self.budget.violations(fp)))
            self._told.add(candidate.genome)
        infills = Population.new(X=np.asarray([c.vector for c, _ in told], dtype=float))
        static = StaticProblem(problem, F=np.asarray(objectives), G=np.asarray(violations))
        Evaluator().eval(static, infills)
        algorithm.tell(infills=infills)

    # --- records ------------------------------------------------------------------------------
    def _base_record(self, candidate: _Candidate, status: str, generation: int) -> dict[str, Any]:
        if candidate.cfg not in self._counts:
            counts = self.space.count(candidate.cfg)
            self._counts[candidate.cfg] = (counts.macs, counts.params)
        macs, params = self._counts[candidate.cfg]
        fp = candidate.fp
        return {
            "kind": "trial",
            "space": self.space.name,
            "status": status,
            "genome": candidate.genome,
            "config": candidate.cfg.to_dict(),
            "vector": candidate.vector,
            "generation": generation,
            "arena_bytes": fp.arena_bytes,
            "flash_bytes": fp.flash_bytes,
            "latency_ms": fp.latency_ms,
            "macs": macs,
            "params": params,
            "predicted_accuracy": candidate.predicted,
            "val_accuracy": None,
            "trial": None,
            "seconds": None,
            "seed": self.settings.seed,
        }

    def _record(self, candidate: _Candidate, status: str, generation: int) -> None:
        self.stats["rejected" if status == "over_budget" else status] += 1
        key = (status, candidate.genome, generation)
        if key not in self._recorded:
            self._recorded.add(key)
            self.store.append(self._base_record(candidate, status, generation))

    def _evaluate(self, candidate: _Candidate, generation: int) -> Trial:
        self._told.add(candidate.genome)
        record = self._cache.get(candidate.genome)
        if record is not None:
            self.stats["cached"] += 1
        else:
            assert self._accuracy is not None
            started = time.perf_counter()
            accuracy = self._accuracy(candidate.cfg)
            record = self._base_record(candidate, "evaluated", generation)
            record.update(
                val_accuracy=accuracy,
                trial=len(self.evaluated),
                seconds=round(time.perf_counter() - started, 4),
            )
            self.store.append(record)
            self._cache[candidate.genome] = record
        trial = Trial.from_record(record)
        self.evaluated.append(trial)
        self._training_features.append(self._features(candidate.cfg, candidate.vector))
        self.stats["evaluated"] = len(self.evaluated)
        if self.progress is not None:
            best = max(t.val_accuracy or 0.0 for t in self.evaluated)
            self.progress(
                len(self.evaluated),
                self.settings.evaluations,
                f"{self.space.name} gen {generation}: best val acc {best:.1%}",
            )
        return trial


__all__ = ["STRATEGIES", "SearchSettings", "SpaceSearch"]
