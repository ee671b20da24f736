"""Budgets a searched model must meet: tensor arena (SRAM), flash and, optionally, latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.search.errors import SearchError
from edgekit.units import format_size, parse_size

if TYPE_CHECKING:
    from edgekit.profiles import DeviceProfile
    from edgekit.search.objectives import Footprint


@dataclass(frozen=True)
class Budget:
    """Upper bounds, inclusive: a model whose arena equals ``sram_bytes`` fits."""

    sram_bytes: int
    flash_bytes: int
    latency_ms: float | None = None

    @classmethod
    def for_board(
        cls,
        board: DeviceProfile,
        *,
        sram: int | str | None = None,
        flash: int | str | None = None,
        latency_ms: float | None = None,
    ) -> Budget:
        """The board's budgets (what its profile leaves after the firmware's reservation),
        with ``sram`` / ``flash`` (bytes or size strings such as ``"256KiB"``) replacing them."""

        def size(value: int | str | None, default: int, what: str) -> int:
            if value is None:
                return default
            try:
                n_bytes = parse_size(value)
            except EdgekitError as e:
                raise SearchError(f"--{what} {value!r}: {e}") from e
            if n_bytes <= 0:
                raise SearchError(f"--{what} {value!r}: expected a positive size")
            return n_bytes

        if latency_ms is not None and not latency_ms > 0:
            raise SearchError(f"--latency-ms {latency_ms!r}: expected a positive number")
        return cls(
            sram_bytes=size(sram, board.sram_budget_bytes, "sram"),
            flash_bytes=size(flash, board.flash_budget_bytes, "flash"),
            latency_ms=None if latency_ms is None else float(latency_ms),
        )

    def violations(self, fp: Footprint) -> tuple[float, float, float]:
        """pymoo inequality constraints ``G <= 0``: (arena - SRAM, flash - flash budget,
        latency - latency budget); the last is 0 without a latency budget."""
        latency = 0.0 if self.latency_ms is None else fp.latency_ms - self.latency_ms
        return (
            float(fp.arena_bytes - self.sram_bytes),
            float(fp.flash_bytes - self.flash_bytes),
            latency,
        )

    def fits(self, fp: Footprint) -> bool:
        return all(value <= 0 for value in self.violations(fp))

    def describe(self) -> str:
        text = f"arena <= {format_size(self.sram_bytes)}, flash <= {format_size(self.flash_bytes)}"
        if self.latency_ms is not None:
            text += f", latency <= {self.latency_ms:g} ms"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "sram_bytes": self.sram_bytes,
            "flash_bytes": self.flash_bytes,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        return cls(int(data["sram_bytes"]), int(data["flash_bytes"]), data.get("latency_ms"))
