"""The per-alert state machine (`ok → pending → firing → resolved`, plus `no_data`), one second
at a time. One implementation is shared by the live evaluator, the `/test` endpoint and the
backtest, so all three agree by construction. The transitions, the no-data rule, the recovery
threshold (hysteresis) and keep-firing are in docs/alerts.md, sections "no_data", "The state
machine" and "Anti-flapping".

Each second is judged twice: does it *breach* (the firing condition), and is it *recovered*
(the resolving condition: not beyond the recovery threshold, or back inside the anomaly
band's recovery part)? Without a recovery threshold the two are each other's negation."""

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
#: `Machine.steady_until` of a machine that the same value never changes (a second no series
#: reaches).
FOREVER = 1 << 62


def clean(value: object) -> float | None:
    """A metric value as the machine sees it: a finite float, or None (no data)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


#: An anomaly alert's band for one second: (lower, upper, recovery lower, recovery upper).
Band = tuple[float, float, float, float]
DIRECTIONS = ("above", "below", "both")


@dataclass(frozen=True, slots=True)
class Rule:
    """What the machine needs of an alert definition (counts are in evaluation steps:
    seconds live, minutes in a coarse backtest).

    `comparator` is one of COMPARATORS, or "band" for an anomaly alert (the band comes with
    each second; `direction` says which side of it breaches). `recovery` is the recovery
    threshold (None: the firing threshold); `keep_n` the steps an alert keeps firing after it
    would have resolved."""

    comparator: str
    threshold: float
    for_n: int
    resolve_n: int
    recovery: float | None = None
    keep_n: int = 0
    direction: str = "both"
    # Looked up once, not every second (the evaluator steps ~16,000 machines a tick): the
    # comparator's function (None for "band": judge() decides) and the threshold a firing alert recovers at.
    compare: Callable[[float, float], bool] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    recovers_at: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compare", COMPARATORS.get(self.comparator))
        recovers_at = self.threshold if self.recovery is None else self.recovery
        object.__setattr__(self, "recovers_at", recovers_at)

    def breaches(self, value: float) -> bool:
        return COMPARATORS[self.comparator](value, self.threshold)

    def judge(self, value: float, band: Band | None = None) -> tuple[bool, bool]:
        """(breaching, recovered) for a value with data."""
        if self.comparator == "band":
            if band is None:
                raise ValueError("an anomaly rule needs a band for every second")
            lower, upper, rec_lower, rec_upper = band
            above, below = self.direction != "below", self.direction != "above"
            breach = (above and value > upper) or (below and value < lower)
            recovered = not ((above and value > rec_upper) or (below and value < rec_lower))
            return breach, recovered
        compare = COMPARATORS[self.comparator]
        breach = compare(value, self.threshold)
        recovery = self.threshold if self.recovery is None else self.recovery
        return breach, not compare(value, recovery)


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
    keep_run: int = 0  # seconds kept firing after the resolve condition was met
    band: Band | None = None


@dataclass(slots=True)
class Machine:
    rule: Rule
    state: str = "ok"
    since: int | None = None  # the second the current state was entered
    cursor: int | None = None  # the last second evaluated
    breach_run: int = 0
    clear_run: int = 0
    nodata_run: int = 0
    keep_run: int = 0
    keeping: bool = False  # firing, resolve condition met, within keep_n
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

    def step(self, t: int, value: object, band: Band | None = None) -> Transition | None:
        """Evaluate second `t` (must follow `cursor`); the transition it causes, if any.
        `band` is the anomaly band for `t` (anomaly rules; None there = no data)."""
        rule = self.rule
        kind = value.__class__  # the poller's values: clean() without its checks
        if kind is float:
            v = value if value - value == 0.0 else None  # type: ignore[operator]  # inf, nan
        elif kind is int:
            v = float(value)  # type: ignore[arg-type]
        else:
            v = clean(value)
        compare = rule.compare
        if v is not None and band is None and rule.comparator == "band":
            v = None  # no baseline for this second: it cannot be judged
        self.cursor = t
        self.value = v
        old = self.state
        new = old
        run = 0
        if v is None:
            # A gap breaks every run; it neither counts towards nor cancels keep-firing.
            self.breach_run = self.clear_run = 0
            self.nodata_run += 1
            if old == "pending":
                new = "ok"
            if new in ("ok", "resolved") and self.nodata_run >= rule.for_n:
                new = "no_data"
            breaching = None
        else:
            if compare is None:
                breach, recovered = rule.judge(v, band)
            else:  # rule.judge inlined; `recovered` only matters to a firing alert
                breach = compare(v, rule.threshold)
                recovered = old == "firing" and not breach and not compare(v, rule.recovers_at)
            self.nodata_run = 0
            breaching = breach
            if breach:
                self.clear_run = 0
                self.breach_run += 1
                self.keeping, self.keep_run = False, 0
                if old != "firing":
                    new = "firing" if self.breach_run >= rule.for_n else "pending"
                    run = self.breach_run
            else:
                self.breach_run = 0
                if old == "firing":
                    new, run = self._settle(recovered)
                elif old != "ok":
                    new = "ok"
                if old != "firing":
                    self.clear_run += 1
        if self.history is not None:
            self.history.append(
                Step(t, v, breaching, self.breach_run, self.clear_run, new, self.keep_run, band)
            )
        if new == old:
            return None
        self.state, self.since = new, t
        if new == "firing":
            self.clear_run = 0
        if new == "resolved":
            self.keeping, self.keep_run = False, 0
        return Transition(t, old, new, v, run)

    def steady_until(self) -> int:
        """After a step: the first second that must be stepped for real if every later second
        has the same value (and band) as the one at `cursor`. Before it, such a second changes
        nothing but one run counter, which `coast` advances in one go; `cursor + 1` when the
        next step can change more (a state, or the keep-firing flag). The live evaluator's
        steady-state skip (docs/alerts.md, "Costs")."""
        c, state, rule = self.cursor, self.state, self.rule
        assert c is not None
        if self.value is None:  # a gap: only `ok`/`resolved` count towards no_data
            if state == "no_data" or state == "firing":
                return FOREVER
            if state == "ok" or state == "resolved":
                return c + rule.for_n - self.nodata_run
            return c + 1
        if state == "ok":  # the value does not breach (else it would be pending or firing)
            return FOREVER
        if state == "pending":  # breaching: fires when the run reaches for_n
            return c + rule.for_n - self.breach_run
        if state == "firing":
            if self.breach_run:
                return FOREVER
            if self.keeping:  # resolves when the kept seconds reach keep_n
                return c + rule.keep_n - self.keep_run
            if self.clear_run:  # recovered: keep-firing starts when the run reaches resolve_n
                return c + rule.resolve_n - self.clear_run
            return FOREVER  # between the thresholds: not recovered, nothing counts
        return c + 1  # resolved with data goes back to ok

    def coast(self, t: int) -> None:
        """Advance to second `t` as `step` would over seconds with the last value, which
        `steady_until` said change nothing but a run counter (no history is recorded)."""
        k = t - self.cursor  # type: ignore[operator]
        if k <= 0:
            return
        self.cursor = t
        if self.value is None:
            self.nodata_run += k
        elif self.breach_run:  # pending or firing, breaching
            self.breach_run += k
        elif self.keeping:
            self.keep_run += k
        elif self.state != "firing" or self.clear_run:  # a firing alert between the
            self.clear_run += k  # thresholds keeps its clear run at 0

    def _settle(self, recovered: bool) -> tuple[str, int]:
        """A firing alert's non-breaching second: count towards resolving (and keep-firing);
        ("resolved", run) when it resolves, ("firing", 0) otherwise."""
        if self.keeping:
            self.keep_run += 1  # within keep-firing, any second with data that does not breach
        elif recovered:
            self.clear_run += 1
            if self.clear_run >= self.rule.resolve_n:
                self.keeping = True
        else:
            self.clear_run = 0  # between the thresholds: not recovered, the run restarts
        if self.keeping and self.keep_run >= self.rule.keep_n:
            return "resolved", self.clear_run + self.keep_run
        return "firing", 0

    def run(self, points: Iterable[tuple[int, object]]) -> list[Transition]:
        """Step through `(t, value)` points in order; every transition."""
        out = []
        for t, value in points:
            tr = self.step(t, value)
            if tr is not None:
                out.append(tr)
        return out
