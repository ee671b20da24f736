"""Placeholder for sparse export (``edgekit export --sparse``), not implemented yet.

The plan (issue #5): prune the subnet's 1x1 conv / fully connected weights to a block-sparse
pattern, fine-tune, and convert with the TFLite converter's sparsity encoding so that XNNPACK's
sparse kernels run it; TFLite Micro has no sparse kernels, so a sparse bundle would target
LiteRT on application processors. The exporter calls :func:`sparsify` when ``sparse=True``;
an implementation returns the pruned module (and the converter settings it needs) instead of
raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.export.errors import ExportError

if TYPE_CHECKING:
    from edgekit.spaces import ArchConfig, SearchSpace


def sparsify(space: SearchSpace, cfg: ArchConfig) -> None:
    """Sparse export is not available yet: always raises ExportError."""
    raise ExportError(
        f"sparse export (--sparse) is not implemented yet for {space.name} "
        f"{space.encode(cfg)}; export without --sparse"
    )
