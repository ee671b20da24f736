"""Config-based memory model: equal to the file-based one on the models the exporter makes."""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
import pytest
import torch

from edgekit.errors import ConfigError
from edgekit.estimate import MemoryModelError, _flat_plan, analyze_tflite
from edgekit.estimate._config_graph import reverse_post_order
from edgekit.estimate._config_plan import chain_high_water, plan_piece
from edgekit.estimate.from_config import (
    estimate_config,
    estimate_config_bytes,
    trained_like_weights,
)
from edgekit.estimate.planner import BufferRequest, plan_greedy
from edgekit.estimate.tflite_file import parse_model
from edgekit.profiles import load_profile
from edgekit.spaces import get_space

torch.set_num_threads(1)

# (space, genome, input channels): whole-image and patched tiny-cnn (a residual inside the
# patches; a 3x3 grid; a 4x4 grid whose patches read the whole image, so the converter merges
# their first layers), low-rank and dense projections, one and three channels.
EXPORTED = [
    ("tiny-cnn", "r24-w0.35-rk0.5-p1-k3.35.3.3-e2.22.2.2", 1),
    ("tiny-cnn", "r28-w0.35-rk1-p2s2-k35.3.3.3-e62.2.2.2", 3),
    ("tiny-cnn", "r32-w0.35-rk0.75-p3s1-k3.3.3.3-e2.2.2.2", 1),
    ("tiny-cnn", "r24-w0.35-rk0.75-p4s2-k777.3.3.3-e222.2.2.2", 1),
    # A stride-1 stem and fused blocks (a 3x3 conv instead of expand + depthwise): whole-image,
    # patched over a fused stage with a residual inside the patches, fused after the patches.
    ("tiny-cnn", "r24-st1-w0.35-rk0.5-p1-f1-k33.3.3.3-e23.2.2.2", 3),
    ("tiny-cnn", "r24-st1-w0.35-rk1-p2s2-f2-k33.3.3.3-e32.2.2.2", 1),
    ("tiny-cnn", "r24-w0.35-rk0.75-p3s1-f2-k3.33.5.3-e2.23.2.2", 1),
    # A stride-1 first stage, patched over it: the patches' fused convs run at full resolution.
    ("tiny-cnn", "r24-st1-w0.35-rk1-p2s2-f1-fs1-k3.3.3.3-e3.2.2.2", 1),
    # Buffers the converter merges by content: the first patch's slice begins at zeros, as
    # 4-channel zero biases are (rk0.5, w0.5); a PAD that folds into one patch's conv only
    # (that patch's layer still gets the other patches' int8 range, so one bias buffer).
    ("tiny-cnn", "r24-w0.5-rk0.5-p2s1-k3.3.3.3-e2.2.2.2", 1),
    ("tiny-cnn", "r28-st1-w0.35-rk1-p3s2-f1-k3.5.5.5-e6.2.3.4", 3),
    # The middle patch of a 3x3 grid reads the whole image (no slice of its own): it still
    # runs in its turn, after patch (1, 0), as every patch waits on the one before.
    ("tiny-cnn", "r24-st1-w0.35-rk0.75-p3s2-fs1-k573.5.5.577-e326.3.3.624", 3),
    # tiny-resnet: whole-image with residuals where a stage keeps its width (stem = stage 1,
    # second blocks), and patched over a two-block first stage and a stride-2 block.
    ("tiny-resnet", "r24-c16-w16.24.32-d1.2.1-p1", 3),
    ("tiny-resnet", "r24-c8-w16.16.24-d2.1.1-p3", 1),
    ("tiny-vit", "r16-p8-e32-d1-h2-m2-rk0.25", 1),
    ("tiny-vit", "r24-p4-e48-d2-h4.1-m3.1-rk1.0", 3),
    ("tiny-vit", "r16-p4-e32-d2-h1.2-m1.4-rk0.5", 1),
]


