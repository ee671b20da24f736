"""The search's cost models: the analytic latency model and the GBDT accuracy predictor, plus
the footprint adapter's basic ordering."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from edgekit.errors import ProfileError
from edgekit.estimate.latency import COEFFICIENTS, coefficients, estimate_latency_ms, op_costs
from edgekit.profiles import list_profiles, load_profile
from edgekit.search import footprint
from edgekit.search.predictor import MIN_TRAINING_TRIALS, AccuracyPredictor, kendall_tau
from edgekit.spaces import get_space, list_spaces

BOARD = "stm32f746g-disco"


@pytest.mark.parametrize("name", list_spaces())
def test_latency_model_counts_every_mac_of_the_network(name: str) -> None:
    space = get_space(name)
    rng = random.Random(3)
    for cfg in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(20))]:
        # Includes the halo recomputed by tiny-cnn's patches (space.count counts it too).
        assert sum(cost.macs for cost in op_costs(space, cfg)) == space.count(cfg).macs


@pytest.mark.parametrize("name", list_spaces())
def test_latency_grows_with_the_network_and_shrinks_with_the_clock(name: str) -> None:
    space = get_space(name)
    board = load_profile(BOARD)
    small = estimate_latency_ms(space, space.smallest(), board)
    large = estimate_latency_ms(space, space.largest(), board)
    assert 0 < small < large
    faster = dataclasses.replace(board, clock_hz=2 * board.clock_hz)
    assert estimate_latency_ms(space, space.largest(), faster) == pytest.approx(large / 2)


def test_every_bundled_profile_has_a_complete_valid_latency_table() -> None:
    for profile in list_profiles():
        assert set(profile.latency) == set(COEFFICIENTS) - {"macs_per_cycle"}, profile.name
        assert coefficients(profile) == dict(profile.latency)


def test_latency_coefficients_override_the_core_priors() -> None:
    board = dataclasses.replace(load_profile(BOARD), latency={})
    space = get_space("tiny-vit")
    prior = estimate_latency_ms(space, space.largest(), board)
    quicker = dataclasses.replace(board, latency={"macs_per_cycle": 10.0})
    assert coefficients(quicker)["matmul_macs_per_cycle"] == 10.0
    assert estimate_latency_ms(space, space.largest(), quicker) < prior
    no_dsp = dataclasses.replace(board, dsp=False, latency={})
    assert estimate_latency_ms(space, space.largest(), no_dsp) > prior


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"conv_mac_per_cycle": 1.0}, "unknown latency coefficient 'conv_mac_per_cycle'; did you"),
        ({"conv_macs_per_cycle": 0.0}, "conv_macs_per_cycle=0.0: expected a positive number"),
        ({"op_overhead_cycles": -1.0}, "op_overhead_cycles=-1.0"),
    ],
)
def test_bad_latency_coefficients_are_profile_errors(table: dict, message: str) -> None:
    board = dataclasses.replace(load_profile(BOARD), latency=table)
    with pytest.raises(ProfileError, match=message):
        coefficients(board)


@pytest.mark.parametrize("name", list_spaces())
def test_footprint_orders_smallest_below_largest(name: str) -> None:
    space = get_space(name)
    board = load_profile(BOARD)
    small = footprint(space, space.smallest(), board)
    large = footprint(space, space.largest(), board)
    assert small.arena_bytes < large.arena_bytes
    assert small.flash_bytes < large.flash_bytes
    assert small.latency_ms < large.latency_ms


def test_predictor_learns_a_ranking_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(60, 6)).astype(float)
    y = 0.5 + 0.1 * x[:, 0] - 0.05 * x[:, 3] + rng.normal(0, 0.01, 60)
    predictor = AccuracyPredictor(seed=0).fit(x[:40], y[:40])
    predicted = predictor.predict(x[40:])
    tau = kendall_tau(list(predicted), list(y[40:]))
    assert tau is not None and tau > 0.5
    again = AccuracyPredictor(seed=0).fit(x[:40], y[:40]).predict(x[40:])
    assert np.array_equal(predicted, again)


def test_predictor_waits_for_enough_trials() -> None:
    x = [[float(i)] for i in range(MIN_TRAINING_TRIALS - 1)]
    assert not AccuracyPredictor().fit(x, [0.5] * len(x)).ready
    assert kendall_tau([0.1, 0.2], [0.1, 0.2]) is None
