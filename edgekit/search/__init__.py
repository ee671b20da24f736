"""Memory-budgeted architecture search: from data and a board to deployable models that fit.

``run_search(space, board, data, out, ...)`` checks every candidate against the board's budgets
with the memory and latency models before any accuracy work, searches with NSGA-II (pymoo) over
accuracy, tensor arena, flash and latency, using accuracy inherited from a weight-shared
supernet (BatchNorm recalibrated) and a LightGBM accuracy predictor to pre-screen offspring,
records every trial in an append-only store (resumable after a crash), then fine-tunes and
exports the chosen models and renders a report. ``objectives`` is the one adapter to the
memory model, trainer and exporter.
"""

from __future__ import annotations

from edgekit.search.budget import Budget
from edgekit.search.errors import ImpossibleBudgetError, SearchError
from edgekit.search.objectives import Footprint, footprint
from edgekit.search.report import render_report, report_files
from edgekit.search.run import SearchResult, export_point, load_result, run_search
from edgekit.search.store import TrialStore, read_records, read_run
from edgekit.search.strategy import STRATEGIES, SearchSettings, SpaceSearch
from edgekit.search.trials import Trial, choose, evaluated_trials, pareto_front

__all__ = [
    "STRATEGIES",
    "Budget",
    "Footprint",
    "ImpossibleBudgetError",
    "SearchError",
    "SearchResult",
    "SearchSettings",
    "SpaceSearch",
    "Trial",
    "TrialStore",
    "choose",
    "evaluated_trials",
    "export_point",
    "footprint",
    "load_result",
    "pareto_front",
    "read_records",
    "read_run",
    "render_report",
    "report_files",
    "run_search",
]
