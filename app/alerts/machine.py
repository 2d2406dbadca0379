"""The per-alert state machine (`ok → pending → firing → resolved`, plus `no_data`), one second
at a time. One implementation is shared by the live evaluator, the `/test` endpoint and the
backtest, so all three agree by construction. The transitions, the no-data rule and the
hysteresis are in docs/alerts.md, sections "no_data" and "The state machine"."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
STATES = ("ok", "pending", "firing", "resolved", "no_data")
LOUD = frozenset({"firing", "resolved"})


def clean(value: object) -> float | None:
    """A metric value as the machine sees it: a finite float, or None (no data)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class Rule:
    """What the machine needs of an alert definition (counts are in evaluation steps:
    seconds live, minutes in a coarse backtest)."""

    comparator: str
    threshold: float
    for_n: int
    resolve_n: int

    def breaches(self, value: float) -> bool:
        return COMPARATORS[self.comparator](value, self.threshold)


@dataclass(frozen=True, slots=True)
class Transition:
    t: int  # the second (bucket start) whose evaluation caused it
    old: str
    new: str
    value: float | None
    run: int  # the breach run (firing) or clear run (resolved) that caused it

    @property
    def loud(self) -> bool:
        return self.new in LOUD


@dataclass(frozen=True, slots=True)
class Step:
    """One evaluated second, for `/test` and the backtest's detail."""

    t: int
    value: float | None
    breaching: bool | None  # None = no data
    breach_run: int
    clear_run: int
    state: str


@dataclass(slots=True)
class Machine:
    rule: Rule
    state: str = "ok"
    since: int | None = None  # the second the current state was entered
    cursor: int | None = None  # the last second evaluated
    breach_run: int = 0
    clear_run: int = 0
    nodata_run: int = 0
    value: float | None = None  # the last evaluated value
    history: list[Step] | None = field(default=None, repr=False)

    @classmethod
    def resume(cls, rule: Rule, state: str, since: int | None, start: int | None) -> Machine:
        """A machine continuing from a stored `state` entered at second `since`, positioned so
        that the next second to evaluate is `start` (the replay start).

        `pending` replays from the first breaching second (`since`), so its run is rebuilt
        from the data; when that second is older than what can be read (`start > since`),
        the run is assumed to have continued up to `start`. Other states restart their runs
        at `since + 1` (the second after the one that caused them)."""
        state = state if state in STATES else "ok"
        m = cls(rule, state=state, since=since)
        if since is None:
            m.cursor = None if start is None else start - 1
            return m
        if state == "pending":
            if start is None or start <= since:
                m.state, m.cursor = "ok", since - 1
            else:
                m.breach_run, m.cursor = start - since, start - 1
            return m
        if state == "no_data":
            m.nodata_run = rule.for_n
        m.cursor = since if start is None else max(since, start - 1)
        return m

    def step(self, t: int, value: object) -> Transition | None:
        """Evaluate second `t` (must follow `cursor`); the transition it causes, if any."""
        v = clean(value)
        self.cursor = t
        self.value = v
        old = self.state
        new = old
        run = 0
        if v is None:
            self.breach_run = self.clear_run = 0
            self.nodata_run += 1
            if old == "pending":
                new = "ok"
            if new in ("ok", "resolved") and self.nodata_run >= self.rule.for_n:
                new = "no_data"
            breaching = None
        elif self.rule.breaches(v):
            self.nodata_run = self.clear_run = 0
            self.breach_run += 1
            if old != "firing":
                new = "firing" if self.breach_run >= self.rule.for_n else "pending"
                run = self.breach_run
            breaching = True
        else:
            self.nodata_run = self.breach_run = 0
            self.clear_run += 1
            if old == "firing":
                if self.clear_run >= self.rule.resolve_n:
                    new, run = "resolved", self.clear_run
            elif old != "ok":
                new = "ok"
            breaching = False
        if self.history is not None:
            self.history.append(Step(t, v, breaching, self.breach_run, self.clear_run, new))
        if new == old:
            return None
        self.state, self.since = new, t
        if new == "firing":
            self.clear_run = 0
        return Transition(t, old, new, v, run)

    def run(self, points: Iterable[tuple[int, object]]) -> list[Transition]:
        """Step through `(t, value)` points in order; every transition."""
        out = []
        for t, value in points:
            tr = self.step(t, value)
            if tr is not None:
                out.append(tr)
        return out
