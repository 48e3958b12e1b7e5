"""Interleaved inference timing of several predictors on the same items (seed 001's timing table)."""

import time

import pytest

from tfmedseg.inference.detection import interleaved_seconds_per_item


def test_interleaved_timing_warms_up_then_alternates_rounds():
    calls = []

    def make(name, seconds):
        def fn(item):
            calls.append((name, item))
            time.sleep(seconds)
        return fn

    timed = interleaved_seconds_per_item({"fast": make("fast", 0.001), "slow": make("slow", 0.006)}, [1, 2], repeats=3)
    # warm-up: each predictor once per item, then rounds alternate predictor by predictor
    assert calls[:4] == [("fast", 1), ("fast", 2), ("slow", 1), ("slow", 2)]
    assert [n for n, _ in calls[4::2]] == ["fast", "slow"] * 3 and len(calls) == 4 + 3 * 4
    assert len(timed["fast"]["rounds"]) == 3 and timed["fast"]["min"] <= timed["fast"]["median"]
    assert timed["slow"]["median"] >= 0.006 and timed["slow"]["median"] > timed["fast"]["median"]
    assert timed["fast"]["median"] == pytest.approx(sorted(timed["fast"]["rounds"])[1])