@pytest.fixture(scope="session")
def converted() -> dict[tuple[str, str, int], tuple[object, bytes]]:
    """The converter's int8 model of every EXPORTED config (random weights), by its entry."""
    from edgekit.export import build_tf_graph, convert_int8

    supernets: dict[tuple[str, int], torch.nn.Module] = {}
    models = {}
    for space_name, genome, channels in EXPORTED:
        space = get_space(space_name, num_classes=10, in_channels=channels)
        cfg = space.decode(genome)
        if (space_name, channels) not in supernets:
            supernets[space_name, channels] = trained_like_weights(space.build_supernet())
        module = space.extract(supernets[space_name, channels], cfg).eval()
        images = np.random.default_rng(0).random(
            (4, cfg.resolution, cfg.resolution, channels), np.float32
        )
        model = convert_int8(build_tf_graph(space, module, cfg), images)
        models[space_name, genome, channels] = (cfg, model)
    return models


@pytest.fixture(scope="session")
def exported(converted) -> dict[tuple[str, str, int], tuple[object, bytes]]:
    """The model the exporter ships for every EXPORTED config (compacted), by its entry."""
    from edgekit.export import compact_model

    return {entry: (cfg, compact_model(model)) for entry, (cfg, model) in converted.items()}


@pytest.mark.parametrize("entry", EXPORTED, ids=[f"{s}-{g}-c{c}" for s, g, c in EXPORTED])
@pytest.mark.parametrize("pointer_bytes", [8, 4])
def test_arena_equals_the_file_based_model(exported, entry, pointer_bytes):
    cfg, model = exported[entry]
    from_file = analyze_tflite(model, pointer_bytes=pointer_bytes)
    estimate = estimate_config(cfg, pointer_bytes=pointer_bytes)
    assert (estimate.arena_bytes, estimate.head_bytes, estimate.tail_bytes) == (
        from_file.arena_bytes,
        from_file.head_bytes,
        from_file.tail_bytes,
    )
    assert estimate.peak_op == from_file.peak_op
    assert estimate.limited_by == from_file.limited_by
    fast = estimate_config_bytes(cfg, pointer_bytes)
    assert fast == (estimate.arena_bytes, estimate.flash_bytes)


@pytest.mark.parametrize("entry", EXPORTED, ids=[f"{s}-{g}-c{c}" for s, g, c in EXPORTED])
def test_synthesised_graph_has_the_converted_ops_and_tensors(exported, entry):
    cfg, model = exported[entry]
    graph = parse_model(model).subgraphs[0]
    estimate = estimate_config(cfg)
    assert estimate.op_count == len(graph.operators)
    assert estimate.tensor_count == len(graph.tensors)


PATCHED = [
    (space, genome, channels)
    for space, genome, channels in EXPORTED
    if space != "tiny-vit" and get_space(space).decode(genome).patch_grid > 1
]


@pytest.mark.parametrize("entry", PATCHED, ids=[f"{s}-{g}-c{c}" for s, g, c in PATCHED])
def test_patches_run_one_after_another(converted, entry):
    """Row by row, left to right, each patch's ops after the previous patch's, also where a
    patch reads the whole image (no op of its own ties it to its turn but the exporter's
    control input)."""
    _, model = converted[entry]
    graph = parse_model(model).subgraphs[0]
    patches = []
    for op in graph.operators:
        found = re.match(r"patch(\d+)_(\d+)/", graph.tensors[op.outputs[0]].name)
        if found:
            patches.append((int(found[1]), int(found[2])))
    assert len(set(patches)) > 1
    assert patches == sorted(patches)


@pytest.mark.parametrize("entry", EXPORTED, ids=[f"{s}-{g}-c{c}" for s, g, c in EXPORTED])
def test_flash_estimate_equals_the_file_size(exported, entry):
    cfg, model = exported[entry]
    assert estimate_config(cfg).flash_bytes == len(model)


