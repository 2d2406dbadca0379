"""Grouped alerts: one alert over a group-by (per country, per path) is one state machine per
group value, at most `max_groups` of them. Shared by the live evaluator and the backtest.

Group values come from the rows of the alert's own query — compiled for the alert's org with
the tenant guard — so a group can only be a value of the org's own data. A new value gets a
machine when there is room; a value seen while `max_groups` machines exist takes the place of
one that is quiet (`ok`, `resolved` or `no_data`, no row for `IDLE_S`), else it is refused and
counted (`refused`). New values of one second are taken in sorted order, so live and backtest
pick the same ones. For a pure count, a known group without a row in a second is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .machine import FOREVER, Machine, Rule, Transition

IDLE_S = 600
QUIET = frozenset({"ok", "resolved", "no_data"})


@dataclass
class GroupedMachines:
    rule: Rule
    max_groups: int
    pure_count: bool
    machines: dict[str, Machine] = field(default_factory=dict)
    last_seen: dict[str, int] = field(default_factory=dict)
    cursor: int | None = None  # the last second evaluated (the alert's position)
    refused: set[str] = field(default_factory=set)

    @property
    def state(self) -> str:
        """The alert's summary: `firing` while any group fires, else `ok`."""
        return "firing" if any(m.state == "firing" for m in self.machines.values()) else "ok"

    def set_rule(self, rule: Rule) -> None:
        self.rule = rule
        for m in self.machines.values():
            m.rule = rule

    def resume(self, stored: list[tuple[str, str, int | None]]) -> None:
        """Continue from stored group states ((group, state, since)); firing and pending
        groups first when there are more than `max_groups`. Replays from the oldest."""
        order = {"firing": 0, "pending": 1}
        stored = sorted(stored, key=lambda g: (order.get(g[1], 2), g[0]))[: self.max_groups]
        self.machines = {g: Machine.resume(self.rule, s, since, None) for g, s, since in stored}
        cursors = [m.cursor for m in self.machines.values() if m.cursor is not None]
        if cursors:
            self.cursor = min(cursors + ([self.cursor] if self.cursor is not None else []))

    def skip_to(self, start: int) -> None:
        """Nothing before `start` can be read any more: continue from there."""
        self.cursor = start - 1
        for g, m in list(self.machines.items()):
            if m.cursor is None or m.cursor < start - 1:
                self.machines[g] = Machine.resume(self.rule, m.state, m.since, start)

    def step(self, t: int, values: dict[str, object]) -> list[tuple[str, Transition]]:
        """Evaluate second `t` for every group (`values`: group → value of this second)."""
        self.cursor = t
        machines, last_seen = self.machines, self.last_seen
        for g in values:
            last_seen[g] = t
        if not machines.keys() >= values.keys():  # new values (most seconds have none)
            for g in sorted(values):
                if g in machines:
                    continue
                if len(machines) >= self.max_groups and not self._evict(t):
                    self.refused.add(g)
                    continue
                machines[g] = Machine(self.rule, cursor=t - 1)
        out = []
        absent = 0.0 if self.pure_count else None  # a known group without a row this second
        for g, m in machines.items():
            if m.cursor is not None and m.cursor >= t:
                continue  # resumed past this second
            value = values.get(g, absent)
            tr = m.step(t, value)
            if tr is not None:
                out.append((g, tr))
        return out

    def steady_until(self, values: dict[str, object]) -> int:
        """After `step(cursor, values)`: the first second that must be stepped for real if
        every later second has the same `values` (`Machine.steady_until` over the groups);
        `cursor + 1` when a value has no machine (the next step tries to make room for it) or
        a machine is not at the cursor (resumed past it)."""
        c = self.cursor
        assert c is not None
        machines = self.machines
        if not machines.keys() >= values.keys():
            return c + 1
        until = FOREVER
        for m in machines.values():
            if m.cursor != c:
                return c + 1
            due = m.steady_until()
            if due < until:
                until = due
        return until

    def coast(self, t: int, values: dict[str, object]) -> None:
        """Advance to second `t` as `step` would over seconds with the same `values`, which
        `steady_until` said change nothing but run counters (and when each group was seen)."""
        if self.cursor is not None and t <= self.cursor:
            return
        self.cursor = t
        last_seen = self.last_seen
        for g in values:
            last_seen[g] = t
        for m in self.machines.values():
            m.coast(t)

    def _evict(self, t: int) -> bool:
        idle = [
            (self.last_seen.get(g, -1), g)
            for g, m in self.machines.items()
            if m.state in QUIET and self.last_seen.get(g, -1) < t - IDLE_S
        ]
        if not idle:
            return False
        del self.machines[min(idle)[1]]
        return True
