"""TFLite Micro's non-persistent ("head") memory plan, re-implemented.

Two parts, each mirroring one TFLM source file:

* :func:`tensor_lifetimes` follows ``AllocationInfoBuilder`` (micro_allocation_info.cc): time
  is an allocation-scope counter, 0 for subgraph inputs and outputs and ``i + 1`` for operator
  ``i``. An operator output's lifetime *restarts* at every operator that writes it
  (``UpdateFirstCreated`` sets first and last use), inputs extend the last use, subgraph
  outputs live to the end, and scratch buffers live exactly during their operator. Control
  flow operators (IF, WHILE, CALL_ONCE) open new scopes for the subgraphs they call.
* :func:`plan_greedy` follows ``GreedyMemoryPlanner`` (greedy_memory_planner.cc): buffers
  sorted by size, largest first, each placed in the first gap between simultaneously live
  buffers that fits. Ties keep TFLM's order exactly: online buffers are collected from the
  back and then bubble-sorted stably, so equal sizes come out in reverse request order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgekit.estimate.tflite_file import ModelInfo

ONLINE = -1  # kOnlinePlannedBuffer: offset chosen by the planner, not by offline metadata
_CONTROL_FLOW_SUBGRAPHS = {"IF", "WHILE", "CALL_ONCE"}


@dataclass(frozen=True)
class BufferRequest:
    """One buffer for the planner: aligned size and the scope range it must stay intact."""

    size: int
    first_used: int
    last_used: int
    offline_offset: int = ONLINE
    label: str = ""


@dataclass(frozen=True)
class Plan:
    offsets: tuple[int, ...]  # one per request, in request order
    high_water: int  # GetMaximumMemorySize: the head size

    def live_at(self, requests: Sequence[BufferRequest], time: int) -> list[int]:
        """Indices of requests alive at allocation scope ``time``."""
        return [i for i, r in enumerate(requests) if r.first_used <= time <= r.last_used]


def _overlaps(a: BufferRequest, first: int, last: int) -> bool:
    return not (a.first_used > last or first > a.last_used)


def plan_greedy(requests: Sequence[BufferRequest]) -> Plan:
    """Place ``requests`` exactly as TFLM's GreedyMemoryPlanner does."""
    count = len(requests)
    if count == 0:
        return Plan((), 0)
    offsets = [ONLINE] * count
    # Offline-planned buffers go first in request order; online ones are filled in from the
    # tail of the array, i.e. reversed, before the stable descending sort.
    offline = [i for i, r in enumerate(requests) if r.offline_offset != ONLINE]
    online = [i for i, r in enumerate(requests) if r.offline_offset == ONLINE][::-1]
    online.sort(key=lambda i: -requests[i].size)  # stable, like ReverseSortInPlace
    order = offline + online
    for i in offline:
        offsets[i] = requests[i].offline_offset

    placed: list[int] = []  # request indices sorted by offset (stable insertion)
    for position, index in enumerate(order):
        wanted = requests[index]
        if position == 0:
            if wanted.offline_offset == ONLINE:
                offsets[index] = 0
            placed.append(index)
            continue
        if wanted.offline_offset != ONLINE:
            candidate = wanted.offline_offset
        else:
            candidate = 0
            for other in placed:  # walk buffers in offset order, looking for a gap
                if not _overlaps(requests[other], wanted.first_used, wanted.last_used):
                    continue
                if offsets[other] - candidate >= wanted.size:
                    break
                candidate = max(candidate, offsets[other] + requests[other].size)
        offsets[index] = candidate
        # TFLM inserts after every entry whose offset is <= the new one (or at the head when
        # the new offset is smaller than the first entry's).
        insert_at = len(placed)
        if offsets[placed[0]] > candidate:
            insert_at = 0
        else:
            for k in range(1, len(placed)):
                if offsets[placed[k]] > candidate:
                    insert_at = k
                    break
        placed.insert(insert_at, index)
    high_water = max(offsets[i] + requests[i].size for i in placed)
    return Plan(tuple(offsets), high_water)


@dataclass(frozen=True)
class Lifetime:
    """Allocation scopes during which one tensor of one subgraph must be kept."""

    subgraph: int
    tensor: int
    first_created: int
    last_used: int


def tensor_lifetimes(
    model: ModelInfo, scratch_nodes: Sequence[tuple[int, int]] = ()
) -> tuple[dict[tuple[int, int], Lifetime], list[tuple[int, int]], dict[tuple[int, int], int]]:
    """Lifetimes of every tensor, keyed by (subgraph, tensor index), plus scratch lifetimes.

    ``scratch_nodes`` lists (subgraph, operator) for each scratch-buffer request, in request
    order; the second result gives (first, last) scope for each of them, the third the scope
    of every reached (subgraph, operator).
    """
    first: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}
    scratch_scopes: list[tuple[int, int] | None] = [None] * len(scratch_nodes)
    op_scopes: dict[tuple[int, int], int] = {}
    scope = 0

    def created(key: tuple[int, int], at: int) -> None:
        first[key] = at
        last[key] = at

    def mark(subgraph_index: int) -> None:
        nonlocal scope
        graph = model.subgraphs[subgraph_index]
        for t in (*graph.inputs, *graph.outputs):
            created((subgraph_index, t), scope)
        for op in graph.operators:
            scope += 1
            for t in op.outputs:
                created((subgraph_index, t), scope)
            op_scope = scope
            op_scopes[(subgraph_index, op.index)] = op_scope
            if op.opcode in _CONTROL_FLOW_SUBGRAPHS:
                for called in op.options.get("subgraphs", ()):
                    scope += 1
                    mark(called)
            for t in op.inputs:
                if t >= 0:
                    last[(subgraph_index, t)] = scope
            for t in op.outputs:
                last[(subgraph_index, t)] = scope
            for k, (s, o) in enumerate(scratch_nodes):
                if s == subgraph_index and o == op.index:
                    scratch_scopes[k] = (op_scope, scope)
        for t in graph.outputs:
            last[(subgraph_index, t)] = scope

    mark(0)
    lifetimes = {}
    for s, graph in enumerate(model.subgraphs):
        for t in range(len(graph.tensors)):
            key = (s, t)
            lifetimes[key] = Lifetime(s, t, first.get(key, -1), last.get(key, -1))
    scratch = [scopes if scopes is not None else (-1, -1) for scopes in scratch_scopes]
    return lifetimes, scratch, op_scopes
