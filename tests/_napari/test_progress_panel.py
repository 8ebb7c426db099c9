"""Time left from the pace measured in the run (hand-computed cases, no constants)."""

from __future__ import annotations

import pytest

from napari_unet._napari.progress_panel import TimeLeft


def test_the_pace_counts_from_the_second_report_not_from_the_start():
    left = TimeLeft([2.0])  # 2 s expected after the last report (saving)
    assert left.update(5, 105, now=10.0) is None  # the start-up's end: no pace yet
    assert left.update(6, 105, now=12.0) is None  # warm-up still: 2 s for one unit
    assert left.update(8, 105, now=12.4) is None  # 0.4 s after it is too short to tell
    # 20 units in 2 s since the second report: 79 units left take 7.9 s, then 2 s
    assert left.update(26, 105, now=14.0) == pytest.approx(7.9 + 2.0)
    assert left.seconds_after(0, end=25.0) == 11.0  # measured for the next run


def test_stages_add_what_the_later_ones_took_last_time():
    left = TimeLeft([5.0, 1.0])  # learning, then 5 s (re-predicting and the check)
    assert left.update(0, 200, now=0.0) is None
    assert left.update(10, 200, now=1.0) is None
    # learning: 30 of its 100 units in 3 s -> 60 more in 6 s, then the 5 s that follow
    assert left.update(40, 200, now=4.0) == 6.0 + 5.0
    assert left.update(99, 200, now=30.0) is not None
    # re-predicting, its pace not known yet: the 5 s expected, less the 1 s it has run
    assert left.update(110, 200, now=31.0) == 4.0
    assert left.update(130, 200, now=32.0) == 3.0
    # its own pace now: 40 units in 2 s -> 30 units take 1.5 s, then the 1 s check
    assert left.update(170, 200, now=34.0) == 1.5 + 1.0
    assert left.seconds_after(0, end=36.0) == 6.0 and left.seconds_after(1, end=36.0) == 2.0


def test_a_first_run_expects_its_end_to_take_what_its_start_took():
    # nothing measured after the last slice yet: the 1.5 s from the start (reading,
    # preparing) to the first report stand in for assembling and showing the result
    left = TimeLeft([None], began=8.5)
    assert left.update(5, 105, now=10.0) is None
    assert left.update(6, 105, now=12.0) is None
    assert left.update(26, 105, now=14.0) == pytest.approx(7.9 + 1.5)


def test_an_unknown_remainder_gives_no_guess():
    left = TimeLeft([None])
    for t, done in ((0.0, 1), (2.0, 3), (4.0, 5)):
        assert left.update(done, 10, now=t) is None


def test_a_time_budget_caps_the_measured_pace():
    # fine-tuning: iterations on the first half of a bar of 200 steps, at most 30 s
    left = TimeLeft([8.0, 0.0], budgets=[30.0, None])
    assert left.update(0, 200, now=0.0) is None
    assert left.update(10, 200, now=1.0) is None
    # 30 units in 3 s -> the 60 left of the stage take 6 s (the budget would allow 26)
    assert left.update(40, 200, now=4.0) == 6.0 + 8.0
    slow = TimeLeft([8.0, 0.0], budgets=[30.0, None])
    for t, done in ((0.0, 0), (10.0, 10)):
        slow.update(done, 200, now=t)
    # 1 unit a second would take 80 s more; the budget ends the stage 10 s from now
    assert slow.update(20, 200, now=20.0) == 10.0 + 8.0


def test_a_stage_its_iterations_ended_is_measured_from_its_last_report():
    left = TimeLeft([8.0, 0.0], budgets=[30.0, None])
    for t, done in ((0.0, 0), (1.0, 10), (5.0, 90), (6.0, 100), (7.0, 120)):
        left.update(done, 200, now=t)
    assert left.seconds_after(0, end=15.0) == 10.0  # not from the budget's end at 30 s


def test_a_budget_in_seconds_counts_down_and_what_follows_it_is_measured_from_its_end():
    training = TimeLeft([3.0], budgets=[20.0])  # progress in seconds of a 20 s budget
    assert training.update(0, 20, now=7.0) is None
    assert training.update(1, 20, now=8.0) is None
    # 3 units in 3 s -> 16 left take 16 s (the budget: 20 - 4 s), then 3 s
    assert training.update(4, 20, now=11.0) == 16.0 + 3.0
    training.update(12, 20, now=19.5)  # then a validation: no report until the end
    # the budget ran out at 7 + 20 = 27 s: what follows it is measured from there
    assert training.seconds_after(0, end=36.0) == 9.0


def test_a_stage_over_before_it_reported_ends_at_the_next_report():
    left = TimeLeft([5.0, 0.0], budgets=[2.0, None])  # a short budget, a slow start
    left.update(120, 200, now=9.0)  # the first report is already re-predicting
    assert left.seconds_after(0, end=15.0) == 6.0