@pytest.mark.parametrize("entry", EXPORTED, ids=[f"{s}-{g}-c{c}" for s, g, c in EXPORTED])
def test_shipped_model_stores_each_per_channel_vector_once(exported, entry):
    """Zero points (all zero) once per channel count, scales once per content (the biases of
    a patched layer have the same scales in every patch)."""
    from tensorflow.lite.tools import flatbuffer_utils

    _, model = exported[entry]
    unpacked = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    zero_points: dict[int, set[int]] = {}
    scales: dict[bytes, set[int]] = {}
    tensors = parse_model(model).subgraphs[0].tensors
    for tensor, content in zip(tensors, unpacked.subgraphs[0].tensors, strict=True):
        if tensor.zero_point_count > 1:
            zero_points.setdefault(tensor.zero_point_count, set()).add(tensor.zero_point_at)
        if tensor.scale_count > 1:
            scales.setdefault(content.quantization.scale.tobytes(), set()).add(tensor.scale_at)
    assert zero_points and all(len(at) == 1 for at in zero_points.values())
    assert scales and all(len(at) == 1 for at in scales.values())
    flash = analyze_tflite(model).flash
    assert flash.overhead_bytes > 0  # shared vectors counted once in the breakdown


@pytest.mark.parametrize("entry", [EXPORTED[2], EXPORTED[-1]], ids=["patched-cnn", "vit"])
def test_compacting_keeps_what_tflite_micro_computes_and_allocates(converted, exported, entry):
    from tensorflow.lite.tools import flatbuffer_utils
    from tflite_micro.python.tflite_micro import runtime

    from edgekit.estimate import measure_tflm_arena

    cfg, compact = exported[entry]
    unpacked = flatbuffer_utils.convert_bytearray_to_object(bytearray(converted[entry][1]))
    flatbuffer_utils.strip_strings(unpacked)
    names_stripped = bytes(flatbuffer_utils.convert_object_to_bytearray(unpacked))
    assert len(compact) < len(names_stripped)
    image = np.random.default_rng(1).integers(
        -128, 128, (1, cfg.resolution, cfg.resolution, cfg.in_channels), dtype=np.int8
    )
    outputs = []
    for model in (names_stripped, compact):
        interpreter = runtime.Interpreter.from_bytes(model)
        interpreter.set_input(image, 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert measure_tflm_arena(compact) == measure_tflm_arena(names_stripped)


def _random_configs(count: int, seed: int) -> list:
    rng = random.Random(seed)
    configs = []
    while len(configs) < count:
        space = get_space(
            rng.choice(["tiny-cnn", "tiny-vit"]), rng.choice([2, 10]), rng.choice([1, 3])
        )
        cfg = space.sample(rng)
        try:
            estimate_config_bytes(cfg)
        except ConfigError:  # a patch grid larger than the patched output
            continue
        configs.append(cfg)
    return configs


@pytest.mark.parametrize("pointer_bytes", [4, 8])
def test_fast_path_equals_the_full_synthesis(pointer_bytes):
    for cfg in _random_configs(16, seed=pointer_bytes):
        estimate = estimate_config(cfg, pointer_bytes=pointer_bytes)
        assert estimate_config_bytes(cfg, pointer_bytes) == (
            estimate.arena_bytes,
            estimate.flash_bytes,
        ), cfg


def test_device_profile_sets_pointer_size_and_alignment():
    board = load_profile("stm32f746g-disco")
    cfg = get_space("tiny-vit").smallest()
    expected = estimate_config(cfg, pointer_bytes=board.pointer_bytes,
                               alignment=board.alignment_bytes)  # fmt: skip
    on_board = estimate_config(cfg, device=board)
    assert (on_board.arena_bytes, on_board.flash_bytes) == (
        expected.arena_bytes,
        expected.flash_bytes,
    )
    assert estimate_config_bytes(cfg, device=board) == (expected.arena_bytes, expected.flash_bytes)
    assert estimate_config_bytes(cfg, 8)[0] > expected.arena_bytes  # 64-bit structs are bigger
    # An arena alignment the fast path does not model falls back to the full synthesis.
    assert (
        estimate_config_bytes(cfg, alignment=4)[0]
        == estimate_config(cfg, pointer_bytes=4, alignment=4).arena_bytes
    )


def test_bad_requests_raise():
    cfg = get_space("tiny-cnn").smallest()
    with pytest.raises(MemoryModelError, match="pointer_bytes"):
        estimate_config_bytes(cfg, 2)
    with pytest.raises(ConfigError, match="tiny-resnet or tiny-vit"):
        estimate_config(object())  # type: ignore[arg-type]
    too_fine = dataclasses.replace(cfg, patch_grid=7, patch_stages=2, resolution=24)
    with pytest.raises(ConfigError, match="patch_grid"):
        estimate_config_bytes(too_fine)
    with pytest.raises(ConfigError):
        estimate_config(dataclasses.replace(cfg, in_channels=2))


def test_operator_order_is_tensorflows_reverse_post_order():
    # Children are explored largest name first, so the smaller-named branch comes first; a
    # join is placed with the branch that reached it first.
    nodes = {
        "input": (),
        "a/x": ("input",),
        "b/y": ("input",),
        "join": ("a/x", "b/y"),
        "z/const": (),
        "z/late": ("z/const", "join"),
    }
    assert reverse_post_order(nodes) == ["input", "a/x", "b/y", "join", "z/const", "z/late"]


@pytest.mark.parametrize(
    ("seed", "most_ops", "unit"),
    [(0, 6, 16), (1, 6, 16), (2, 6, 16), (3, 6, 16), (4, 40, 16), (5, 40, 16), (6, 40, 1 << 26)],
)
def test_chain_planner_equals_the_greedy_planner(seed, most_ops, unit):
    """Random chains of pieces (few distinct sizes, so ties are common): the per-piece plan
    and the flat plan give TFLM's greedy high-water mark. Pieces of up to 40 ops have
    buffers alive for many ops next to many short-lived ones (as a patched part has);
    buffers of hundreds of MB are ordered by the flat planner's other sort."""
    rng = random.Random(seed)
    for _ in range(150):
        input_size = unit * rng.randint(1, 6)
        requests = [BufferRequest(input_size, 0, 0)]
        scratch, pieces, base = [], [], 0
        for _ in range(rng.randint(1, 5)):
            ops = rng.randint(1, most_ops)
            sizes = [unit * rng.randint(1, 6) for _ in range(ops)]
            lasts = [rng.randint(i + 2, ops) if i + 1 < ops else 0 for i in range(ops)]
            entry_last = rng.randint(1, ops)
            extra = [(unit * rng.randint(1, 3), rng.randint(1, ops))
                     for _ in range(rng.randrange(3))]  # fmt: skip
            pieces.append(plan_piece(ops, entry_last, sizes, lasts, [s for s, _ in extra],
                                     [scope for _, scope in extra]))  # fmt: skip
            previous = requests[-1]
            requests[-1] = BufferRequest(previous.size, previous.first_used, base + entry_last)
            requests += [
                BufferRequest(size, base + i + 1, base + (lasts[i] or i + 1))
                for i, size in enumerate(sizes)
            ]
            scratch += [BufferRequest(s, base + scope, base + scope) for s, scope in extra]
            base += ops
        requests += scratch
        expected = plan_greedy(requests).high_water
        assert chain_high_water(pieces, input_size) == expected
        # Compiled (when numba is installed) and as plain Python.
        assert _flat_plan.flat_high_water(pieces, input_size) == expected
        columns = np.concatenate([piece.columns for piece in pieces], axis=1)
        assert _flat_plan.greedy_high_water(columns, input_size) == expected
