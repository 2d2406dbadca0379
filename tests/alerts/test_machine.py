"""The state machine on its own (pure Python): runs, hysteresis, no_data, resume."""

from __future__ import annotations

import math

from app.alerts.machine import Machine, Rule


def run(rule: Rule, values: list[float | None], **kw) -> tuple[Machine, list[tuple[int, str]]]:
    m = Machine(rule, **kw)
    trs = m.run(enumerate(values))
    return m, [(tr.t, tr.new) for tr in trs]


def test_fires_on_the_nth_breaching_second():
    rule = Rule(">", 5, for_n=3, resolve_n=3)
    _, trs = run(rule, [9, 9, 9])
    assert trs == [(0, "pending"), (2, "firing")]
    _, trs = run(rule, [9, 9, 5, 9, 9, 4, 9, 9])
    assert "firing" not in {s for _, s in trs}


def test_for_one_second_fires_at_once_and_comparators():
    assert run(Rule(">=", 5, 1, 1), [5])[1] == [(0, "firing")]
    assert run(Rule(">", 5, 1, 1), [5])[1] == []
    assert run(Rule("<", 5, 1, 1), [4.9])[1] == [(0, "firing")]
    assert run(Rule("<=", 5, 1, 1), [5, 6])[1] == [(0, "firing"), (1, "resolved")]


def test_resolve_needs_resolve_n_clear_seconds():
    rule = Rule(">", 5, for_n=1, resolve_n=3)
    _, trs = run(rule, [9, 1, 1, 9, 1, 1, 1, 1])
    assert trs == [(0, "firing"), (6, "resolved"), (7, "ok")]


def test_no_data_breaks_runs_and_never_resolves():
    rule = Rule(">", 5, for_n=2, resolve_n=2)
    _, trs = run(rule, [9, None, 9, 9, None, 1, None, 1, 1])
    assert trs == [(0, "pending"), (1, "ok"), (2, "pending"), (3, "firing"), (8, "resolved")]
    m, trs = run(rule, [None, None, 9])
    assert trs == [(1, "no_data"), (2, "pending")]
    m, trs = run(rule, [9, 9, None, None, None])
    assert m.state == "firing"  # firing stays firing while data is missing


def test_non_finite_values_are_no_data():
    rule = Rule("<", 5, for_n=1, resolve_n=1)
    _, trs = run(rule, [math.nan, math.inf, "x", None])
    assert trs == [(0, "no_data")]


def test_resume_from_stored_state():
    rule = Rule(">", 5, for_n=3, resolve_n=2)
    # pending since second 10: replaying from 10 rebuilds the run from the data
    m = Machine.resume(rule, "pending", 10, None)
    assert (m.state, m.cursor) == ("ok", 9)
    assert [tr.new for tr in m.run([(10, 9), (11, 9), (12, 9)])] == ["pending", "firing"]
    # pending since 10, but only second 20 on is readable: the run is assumed to continue
    m = Machine.resume(rule, "pending", 10, 20)
    assert (m.state, m.breach_run, m.cursor) == ("pending", 10, 19)
    assert m.step(20, 9).new == "firing"
    # firing never re-fires after a resume
    m = Machine.resume(rule, "firing", 10, None)
    assert m.cursor == 10 and m.run([(11, 9), (12, 9)]) == []
    assert [tr.new for tr in m.run([(13, 1), (14, 1)])] == ["resolved"]
