"""The re-implemented GreedyMemoryPlanner and AllocationInfoBuilder lifetimes."""

from __future__ import annotations

from edgekit.estimate.planner import BufferRequest, plan_greedy, tensor_lifetimes
from edgekit.estimate.tflite_file import ModelInfo, OperatorInfo, SubgraphInfo, TensorInfo


def _requests(*specs: tuple[int, int, int]) -> list[BufferRequest]:
    return [BufferRequest(size, first, last) for size, first, last in specs]


def _no_overlaps(requests: list[BufferRequest], offsets: tuple[int, ...]) -> bool:
    for i, a in enumerate(requests):
        for j, b in enumerate(requests):
            if i >= j or a.last_used < b.first_used or b.last_used < a.first_used:
                continue
            if offsets[i] < offsets[j] + b.size and offsets[j] < offsets[i] + a.size:
                return False
    return True


# The cases below are TFLM's own greedy_memory_planner_test.cc expectations.
def test_buffers_disjoint_in_time_share_offset_zero() -> None:
    plan = plan_greedy(_requests((10, 0, 1), (20, 2, 3)))
    assert plan.offsets == (0, 0)
    assert plan.high_water == 20


def test_medium_case_matches_tflm_offsets() -> None:
    requests = _requests((10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1))
    plan = plan_greedy(requests)
    assert plan.offsets == (50, 70, 40, 0, 0)
    assert plan.high_water == 90


def test_overlap_case_matches_tflm() -> None:
    assert plan_greedy(_requests((100, 0, 1), (50, 2, 3), (20, 1, 2))).high_water == 120


def test_person_detection_lifetimes_plan_without_overlap() -> None:
    sizes = [9216, 3, 256, 2304, 2304, 2304, 1152] + [4608] * 10
    sizes += [2304, 9216, 9216, 9216, 4608, 18432, 18432, 18432, 9216, 36864, 18432, 18432]
    specs = [(9216, 0, 29)] + [(s, 29 - i, 30 - i) for i, s in enumerate(sizes[1:], start=1)]
    requests = _requests(*specs)
    plan = plan_greedy(requests)
    assert _no_overlaps(requests, plan.offsets)
    assert plan.high_water < sum(sizes)


def test_first_fit_gap_is_reused() -> None:
    # A (big, whole time) at 0; B and C live at different times above it; D fits B's gap.
    requests = _requests((64, 0, 4), (32, 0, 1), (32, 2, 3), (16, 1, 1))
    plan = plan_greedy(requests)
    assert plan.offsets[0] == 0
    assert plan.offsets[1] == plan.offsets[2] == 64  # disjoint in time, same place
    assert plan.offsets[3] == 96  # overlaps B in time: goes above it
    assert plan.high_water == 112


def test_equal_sizes_are_placed_in_reverse_request_order() -> None:
    # TFLM fills online buffers from the back of its sort array, so among equal sizes the
    # last requested is placed first (at offset 0).
    plan = plan_greedy(_requests((16, 0, 2), (16, 1, 3), (16, 2, 4)))
    assert plan.offsets == (32, 16, 0)


def test_offline_offsets_are_kept_and_planned_around() -> None:
    requests = [BufferRequest(32, 0, 2, offline_offset=100), BufferRequest(32, 1, 3)]
    plan = plan_greedy(requests)
    assert plan.offsets == (100, 0)
    assert plan.high_water == 132


def test_empty_plan_is_zero() -> None:
    assert plan_greedy([]).high_water == 0


def _tensor(index: int, nbytes: int = 16, constant: bool = False) -> TensorInfo:
    return TensorInfo(
        index=index,
        name=f"t{index}",
        shape=(nbytes,),
        dtype="int8",
        nbytes=nbytes,
        data_bytes=nbytes if constant else 0,
        buffer=index + 1,
        is_variable=False,
        quant_channels=1,
        scale_count=1,
        zero_point_count=1,
    )


