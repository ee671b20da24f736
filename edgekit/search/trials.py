"""Trials as values, the Pareto set and the rule that picks the model to deploy."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgekit.search.budget import Budget


@dataclass(frozen=True)
class Trial:
    """One candidate of a search, as stored in the trial store.

    ``status`` is ``"evaluated"``, ``"over_budget"`` or ``"screened_out"``; only evaluated
    trials have ``val_accuracy`` (inherited from the supernet after BatchNorm recalibration)
    and ``index`` (their rank in evaluation order). ``arena_bytes`` / ``flash_bytes`` /
    ``latency_ms`` are the models' estimates; ``test_accuracy`` is filled for Pareto points by
    the final report.
    """

    space: str
    genome: str
    status: str
    generation: int
    config: dict[str, Any]
    vector: tuple[int, ...]
    arena_bytes: int
    flash_bytes: int
    latency_ms: float
    macs: int
    params: int
    val_accuracy: float | None = None
    predicted_accuracy: float | None = None
    index: int | None = None
    seconds: float | None = field(default=None, compare=False)  # timing, not identity
    test_accuracy: float | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Trial:
        return cls(
            space=record["space"],
            genome=record["genome"],
            status=record["status"],
            generation=int(record["generation"]),
            config=dict(record["config"]),
            vector=tuple(record["vector"]),
            arena_bytes=int(record["arena_bytes"]),
            flash_bytes=int(record["flash_bytes"]),
            latency_ms=float(record["latency_ms"]),
            macs=int(record["macs"]),
            params=int(record["params"]),
            val_accuracy=record.get("val_accuracy"),
            predicted_accuracy=record.get("predicted_accuracy"),
            index=record.get("trial"),
            seconds=record.get("seconds"),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.space, self.genome)

    def objectives(self) -> list[float]:
        """Minimised objectives: -accuracy, arena, flash, latency."""
        accuracy = self.val_accuracy if self.val_accuracy is not None else float("nan")
        if not np.isfinite(accuracy):
            accuracy = 0.0
        return [-accuracy, float(self.arena_bytes), float(self.flash_bytes), self.latency_ms]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "space": self.space,
            "genome": self.genome,
            "status": self.status,
            "generation": self.generation,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "predicted_accuracy": self.predicted_accuracy,
            "arena_bytes": self.arena_bytes,
            "flash_bytes": self.flash_bytes,
            "latency_ms": self.latency_ms,
            "macs": self.macs,
            "params": self.params,
            "trial": self.index,
        }
        out["config"] = self.config
        return out


def evaluated_trials(records: Iterable[dict[str, Any]]) -> list[Trial]:
    """The evaluated trials of a store, with test accuracies merged in, in record order."""
    records = list(records)
    tests = {
        (r["space"], r["genome"]): r["test_accuracy"] for r in records if r.get("kind") == "test"
    }
    out = []
    for record in records:
        if record.get("kind") == "trial" and record.get("status") == "evaluated":
            trial = Trial.from_record(record)
            out.append(replace(trial, test_accuracy=tests.get(trial.key)))
    return out


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """The non-dominated evaluated trials over (accuracy up; arena, flash, latency down),
    highest validation accuracy first (ties: smaller arena, flash, latency, then genome)."""
    candidates = [t for t in trials if t.status == "evaluated"]
    if not candidates:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    objectives = np.asarray([t.objectives() for t in candidates], dtype=float)
    front = NonDominatedSorting().do(objectives, only_non_dominated_front=True)
    return sorted((candidates[i] for i in front), key=_preference)


def _preference(trial: Trial) -> tuple[Any, ...]:
    accuracy = trial.val_accuracy if trial.val_accuracy is not None else -1.0
    return (-accuracy, trial.arena_bytes, trial.flash_bytes, trial.latency_ms, trial.space,
            trial.genome)  # fmt: skip


EXPORT_ATTEMPTS = 3  # exports per space before settling for one over the budgets


def choose(trials: Sequence[Trial], exclude: Collection[tuple[str, str]] = ()) -> Trial | None:
    """The model to deploy: the highest validation accuracy among the (feasible, since only
    fitting candidates are evaluated) trials; ties go to the smaller arena, flash, latency.
    Trials whose key is in ``exclude`` (see :func:`misfits`) are passed over."""
    front = pareto_front([t for t in trials if t.key not in exclude])
    return front[0] if front else None


def export_arena(export: Mapping[str, Any]) -> int | None:
    """An exported model's tensor arena (an ``export`` record): for the board's build where the
    exporter computed it, else the host measurement."""
    return export.get("arena_firmware_bytes") or export.get("arena_measured_host_bytes")


def export_fits(export: Mapping[str, Any], budget: Budget) -> bool:
    """Whether an exported model (an ``export`` record) meets the arena and flash budgets."""
    arena = export_arena(export)
    assert arena is not None, "an export record always holds the host measurement"
    return arena <= budget.sram_bytes and export["flash_bytes"] <= budget.flash_bytes


def misfits(records: Iterable[Mapping[str, Any]], budget: Budget) -> set[tuple[str, str]]:
    """(space, genome) of the search's exported models that do not fit ``budget`` and were
    passed over: the first ``EXPORT_ATTEMPTS - 1`` of each space, in export order (a space's
    last attempt stands even when over; re-exports of Pareto points do not count). The
    config-based figures equal the file's, but a TensorFlow that converts differently from
    the one they were checked against (see docs/BENCHMARKS.md) can make an export come out
    over a budget its config met."""
    passed_over: dict[str, list[str]] = {}
    for r in records:
        if r.get("kind") == "export" and not r.get("reexport") and not export_fits(r, budget):
            genomes = passed_over.setdefault(r["space"], [])
            if r["genome"] not in genomes and len(genomes) < EXPORT_ATTEMPTS - 1:
                genomes.append(r["genome"])
    return {(space, genome) for space, genomes in passed_over.items() for genome in genomes}


__all__ = [
    "EXPORT_ATTEMPTS",
    "Trial",
    "choose",
    "evaluated_trials",
    "export_arena",
    "export_fits",
    "misfits",
    "pareto_front",
]
