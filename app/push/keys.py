"""Subscription keys: one compiled query (org included) that many viewers and alert rules share.

A key is compiled once with `granularity="1s"`; its SQL text does not depend on the time range
(times are bound parameters), so every tick, snapshot and resume re-binds `time_from`/`time_to`
on the same text and `run_compiled` re-verifies the tenant guard on it before it runs.

`key` = sha256 of (database, org_id, SQL text, non-time parameters): viewers of the same metric
with the same filters and group-by in the same org share one key; another org never does.
`shape` = the same without the org, for keys the poller may read with other orgs' keys of the
same shape in one fan-in statement (app/querybuilder/fanin.py); None for the others.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec

from app.querybuilder import CompiledQuery, compile_metric, parse_form, parse_metric
from app.querybuilder.batch import (
    LiveQuery,
    batchable,
    live_query,
    record_getter,
    records_as_dicts,
)
from app.querybuilder.fanin import fan_in_window_eligible, total_live_query

#: Parameters the planner derives from the time range; everything else identifies the query.
TIME_PARAMS = frozenset({"time_from", "time_to", "time_from_read"})


@dataclass(frozen=True)
class KeySpec:
    """A live query: compiled once, re-bound to a time range for each read."""

    key: str
    org_id: int
    compiled: CompiledQuery
    dims: tuple[str, ...]  # group-by column names (a row is identified by t + dims)
    outputs: tuple[str, ...]
    window_s: int = 0
    label: dict[str, Any] = field(default_factory=dict, compare=False)  # for logs/docs only
    # What it was compiled from, for batched polling (app/querybuilder/batch.py); None: the
    # key always runs its own statement.
    live: LiveQuery | None = field(default=None, compare=False)
    # Same text and values for another org ⇒ same shape (`shape_hash`); None: never fanned in.
    shape: str | None = field(default=None, compare=False)
    # "batch" (read with other shapes under `__k`) or "window" (its own fan-in statement).
    shape_kind: str = field(default="", compare=False)

    @cached_property
    def batchable(self) -> bool:
        """The poller may read this key in one statement with other keys of its org."""
        return batchable(self.live, self.compiled.plan)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.compiled.plan.columns

    def bind(self, time_from: int, time_to: int) -> CompiledQuery:
        """The same SQL over [time_from, time_to) (epoch seconds)."""
        params = dict(self.compiled.params)
        params["time_from"] = time_from
        params["time_to"] = time_to
        if "time_from_read" in params:
            params["time_from_read"] = max(time_from - (self.window_s - 1), 0)
        plan = msgspec.structs.replace(self.compiled.plan, time_from=time_from, time_to=time_to)
        return msgspec.structs.replace(self.compiled, params=params, plan=plan)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """A record's layout: `t`, the group-by columns, the outputs. The poller keeps a key's
        rows as records (tuples in this order); `rows_of` makes them the wire's row dicts."""
        return ("t", *self.dims, *self.outputs)

    @cached_property
    def key_width(self) -> int:
        """How many leading fields of a record identify its row: `t` and the group-by columns."""
        return 1 + len(self.dims)

    def records_of(self, result: Any) -> list[tuple[Any, ...]]:
        """A QueryResult of this key's own statement → its records (`names` order)."""
        index = {name: i for i, name in enumerate(result.columns)}
        getter = record_getter([index[name] for name in self.names])
        return [getter(row) for row in result.rows]

    def read_records(self, result: Any, lo: int, hi: int) -> list[tuple[Any, ...]]:
        """Its own statement's result over [lo, hi) as the key's readers take it (snapshots,
        alerts' gap reads): its records, without the fill of a grouped key with no data."""
        return self.without_empty_fill(self.records_of(result), lo, hi)

    def rows_of(self, records: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Records → row dicts keyed by `names` (the wire's and the alert evaluator's rows)."""
        return records_as_dicts(self.names, records)

    def wire_rows(self, records: list[tuple[Any, ...]]) -> list[Any]:
        """Records → what a delta's `rows` are encoded from: one struct a row whose JSON is
        the row object (`names` as keys, in order), built ~3× faster than a dict — a round at
        the seed's scale encodes tens of thousands. Dicts where names cannot be struct fields."""
        row = self._wire_row
        if row is None:
            return self.rows_of(records)
        return [row(*record) for record in records]

    @cached_property
    def _wire_row(self) -> type | None:
        fields = [(f"f{i}", object) for i in range(len(self.names))]
        try:
            return msgspec.defstruct(
                "LiveRow",
                fields,
                rename={f"f{i}": name for i, name in enumerate(self.names)},
                omit_defaults=False,
            )
        except (TypeError, ValueError):  # output names are identifiers; this is the net
            return None

    def without_empty_fill(
        self, records: list[tuple[Any, ...]], lo: int, hi: int
    ) -> list[tuple[Any, ...]]:
        """The key's records for [lo, hi) as its readers take them: [] when a grouped key had
        no data at all. Its statement still returns a row a second then (WITH FILL), every
        group-by column at its type's default — no group: neither a "" series for viewers nor
        a "" group for grouped alerts (where a `<` rule would see it fire)."""
        if not self.dims or len(records) != hi - lo:
            return records
        if all(value in _FILL_DEFAULTS for record in records for value in record[1:]):
            return []
        return records


#: The defaults WITH FILL gives a column (what an empty grouped result is made of).
_FILL_DEFAULTS = (0, None, "")


def shape_hash(database: str, sql: str, params: dict[str, Any]) -> str:
    """What two orgs' keys share when they read the same metric the same way."""
    stable = {k: v for k, v in params.items() if k not in TIME_PARAMS and k != "org_id"}
    blob = msgspec.json.encode(["shape", database, sql, sorted(stable.items())])
    return hashlib.sha256(blob).hexdigest()[:24]


def key_hash(database: str, org_id: int, sql: str, params: dict[str, Any]) -> str:
    stable = {k: v for k, v in params.items() if k not in TIME_PARAMS}
    blob = msgspec.json.encode([database, org_id, sql, sorted(stable.items())])
    return hashlib.sha256(blob).hexdigest()[:24]


def make_key(
    metric: Any,
    *,
    org_id: int,
    database: str,
    filters: list[dict[str, Any]] | None = None,
    group_by: list[str] | None = None,
    window_s: int = 0,
) -> KeySpec:
    """Compile `metric` (text, form dict or Metric) for live 1-second reads; MetricError if refused."""
    now = int(time.time())
    compiled = compile_metric(
        metric,
        org_id=org_id,
        database=database,
        time_from=now - 60,
        time_to=now + 1,
        granularity="1s",
        filters=filters or (),
        group_by=group_by,
        window_seconds=window_s,
    )
    if isinstance(metric, str):
        n_outputs = len(parse_metric(metric).outputs)
    elif isinstance(metric, dict):
        n_outputs = len(parse_form(metric).outputs)
    else:
        n_outputs = len(metric.outputs)
    columns = compiled.plan.columns
    outputs = columns[len(columns) - n_outputs :]
    dims = columns[1 : len(columns) - n_outputs]
    live = live_query(metric, filters=filters or (), group_by=group_by)
    shape_kind = ""
    if batchable(live, compiled.plan) and total_live_query(live):
        shape_kind = "batch"
    elif fan_in_window_eligible(live, compiled.plan):
        shape_kind = "window"
    return KeySpec(
        key=key_hash(database, org_id, compiled.sql, compiled.params),
        org_id=org_id,
        compiled=compiled,
        dims=tuple(dims),
        outputs=tuple(outputs),
        window_s=compiled.plan.window_s,
        label={"table": compiled.plan.table},
        live=live,
        shape=shape_hash(database, compiled.sql, compiled.params) if shape_kind else None,
        shape_kind=shape_kind,
    )
