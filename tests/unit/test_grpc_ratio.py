"""bench.grpc_ratio's summary over rounds: each round's ratio first, then their median."""

from __future__ import annotations

import pytest

from bench.grpc_ratio import median_ratios


def test_the_median_is_taken_of_each_rounds_own_ratio():
    rounds = [
        {"unary echo": 4000.0, "unary AllocateOrder": 2000.0},  # 0.50
        {"unary echo": 1000.0, "unary AllocateOrder": 900.0},  # 0.90
        {"unary echo": 3000.0, "unary AllocateOrder": 2100.0},  # 0.70
    ]
    # (the ratio of the median rates would be 2000 / 3000 = 0.67)
    assert median_ratios(rounds) == {"unary": pytest.approx(0.70)}


def test_kinds_not_measured_are_left_out_and_an_even_count_averages_the_middle_two():
    rounds = [
        {"stream echo": 10.0, "stream AllocateStream": 5.0,
         "batch echo (items)": 100.0, "batch AllocateOrders (orders)": 4.0},
        {"stream echo": 10.0, "stream AllocateStream": 6.0,
         "batch echo (items)": 100.0, "batch AllocateOrders (orders)": 6.0},
    ]
    assert median_ratios(rounds) == {"stream": pytest.approx(0.55),
                                     "batch": pytest.approx(0.05)}
