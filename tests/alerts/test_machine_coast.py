"""The steady-state skip's machine side: `steady_until` and `coast` give, over random series of
repeated values, the same transitions and the same machine (state, runs, position) as stepping
every second — for threshold and band rules and for grouped machines. The evaluator's use of
them is compared with stepping in tests/alerts/test_evaluator_fast_path.py."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.alerts.grouped import GroupedMachines
from app.alerts.machine import DIRECTIONS, Machine, Rule
from tests.alerts.test_machine_antiflap import rules, values_st

BAND = (2.0, 8.0, 3.0, 7.0)  # lower, upper, recovery lower, recovery upper
FIELDS = ("state", "since", "cursor", "breach_run", "clear_run", "nodata_run", "keep_run")


def _fields(m: Machine) -> tuple[Any, ...]:
    return tuple(getattr(m, f) for f in FIELDS) + (m.keeping, m.value)


def _skipping(make: Any, points: list[Any], step: Any, until_of: Any, coast: Any) -> Any:
    """Step `points` as the evaluator does: a second with the value of the last second
    stepped skips while before `until_of()`, and the skipped seconds are coasted over before
    the next real step. (transitions, machine, seconds skipped)."""
    m = make()
    out: list[Any] = []
    last: Any = object()
    until, coasted, skipped = None, None, 0
    for t, value in enumerate(points):
        if value == last:
            if until is None:
                until = until_of(m)
            if t < until:
                coasted, skipped = t, skipped + 1
                continue
        if coasted is not None:
            coast(m, coasted, last)
            coasted = None
        out.append(step(m, t, value))
        last, until = value, None
    if coasted is not None:
        coast(m, coasted, last)
    return out, m, skipped


@st.composite
def band_rules(draw) -> Rule:
    return Rule(
        "band",
        0.0,
        for_n=draw(st.integers(1, 5)),
        resolve_n=draw(st.integers(1, 5)),
        keep_n=draw(st.integers(0, 6)),
        direction=draw(st.sampled_from(DIRECTIONS)),
    )


@settings(max_examples=1500, deadline=None)
@given(rule=st.one_of(rules(), band_rules()), values=values_st, banded=st.booleans())
@example(rule=Rule(">", 5, 3, 2, keep_n=4), values=[9] * 8 + [1] * 12, banded=False)
@example(rule=Rule(">", 5, 2, 2, recovery=3), values=[9] * 4 + [4] * 6 + [2] * 6, banded=False)
@example(rule=Rule(">", 5, 3, 1), values=[None] * 6 + [9] * 2 + [None] * 6, banded=False)
def test_coasting_gives_the_same_machine_as_stepping(rule, values, banded):
    band = BAND if banded else None  # a band rule without a band: every second is no data
    reference = Machine(rule)
    expected = [reference.step(t, v, band) for t, v in enumerate(values)]
    got, m, _ = _skipping(
        lambda: Machine(rule),
        values,
        lambda m, t, v: m.step(t, v, band),
        lambda m: m.steady_until(),
        lambda m, t, _: m.coast(t),
    )
    assert [tr for tr in got if tr] == [tr for tr in expected if tr]
    assert _fields(m) == _fields(reference)


def test_coasting_skips_the_seconds_that_change_only_a_counter():
    """A pending run, a firing alert between its thresholds, keep-firing and a gap skip all
    but the seconds where something other than a run counter changes."""
    rule = Rule(">", 5, for_n=4, resolve_n=2, recovery=3, keep_n=3)
    values = [1] * 5 + [9] * 10 + [4] * 5 + [2] * 8 + [None] * 4
    got, m, skipped = _skipping(
        lambda: Machine(rule),
        values,
        lambda m, t, v: m.step(t, v),
        lambda m: m.steady_until(),
        lambda m, t, _: m.coast(t),
    )
    # stepped: 0, 5 (pending), 8 (firing), 15 (between the thresholds: held), 20 (recovered),
    # 21 (keep-firing starts), 24 (resolved), 25 (ok), 28 (a gap), 31 (no_data)
    assert len(values) - skipped == 10
    assert [(tr.t, tr.new) for tr in got if tr] == [
        (5, "pending"),
        (8, "firing"),
        (24, "resolved"),
        (25, "ok"),
        (31, "no_data"),
    ]
    assert (m.state, m.nodata_run, m.cursor) == ("no_data", 4, 31)


groups_st = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {},
            optional={g: st.sampled_from([None, 0, 2, 5, 9]) for g in ("a", "b", "c")},
        ),
        st.integers(1, 12),
    ),
    min_size=1,
    max_size=12,
).map(lambda streaks: [v for v, n in streaks for _ in range(n)][:120])


@settings(max_examples=600, deadline=None)
@given(
    rule=rules(),
    points=groups_st,
    max_groups=st.integers(1, 3),
    pure_count=st.booleans(),
)
def test_grouped_coasting_gives_the_same_machines_as_stepping(rule, points, max_groups, pure_count):
    reference = GroupedMachines(rule, max_groups, pure_count)
    expected = [reference.step(t, v) for t, v in enumerate(points)]
    got, grouped, _ = _skipping(
        lambda: GroupedMachines(rule, max_groups, pure_count),
        points,
        lambda g, t, v: g.step(t, v),
        lambda g: g.steady_until(points[g.cursor]),
        lambda g, t, v: g.coast(t, v),
    )
    assert [x for x in got if x] == [x for x in expected if x]
    assert grouped.cursor == reference.cursor
    assert grouped.last_seen == reference.last_seen
    assert grouped.refused == reference.refused
    assert {g: _fields(m) for g, m in grouped.machines.items()} == {
        g: _fields(m) for g, m in reference.machines.items()
    }
