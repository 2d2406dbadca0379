"""Events held column by column, the shape they are buffered in and inserted as.

The ingest handler appends each accepted event straight into these lists (no per-event
object survives the request), the writer concatenates submissions with `list.extend`, and a
flush turns the lists into one Arrow table whose types match `events_queue` exactly.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Arrow types of `events_queue`, column by column (see sql/migrations/clickhouse/0001_events.sql).
TIMESTAMP = pa.timestamp("ms", tz="UTC")
PROPS_TYPE = pa.map_(pa.string(), pa.string())
ARROW_SCHEMA = pa.schema(
    [
        ("org_id", pa.uint32()),
        ("ts", TIMESTAMP),
        ("event", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("value", pa.float64()),
        ("path", pa.string()),
        ("referrer", pa.string()),
        ("country", pa.string()),
        ("device", pa.string()),
        ("browser", pa.string()),
        ("os", pa.string()),
        ("props", PROPS_TYPE),
        ("received_at", TIMESTAMP),
    ]
)
# The same with the client event ids (sql/migrations/clickhouse/0006_event_id.sql): the shape
# of a batch in which some event has an id. Batches without ids leave the column out (it
# defaults to ''), so they cost nothing more and older WAL records read as they are.
ARROW_SCHEMA_WITH_ID = ARROW_SCHEMA.append(pa.field("event_id", pa.string()))

# Columns held as one Python list each, one entry per event (props is held apart: flat keys
# and values plus a per-event count, which is how an Arrow map array is laid out; event_id is
# held apart too: empty when no event of the batch has an id, so batches without ids cost
# nothing, and it never travels on the Kafka topic, whose wire format is these columns).
SCALAR_COLUMNS = tuple(name for name in ARROW_SCHEMA.names if name != "props")


def with_event_id(table: pa.Table) -> pa.Table:
    """`table` with an empty `event_id` column added if it has none (to concatenate it with
    tables that have ids)."""
    if "event_id" in table.column_names:
        return table
    return table.append_column("event_id", pa.array([""] * table.num_rows, pa.string()))


class Columns:
    """A batch of events as parallel lists; `len()` is the number of events."""

    __slots__ = (*SCALAR_COLUMNS, "event_id", "prop_keys", "prop_values", "prop_counts")

    def __init__(self) -> None:
        self.org_id: list[int] = []
        self.ts: list[int] = []  # epoch milliseconds
        self.event: list[str] = []
        self.user_id: list[str] = []
        self.session_id: list[str] = []
        self.value: list[float] = []
        self.path: list[str] = []
        self.referrer: list[str] = []
        self.country: list[str] = []
        self.device: list[str] = []
        self.browser: list[str] = []
        self.os: list[str] = []
        self.received_at: list[int] = []  # epoch milliseconds
        self.event_id: list[str] = []  # one per event ('' = none), or empty when none has one
        self.prop_keys: list[str] = []
        self.prop_values: list[str] = []
        self.prop_counts: list[int] = []

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, other: Columns) -> None:
        """Append all of `other`'s events (list.extend: C speed, no per-event work)."""
        if self.event_id or other.event_id:
            if not self.event_id:
                self.event_id = [""] * len(self)
            self.event_id.extend(other.event_id or [""] * len(other))
        for name in self.__slots__:
            if name != "event_id":
                getattr(self, name).extend(getattr(other, name))

    def take(self, indexes: list[int]) -> Columns:
        """The events at `indexes` (ascending), as new columns."""
        out = Columns()
        for name in SCALAR_COLUMNS:
            values = getattr(self, name)
            setattr(out, name, [values[i] for i in indexes])
        if self.event_id:
            out.event_id = [self.event_id[i] for i in indexes]
        starts = [0]
        for n in self.prop_counts:
            starts.append(starts[-1] + n)
        for i in indexes:
            lo, hi = starts[i], starts[i + 1]
            out.prop_keys.extend(self.prop_keys[lo:hi])
            out.prop_values.extend(self.prop_values[lo:hi])
            out.prop_counts.append(hi - lo)
        return out

    def to_arrow(self) -> pa.Table:
        """One Arrow table with the exact types of `events_queue` (`ARROW_SCHEMA`, or
        `ARROW_SCHEMA_WITH_ID` when some event has an id)."""
        offsets = pc.cumulative_sum(pa.array(self.prop_counts, pa.int32()))
        offsets = pa.concat_arrays([pa.array([0], pa.int32()), offsets])
        props = pa.MapArray.from_arrays(
            offsets,
            pa.array(self.prop_keys, pa.string()),
            pa.array(self.prop_values, pa.string()),
            type=PROPS_TYPE,
        )
        arrays = []
        for field in ARROW_SCHEMA:
            if field.name == "props":
                arrays.append(props)
            else:
                arrays.append(pa.array(getattr(self, field.name), field.type))
        if self.event_id:
            arrays.append(pa.array(self.event_id, pa.string()))
            return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA_WITH_ID)
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