def _model(operators: list[OperatorInfo], tensors: int, inputs=(0,), outputs=()) -> ModelInfo:
    graph = SubgraphInfo(
        tensors=tuple(_tensor(i) for i in range(tensors)),
        operators=tuple(operators),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
    )
    return ModelInfo(file_bytes=0, subgraphs=(graph,), offline_offsets=None, buffer_count=0)


def _op(index: int, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> OperatorInfo:
    return OperatorInfo(index=index, opcode="ADD", inputs=inputs, outputs=outputs)


def test_chain_lifetimes_use_operator_scopes() -> None:
    # t0 -> op0 -> t1 -> op1 -> t2 (graph output)
    model = _model([_op(0, (0,), (1,)), _op(1, (1,), (2,))], 3, outputs=(2,))
    lifetimes, *_ = tensor_lifetimes(model)
    spans = {t: (lifetimes[(0, t)].first_created, lifetimes[(0, t)].last_used) for t in range(3)}
    assert spans == {0: (0, 1), 1: (1, 2), 2: (2, 2)}


def test_output_lifetime_restarts_at_the_operator_that_writes_it() -> None:
    # t1 is written by op0, read by op1, then written again by op2 (in-place style) and read
    # by op3: TFLM restarts its lifetime at op2, so it is NOT alive over [1, 4] from op0.
    ops = [_op(0, (0,), (1,)), _op(1, (1,), (2,)), _op(2, (2,), (1,)), _op(3, (1,), (3,))]
    lifetimes, *_ = tensor_lifetimes(_model(ops, 4, outputs=(3,)))
    assert (lifetimes[(0, 1)].first_created, lifetimes[(0, 1)].last_used) == (3, 4)


def test_graph_outputs_live_to_the_end_and_inputs_from_scope_zero() -> None:
    # t1 is a graph output produced by op0 and not read afterwards: alive until the last op.
    ops = [_op(0, (0,), (1,)), _op(1, (0,), (2,)), _op(2, (2,), (3,))]
    lifetimes, *_ = tensor_lifetimes(_model(ops, 4, outputs=(1, 3)))
    assert (lifetimes[(0, 0)].first_created, lifetimes[(0, 0)].last_used) == (0, 2)
    assert (lifetimes[(0, 1)].first_created, lifetimes[(0, 1)].last_used) == (1, 3)


def test_scratch_buffers_live_only_during_their_operator() -> None:
    ops = [_op(0, (0,), (1,)), _op(1, (1,), (2,))]
    _, scratch, _ = tensor_lifetimes(_model(ops, 3, outputs=(2,)), [(0, 1), (0, 0)])
    assert scratch == [(2, 2), (1, 1)]


def test_tensors_never_used_have_no_lifetime() -> None:
    lifetimes, *_ = tensor_lifetimes(_model([_op(0, (0,), (1,))], 3, outputs=(1,)))
    assert (lifetimes[(0, 2)].first_created, lifetimes[(0, 2)].last_used) == (-1, -1)


def test_omitted_optional_inputs_are_ignored() -> None:
    model = _model([_op(0, (0, -1), (1,))], 2, outputs=(1,))
    lifetimes, *_ = tensor_lifetimes(model)
    assert lifetimes[(0, 0)].last_used == 1


def test_control_flow_operators_open_scopes_for_called_subgraphs() -> None:
    called = SubgraphInfo(
        tensors=(_tensor(0), _tensor(1)),
        operators=(_op(0, (0,), (1,)),),
        inputs=(0,),
        outputs=(1,),
    )
    main = SubgraphInfo(
        tensors=(_tensor(0), _tensor(1)),
        operators=(
            OperatorInfo(0, "CALL_ONCE", (), (), options={"subgraphs": (1,)}),
            _op(1, (0,), (1,)),
        ),
        inputs=(0,),
        outputs=(1,),
    )
    model = ModelInfo(file_bytes=0, subgraphs=(main, called), offline_offsets=None, buffer_count=0)
    lifetimes, _, scopes = tensor_lifetimes(model)
    assert scopes == {(0, 0): 1, (1, 0): 3, (0, 1): 4}
    assert (lifetimes[(1, 1)].first_created, lifetimes[(1, 1)].last_used) == (3, 3)
