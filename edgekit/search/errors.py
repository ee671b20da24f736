"""Errors of the search stage."""

from __future__ import annotations

from edgekit.errors import EdgekitError


class SearchError(EdgekitError):
    """A search cannot start or continue (run folder in use, settings mismatch, bad option)."""


class ImpossibleBudgetError(SearchError):
    """No architecture of the searched space(s) fits the budgets.

    ``smallest`` maps each space to the smallest footprint it can reach:
    ``{"arena_bytes": ..., "flash_bytes": ..., "latency_ms": ...}`` (each minimised on its own).
    """

    def __init__(self, message: str, smallest: dict[str, dict[str, float]]) -> None:
        super().__init__(message)
        self.smallest = smallest
