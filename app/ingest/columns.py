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

# Columns held as one Python list each, one entry per event (props is held apart: flat keys
# and values plus a per-event count, which is how an Arrow map array is laid out).
SCALAR_COLUMNS = tuple(name for name in ARROW_SCHEMA.names if name != "props")


class Columns:
    """A batch of events as parallel lists; `len()` is the number of events."""

    __slots__ = (*SCALAR_COLUMNS, "prop_keys", "prop_values", "prop_counts")

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
        self.prop_keys: list[str] = []
        self.prop_values: list[str] = []
        self.prop_counts: list[int] = []

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, other: Columns) -> None:
        """Append all of `other`'s events (list.extend: C speed, no per-event work)."""
        for name in self.__slots__:
            getattr(self, name).extend(getattr(other, name))

    def to_arrow(self) -> pa.Table:
        """One Arrow table with the exact types of `events_queue`."""
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
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
