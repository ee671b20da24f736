"""Board budget check: does a model's arena and flatbuffer fit what the firmware leaves?"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from edgekit.estimate.report import MemoryReport, analyze_model, runtime_for
from edgekit.estimate.tflite_file import parse_model
from edgekit.units import format_size

logger = logging.getLogger(__name__)


class BoardBudget(Protocol):
    """What :func:`fits` reads from a board (``edgekit.profiles.DeviceProfile`` has it)."""

    name: str
    pointer_bytes: int
    alignment_bytes: int

    @property
    def sram_budget_bytes(self) -> int: ...

    @property
    def flash_budget_bytes(self) -> int: ...


@dataclass(frozen=True)
class FitReport:
    """Verdict for one model on one board. Negative margins are overflows."""

    board: str
    arena_bytes: int
    flash_bytes: int
    sram_budget_bytes: int
    flash_budget_bytes: int

    @property
    def sram_margin_bytes(self) -> int:
        return self.sram_budget_bytes - self.arena_bytes

    @property
    def flash_margin_bytes(self) -> int:
        return self.flash_budget_bytes - self.flash_bytes

    @property
    def fits(self) -> bool:
        return self.sram_margin_bytes >= 0 and self.flash_margin_bytes >= 0

    def summary(self) -> str:
        def part(what: str, used: int, budget: int, margin: int) -> str:
            verdict = (
                f"{format_size(margin)} free"
                if margin >= 0
                else (f"OVER by {format_size(-margin)} ({-margin} B)")
            )
            return f"{what} {format_size(used)} of {format_size(budget)} ({verdict})"

        sram = part("arena", self.arena_bytes, self.sram_budget_bytes, self.sram_margin_bytes)
        flash = part("flash", self.flash_bytes, self.flash_budget_bytes, self.flash_margin_bytes)
        return f"{self.board}: {'fits' if self.fits else 'does NOT fit'}; {sram}; {flash}"

    def rows(self) -> list[dict[str, object]]:
        """Two rows (SRAM, flash) with used, budget, margin and a per-resource verdict."""
        return [
            {
                "resource": name,
                "used_bytes": used,
                "budget_bytes": budget,
                "margin_bytes": budget - used,
                "fits": budget - used >= 0,
            }
            for name, used, budget in (
                ("sram (tensor arena)", self.arena_bytes, self.sram_budget_bytes),
                ("flash (model)", self.flash_bytes, self.flash_budget_bytes),
            )
        ]


def fits(report: MemoryReport, profile: BoardBudget) -> FitReport:
    """Check ``report`` against a board: arena <= SRAM budget and model <= flash budget.

    The arena is taken for the board's pointer width and alignment (8-byte pointers: the host
    tflite-micro build, else a 32-bit firmware build): a report made for another build is
    re-analysed first.
    Exactly at the boundary fits: arena == budget fits, budget - 1 does not.
    """
    wanted = runtime_for(profile.pointer_bytes, profile.alignment_bytes)
    if report.runtime != wanted:
        logger.info("re-analysing for %s (%s)", profile.name, wanted.name)
        report = analyze_model(report.model_bytes, parse_model(report.model_bytes), wanted)
    return FitReport(
        board=profile.name,
        arena_bytes=report.arena_bytes,
        flash_bytes=report.flash_bytes,
        sram_budget_bytes=profile.sram_budget_bytes,
        flash_budget_bytes=profile.flash_budget_bytes,
    )
