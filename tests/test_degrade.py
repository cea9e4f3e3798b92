"""DegradePolicy as a pure state machine: injected costs in, level changes out."""

from __future__ import annotations

import pytest

from rfstream.config import RuntimeConfig
from rfstream.runtime.policy import DegradePolicy

PERIOD = 0.2  # s per chunk


def _feed(policy: DegradePolicy, load: float, n: int, *, late: bool = False) -> list[int]:
    """Feed ``n`` chunks costing ``load`` × the period; return the level changes."""
    changes = []
    for _ in range(n):
        level = policy.observe(load * PERIOD, PERIOD, late=late)
        if level is not None:
            changes.append(level)
    return changes


def _policy(**kw) -> DegradePolicy:
    args = dict(levels=(0, 1, 2, 3), high=0.8, low=0.5, up_after=3, down_after=6)
    args.update(kw)
    return DegradePolicy(**args)


def test_light_load_never_degrades():
    p = _policy()
    assert _feed(p, 0.3, 200) == []
    assert p.level == 0


def test_persistent_overload_steps_up_one_level_at_a_time_and_stops_at_three():
    p = _policy()
    assert _feed(p, 1.5, 2) == []  # two overloaded chunks are not yet persistent
    assert _feed(p, 1.5, 1) == [1]
    assert _feed(p, 1.5, 3) == [2]
    # level 3 halves the duty: 2.0 × period still reads as 1.0 -> overloaded, but there is no level 4
    assert _feed(p, 2.0, 3) == [3]
    assert _feed(p, 2.0, 50) == []
    assert p.level == 3


def test_a_short_spike_does_not_degrade():
    p = _policy()
    changes = _feed(p, 0.3, 10) + _feed(p, 3.0, 1) + _feed(p, 0.3, 20)
    assert changes == [] and p.level == 0


def test_recovery_steps_down_one_level_per_calm_spell():
    p = _policy()
    _feed(p, 1.5, 9)
    assert p.level == 3
    assert _feed(p, 0.2, 5) == []  # calm, but not for long enough yet
    assert _feed(p, 0.2, 1) == [2]
    assert _feed(p, 0.2, 6) == [1]
    assert _feed(p, 0.2, 6) == [0]
    assert _feed(p, 0.2, 50) == []


def test_load_between_the_thresholds_holds_the_level():
    p = _policy()
    _feed(p, 1.5, 3)
    assert p.level == 1
    assert _feed(p, 0.65, 100) == []  # neither overloaded nor calm: hysteresis
    assert p.level == 1


def test_late_chunks_count_as_overload_even_when_the_mean_looks_fine():
    p = _policy(late_limit=3, late_window=10)
    # the third late chunk in the window starts the overload streak; up_after=3 of them step up
    assert _feed(p, 0.4, 4, late=True) == []
    assert _feed(p, 0.4, 1, late=True) == [1]


def test_policy_steps_only_through_levels_that_do_something():
    p = _policy(levels=(3,))  # one detector priority, no spectrogram: only shedding helps
    assert _feed(p, 1.5, 3) == [3]
    assert _feed(p, 0.2, 6) == [0]


def test_a_step_down_that_is_undone_at_once_doubles_the_calm_needed():
    p = _policy(levels=(1,), up_after=2, down_after=4)
    assert _feed(p, 1.2, 2) == [1]
    assert _feed(p, 0.1, 4) == [0]  # at level 1 the slow detector is off: calm
    assert _feed(p, 1.2, 2) == [1]  # back on: overloaded again, the step down did not hold
    assert p.down_after == 8
    assert _feed(p, 0.1, 7) == []
    assert _feed(p, 0.1, 1) == [0]
    assert _feed(p, 1.2, 2) == [1]
    assert p.down_after == 16
    for _ in range(5):  # flapping forever is capped at 8× the configured calm
        _feed(p, 0.1, p.down_after)
        _feed(p, 1.2, 2)
    assert p.down_after == 32


def test_a_step_down_that_holds_back_to_normal_resets_the_calm_needed():
    p = _policy(levels=(1,), up_after=2, down_after=4)
    _feed(p, 1.2, 2)
    _feed(p, 0.1, 4)
    _feed(p, 1.2, 2)
    assert p.down_after == 8
    _feed(p, 0.1, 8)
    assert p.level == 0 and p.down_after == 8  # not yet: level 0 must hold first
    _feed(p, 0.1, 8)
    assert p.level == 0 and p.down_after == 4


@pytest.mark.parametrize("cost", [0.0, 0.79])
def test_each_level_is_judged_on_its_own_costs(cost):
    p = _policy()
    _feed(p, 5.0, 3)
    assert p.level == 1
    # the mean restarts at a change: one cheap chunk is enough to read the new level's cost
    p.observe(cost * PERIOD, PERIOD)
    assert p.load == pytest.approx(cost)


def test_from_config_takes_the_runtime_keys():
    rt = RuntimeConfig(
        degrade_load_high=0.9, degrade_load_low=0.3, degrade_up_chunks=2, degrade_down_chunks=7
    )
    p = DegradePolicy.from_config(rt, (1, 3))
    assert (p.high, p.low, p.up_after, p.down_after, p.levels) == (0.9, 0.3, 2, 7, (0, 1, 3))


@pytest.mark.parametrize(
    ("at", "levels", "after"),
    [
        (1, (3,), 0),  # level 1 gone (one detector priority now): back to normal
        (2, (1, 3), 1),  # level 2 gone (no spectrogram sink): the highest level below it
        (3, (1,), 1),  # level 3 always exists in a pipeline, but the policy does not rely on it
        (1, (1, 2, 3), 1),  # still there: unchanged
        (0, (3,), 0),
    ],
)
def test_new_levels_remap_the_level_in_force_and_observe_goes_on(at, levels, after):
    """A reload at level 1 that left one detector priority crashed observe() (tuple.index)."""
    p = _policy(levels=(1, 2, 3))
    _feed(p, 1.5, 3 * at)
    assert p.level == at
    assert p.set_levels(levels) == after
    assert p.level == after and p.levels == tuple(sorted({0, *levels}))
    _feed(p, 1.5, 30)  # overload, then calm: every step still works
    assert p.level == max(p.levels)
    _feed(p, 0.2, 400)
    assert p.level == 0


def test_every_level_survives_every_level_table():
    tables = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    for before in tables:
        for after in tables:
            p = _policy(levels=before)
            _feed(p, 1.5, 20)
            p.set_levels(after)
            assert p.level in p.levels
            _feed(p, 1.5, 20)
            _feed(p, 0.2, 400)
            assert p.level == 0
