"""Choosing a version's batch size from timed calls (batchsize.py), on a simulated clock."""

from __future__ import annotations

import pytest

from imgclf.server.batchsize import candidate_sizes, choose_limit, measure_rates


class SimulatedModel:
    """Calls that take `seconds_per_image[n] * n` on a clock only they advance."""

    def __init__(self, seconds_per_image: dict[int, float]) -> None:
        self.seconds_per_image = seconds_per_image
        self.now = 0.0
        self.sizes_run: list[int] = []

    def run(self, n: int) -> None:
        self.sizes_run.append(n)
        self.now += self.seconds_per_image[n] * n

    def clock(self) -> float:
        return self.now


def test_candidate_sizes_double_up_to_the_largest_batch():
    assert candidate_sizes(1) == [1]
    assert candidate_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert candidate_sizes(24) == [1, 2, 4, 8, 16, 24]


def test_the_cap_is_the_knee_of_the_curve_and_the_costly_sizes_past_it_are_skipped():
    # Like ResNet-50 at 224 px on 2 cores: fastest per image at batch 8, slower past it.
    model = SimulatedModel({1: 0.14, 2: 0.10, 4: 0.083, 8: 0.073, 16: 0.094, 32: 0.11})
    rates = measure_rates(model.run, 32, clock=model.clock)
    assert choose_limit(rates) == 8
    assert sorted(rates) == [1, 2, 4, 8, 16]  # 16 ran at 0.78 of batch 8: 32 never ran
    assert 32 not in model.sizes_run
    assert rates[8] == pytest.approx(1 / 0.073)


def test_the_largest_batch_stays_unless_it_is_clearly_slower():
    rising = SimulatedModel({1: 0.03, 2: 0.02, 4: 0.012, 8: 0.009, 16: 0.007, 32: 0.006})
    assert choose_limit(measure_rates(rising.run, 32, clock=rising.clock)) == 32
    # 32 a little slower than 16 (as measured for 64 px): within what timings can tell.
    assert choose_limit({1: 60, 2: 94, 4: 131, 8: 155, 16: 189, 32: 183}) == 32
    # 32 at 0.88 of the best: the smallest size within 5% of the best (8) is the cap.
    assert choose_limit({1: 50, 4: 90, 8: 98, 16: 100, 32: 88}) == 8


def test_every_size_runs_once_untimed_then_at_least_twice_timed():
    model = SimulatedModel({1: 1.0, 2: 0.6})
    measure_rates(model.run, 2, clock=model.clock)
    assert model.sizes_run.count(1) >= 3 and model.sizes_run.count(2) >= 3
